"""`molmo-edge train`: train or fine-tune a Molmo2 model with a named recipe.

    molmo-edge train --recipe tiny-synthetic --out runs/tiny
    molmo-edge train --recipe finetune --init-from CKPT --data my.jsonl --out runs/ft
    molmo-edge train --recipe lora --init-from CKPT --data my.jsonl --lora r=16 --out runs/lora
    torchrun --nproc-per-node 4 -m molmo_edge train --recipe finetune ... --out runs/ft   # FSDP2

Re-running the same command continues from the newest checkpoint in --out (--resume never to
start over). The recipe, the JSONL format and the outputs are described in docs/training.md.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="tiny-synthetic",
                        help="tiny-synthetic, finetune, lora, or a YAML recipe file (default tiny-synthetic)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, final model, metrics.jsonl")
    parser.add_argument("--init-from", metavar="CHECKPOINT", help="start from this checkpoint folder (HF layout)")
    parser.add_argument("--data", metavar="JSONL", help="train on this JSONL file (format: docs/training.md)")
    parser.add_argument("--on-error", choices=("skip", "raise"),
                        help="bad JSONL lines: skip them with a warning (default) or refuse the file")
    parser.add_argument("--epochs", type=int, help="passes over --data (default: loop until --steps)")
    parser.add_argument("--lora", nargs="?", const="r=16", metavar="r=16,alpha=32",
                        help="LoRA on the decoder's Linear layers, merged on save (default r=16)")
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--max-minutes", type=float, help="stop after this much wall time (a checkpoint is saved)")
    parser.add_argument("--batch-size", type=int, help="packed sequences per micro-batch per process")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers per process")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="default: auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change any recipe field, e.g. --set optim.llm.lr=2e-5 (repeatable)")
    parser.add_argument("--resume", default="auto",
                        help="auto: continue from the newest checkpoint in --out (default); never; or a step folder")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_recipe(args: argparse.Namespace):
    """The recipe named by --recipe with every flag applied (the flags win over --set)."""
    from molmo_edge.training.lora import parse_lora_arg
    from molmo_edge.training.recipes import JsonlData, apply_overrides, load_recipe

    recipe = apply_overrides(load_recipe(args.recipe), list(args.set))
    update: dict = {}
    model = recipe.model
    if args.init_from:
        model = model.model_copy(update={"init_from": args.init_from})
    data = recipe.data
    if args.data:
        keep = data.model_dump() if isinstance(data, JsonlData) else {}
        data = JsonlData(**{**keep, "kind": "jsonl", "path": args.data})
    if isinstance(data, JsonlData):
        changes = {k: v for k, v in (("on_error", args.on_error), ("epochs", args.epochs)) if v is not None}
        data = data.model_copy(update=changes)
    update.update(model=model, data=data)
    if args.lora:
        update["lora"] = parse_lora_arg(args.lora)
    for flag, field in (("steps", "steps"), ("max_minutes", "max_minutes"), ("batch_size", "batch_size"),
                        ("grad_accum", "grad_accum"), ("num_workers", "num_workers"), ("device", "device"),
                        ("precision", "precision")):
        value = getattr(args, flag)
        if value is not None:
            update[field] = value
    # Round-trip through validation so that flag values get the same checks as recipe files.
    return type(recipe).model_validate({**recipe.model_dump(), **{
        k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in update.items()}})


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from molmo_edge.errors import ConfigError
    from molmo_edge.training.recipes import recipe_json

    try:
        recipe = resolve_recipe(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    if args.print_recipe:
        print(recipe_json(recipe), end="")
        return 0
    from molmo_edge.training.trainer import train

    resume = {"auto": "auto", "never": "never"}.get(args.resume, args.resume)
    result = train(recipe, args.out, resume=resume, progress=not args.no_progress)
    if result.final_dir is not None:
        last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
        how = " (stopped by --max-minutes)" if result.stopped_by_budget else ""
        print(f"trained steps {result.start_step}..{result.steps_done}{how}; last loss {last}; "
              f"model saved to {result.final_dir}")
    return 0

"""The training loop: packed batches -> weighted loss -> AdamW step; checkpoints, logs, resume.

    from molmo_edge.training.recipes import load_recipe
    from molmo_edge.training.trainer import train
    result = train(load_recipe("tiny-synthetic"), "runs/tiny")

One optimizer step = `grad_accum` micro-batches of `batch_size` packed sequences on every rank.
All micro-batches of a step are fetched first, so that the loss normaliser (the step's global
token-weight sum / world size, token_weights.py) is known before the first backward.

Outputs in OUT/:
- `recipe.json`: the resolved recipe;
- `metrics.jsonl`: one line per logged step (step, loss, ce, lr per group, grad norm, tokens/s,
  examples/s, ...) plus `eval` lines from the eval hook;
- `checkpoints/step-N/`: loadable model folders with a `resume/` subfolder (checkpointing.py);
- `final/`: the model after the last step (or at the --max-minutes stop).

Resuming (`resume="auto"`, the default) continues from the newest OUT/checkpoints/step-N: model,
optimizer, LR schedule, RNG and the data stream's position, so a resumed run follows the same
trajectory as an uninterrupted one. Every data shard resumes exactly where it was; the order in
which the DataLoader interleaves its workers' batches is also the same when grad_accum is a
multiple of num_workers (always true with 0 or 1 worker), since a restarted DataLoader begins with
worker 0.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from molmo_edge.errors import CheckpointError, ConfigError
from molmo_edge.training import checkpointing as ckpt
from molmo_edge.training import distributed as dist_utils
from molmo_edge.training.build import build_model_and_processor, build_source
from molmo_edge.training.coordinate_prior import build_soft_targets
from molmo_edge.training.collate import PackedCollator, TrainingBatch
from molmo_edge.training.example_encoder import ExampleEncoder
from molmo_edge.training.lora import apply_lora
from molmo_edge.training.optim import build_optimizer, build_scheduler, current_lrs, split_extra_embedding_rows
from molmo_edge.training.packing import PackingDataset
from molmo_edge.training.recipes import Recipe, check_runnable, recipe_json
from molmo_edge.training.pointing_attention import PointingAttentionLoss
from molmo_edge.training.train_step import PackedLossModel, micro_batch_loss

log = logging.getLogger(__name__)

# eval_hook(model, step) -> metrics; `model` is a plain Molmo2ForConditionalGeneration with the
# current weights (LoRA merged), in eval mode, called on rank 0 only.
EvalHook = Callable[[torch.nn.Module, int], dict[str, float]]


def _single_threaded_worker(_worker_id: int) -> None:
    """DataLoader workers render scenes with OpenCV; its own thread pool, one per worker, would
    oversubscribe the cores N times over (torch already runs one thread in a worker)."""
    import cv2

    cv2.setNumThreads(1)


@dataclass
class TrainResult:
    out_dir: Path
    final_dir: Path | None
    steps_done: int
    start_step: int
    losses: list[float] = field(default_factory=list)  # loss of every step run in this call
    stopped_by_budget: bool = False


def resolve_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast dtype or None (fp32). "auto": bf16 on CUDA devices that support it; fp32 on
    CPU, where bf16 autocast measured slower for these model sizes (docs/training.md)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class _MetricsLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


class Trainer:
    """Owns the model, optimizer, data stream and the loop; `run()` trains to recipe.steps."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, eval_hook: EvalHook | None = None,
                 resume: str | Path | bool = "auto", progress: bool = True):
        check_runnable(recipe)
        self.recipe, self.out_dir, self.eval_hook, self.progress = recipe, Path(out_dir), eval_hook, progress
        self._default_hook_tried = eval_hook is not None
        self.ctx = dist_utils.setup(recipe.device)
        self.autocast = resolve_autocast(recipe.precision, self.ctx.device)
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "recipe.json").write_text(recipe_json(recipe), encoding="utf-8")
        self.resume_from = self._find_resume(resume)
        self.metrics = _MetricsLog(self.out_dir / "metrics.jsonl", self.ctx.is_main)
        if self.resume_from is None and self.ctx.is_main:
            self.metrics.path.unlink(missing_ok=True)  # a fresh run: no lines of an older one
        self._build()

    # ----- setup ------------------------------------------------------------------------------
    def _find_resume(self, resume: str | Path | bool) -> Path | None:
        if resume in (False, "never", None):
            if ckpt.latest_checkpoint(self.out_dir) is not None:
                raise ConfigError(f"{self.out_dir} already holds the checkpoints of a run; to start over use a "
                                  "new --out (or delete its checkpoints/ folder), or drop --resume never to continue")
            return None
        if resume in (True, "auto"):
            return ckpt.latest_checkpoint(self.out_dir)
        path = Path(resume)
        if not (path / ckpt.RESUME_DIR / ckpt.STATE_FILE).is_file():
            raise CheckpointError(f"cannot resume from {path}: no {ckpt.RESUME_DIR}/{ckpt.STATE_FILE} there")
        return path

    def _build(self) -> None:
        recipe, ctx = self.recipe, self.ctx
        # Everything random below (from-scratch init, LoRA's A matrices) follows the recipe's seed,
        # so two runs of one recipe start from the same weights.
        torch.manual_seed(recipe.seed)
        state = ckpt.read_resume_state(self.resume_from) if self.resume_from else None
        spec = recipe.model
        if state is not None and recipe.lora is None:
            # Full training: the step folder holds the exact (fp32) weights.
            spec = spec.model_copy(update={"init_from": str(self.resume_from), "processor": {}})
        model, processor = build_model_and_processor(spec, seed=recipe.seed, coordinates=recipe.coordinates)
        self.config, self.processor = model.config, processor
        self.soft_targets = build_soft_targets(recipe.coordinates, processor.tokenizer, self.config.text.vocab_size)
        self.pointing = (PointingAttentionLoss(recipe.attention, processor.tokenizer, self.config)
                         if recipe.attention.weight > 0 else None)
        if self.pointing is not None and ctx.distributed:
            raise ConfigError("attention supervision (attention.weight > 0) runs in one process only: it scores "
                              "a layer's attention after the forward pass, when FSDP has resharded the layer; "
                              "add --set attention.weight=0 for torchrun")
        if recipe.lora is not None:
            if not recipe.model.init_from:
                log.warning("LoRA on a randomly initialised model: only the adapters train")
            apply_lora(model, recipe.lora)
            if state is not None and state["adapter"] is not None:
                _load_adapter(model, state["adapter"])
        # The extra embedding rows learn with the connector: give them their own parameter.
        split_extra_embedding_rows(model, self.config.text.vocab_size)
        wrapper = PackedLossModel(model, always_run_vision=ctx.distributed).to(ctx.device)
        self.wrapper = dist_utils.shard_model(wrapper, ctx)
        self.optimizer = build_optimizer(self.wrapper, recipe.optim)
        self.scheduler = build_scheduler(self.optimizer, recipe.optim, recipe.steps)
        self.trainable = [p for p in self.wrapper.parameters() if p.requires_grad]

        encoder = ExampleEncoder(processor, recipe.weighting, max_tokens=recipe.packing.max_tokens)
        self.dataset = PackingDataset(build_source(recipe.data, processor), encoder, recipe.packing,
                                      rank=ctx.rank, world_size=ctx.world_size)
        self.n_shards = ctx.world_size * max(1, recipe.num_workers)
        self.data_states: dict[int, dict] = {}
        self.start_step = 0
        if state is not None:
            dist_utils.load_full_optimizer_state_dict(self.wrapper, self.optimizer, state["optimizer"], ctx)
            self.scheduler.load_state_dict(state["scheduler"])
            self.dataset.load_state(state["data"]["shards"], state["data"]["n_shards"])
            self.data_states = dict(state["data"]["shards"])
            torch.set_rng_state(state["rng"]["torch"])
            self.start_step = int(state["step"])
            log.info("resuming %s at step %d", self.resume_from, self.start_step)
        pad_id = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        self.loader = DataLoader(self.dataset, batch_size=recipe.batch_size, num_workers=recipe.num_workers,
                                 collate_fn=PackedCollator(pad_id), persistent_workers=False,
                                 worker_init_fn=_single_threaded_worker)

    # ----- the loop -----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        recipe, ctx = self.recipe, self.ctx
        result = TrainResult(out_dir=self.out_dir, final_dir=None, steps_done=self.start_step,
                             start_step=self.start_step)
        if self.start_step >= recipe.steps:
            log.info("nothing to do: already at step %d of %d (raise --steps to train further)",
                     self.start_step, recipe.steps)
            final = self.out_dir / "final"
            result.final_dir = final if (final / "config.json").is_file() else None
            return result
        batches = iter(self.loader)
        started = time.monotonic()
        bar = self._progress_bar()
        self.wrapper.train()
        step = self.start_step
        while step < recipe.steps:
            t0 = time.monotonic()
            micro = self._next_micro_batches(batches, step)
            data_s = time.monotonic() - t0  # time spent waiting for the DataLoader
            stats = self._optimizer_step(micro)
            step += 1
            dt = time.monotonic() - t0
            result.losses.append(stats["loss"])
            if not math.isfinite(stats["loss"]):
                raise ConfigError(f"the loss became {stats['loss']} at step {step}; lower the learning rate "
                                  "(or check the data) and resume from the last checkpoint")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}")
            if step % recipe.log_every == 0 or step == recipe.steps or step == self.start_step + 1:
                record = {"step": step, "tokens_per_s": stats["tokens"] / dt,
                          "examples_per_s": stats["examples"] / dt, "elapsed_s": time.monotonic() - started,
                          # data_wait_fraction near 1: the DataLoader starves the step (raise num_workers)
                          "data_wait_fraction": data_s / dt}
                record.update({k: stats[k] for k in ("loss", "ce", "lr", "grad_norm", "tokens", "loss_tokens",
                                                     "attention_loss") if k in stats})
                self.metrics.write(record)
            out_of_time = self._out_of_time(started)
            if step % recipe.save_every == 0 or out_of_time:
                self.save_checkpoint(step)
            if recipe.eval_every and step % recipe.eval_every == 0:
                self._evaluate(step)
            if out_of_time:
                result.stopped_by_budget = True
                log.info("stopping at step %d: the --max-minutes budget is spent", step)
                break
        if bar is not None:
            bar.close()
        result.steps_done = step
        result.final_dir = self.save_final()
        return result

    def _progress_bar(self):
        if not (self.progress and self.ctx.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.recipe.steps, initial=self.start_step, desc="train", unit="step")

    def _next_micro_batches(self, batches, step: int) -> list[TrainingBatch]:
        micro = []
        for _ in range(self.recipe.grad_accum):
            try:
                micro.append(next(batches))
            except StopIteration:
                break
        # Ranks decide together: one rank running out while the others wait in a collective
        # would hang the job instead of stopping it.
        short = dist_utils.all_reduce_sum(float(len(micro) < self.recipe.grad_accum), self.ctx)
        if short > 0:
            if step == 0:
                raise ConfigError("the data produced no (or too few) packed sequences for one step; "
                                  "training never silently trains on nothing")
            raise ConfigError(f"the data ran out at step {step} of {self.recipe.steps}: raise data.epochs "
                              "(or leave it unset to loop), or lower steps")
        for batch in micro:
            self.data_states.update(batch.data_states)
        return micro

    def _optimizer_step(self, micro: list[TrainingBatch]) -> dict[str, Any]:
        ctx = self.ctx
        local_weight = sum(float(b.loss_weights.sum()) for b in micro)
        global_weight = dist_utils.all_reduce_sum(local_weight, ctx)
        if global_weight <= 0:
            raise ConfigError("a training step has no loss tokens (every answer empty?)")
        normalizer = global_weight / ctx.world_size
        ce_sum = z_sum = 0.0
        attention_losses = []
        for batch in micro:
            # The attention loss is a per-micro-batch mean: 1/len(micro) makes it a per-step mean on this
            # rank, and the data-parallel gradient average makes it the mean over ranks.
            parts = micro_batch_loss(self.wrapper, batch, normalizer, self.recipe.weighting, ctx.device,
                                     self.autocast, soft_targets=self.soft_targets, pointing=self.pointing,
                                     attention_scale=1.0 / len(micro))
            parts.total.backward()
            ce_sum += float(parts.weighted_ce_sum)
            z_sum += float(parts.weighted_z_sum)
            if parts.attention_loss is not None:
                attention_losses.append(float(parts.attention_loss))
        grad_norm = self._clip()
        lrs = current_lrs(self.optimizer)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals = [dist_utils.all_reduce_sum(v, ctx) for v in (
            ce_sum, z_sum, sum(b.n_tokens for b in micro), sum(b.n_loss_tokens for b in micro),
            sum(b.n_examples for b in micro))]
        ce = totals[0] / global_weight
        loss = ce + self.recipe.weighting.z_loss_weight * totals[1] / global_weight
        metrics = {"loss": loss, "ce": ce, "lr": lrs, "grad_norm": grad_norm, "tokens": int(totals[2]),
                   "loss_tokens": int(totals[3]), "examples": int(totals[4])}
        if attention_losses:  # this rank's mean (a training aid's progress, not part of `loss`)
            metrics["attention_loss"] = sum(attention_losses) / len(attention_losses)
        return metrics

    def _clip(self) -> float:
        clip = self.recipe.optim.grad_clip_norm
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip if clip is not None else float("inf"))
        if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
            norm = norm.full_tensor()
        return float(norm)

    def _out_of_time(self, started: float) -> bool:
        budget = self.recipe.max_minutes
        if budget is None:
            return False
        over = 1.0 if (time.monotonic() - started) / 60.0 >= budget else 0.0
        # All ranks must stop at the same step: rank 0's clock decides.
        return dist_utils.broadcast_object(over, self.ctx) > 0

    # ----- saving -------------------------------------------------------------------------------
    def _plain_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(plain model state dict, training state dict) on rank 0; empty dicts elsewhere."""
        training_state = dist_utils.full_model_state_dict(self.wrapper, self.ctx)
        if not self.ctx.is_main:
            return {}, {}
        scaling = self.recipe.lora.scaling if self.recipe.lora is not None else None
        return ckpt.plain_state_dict(training_state, scaling), training_state

    def save_checkpoint(self, step: int) -> Path | None:
        """OUT/checkpoints/step-N: loadable weights + resume/ (all ranks must call this)."""
        plain, training_state = self._plain_state()
        optimizer_state = dist_utils.full_optimizer_state_dict(self.wrapper, self.optimizer, self.ctx)
        data_states = self._gather_data_states()
        folder = ckpt.step_folder(self.out_dir, step)
        if self.ctx.is_main:
            ckpt.save_model_folder(plain, self.config, folder, self.processor)
            adapter = ckpt.adapter_tensors(
                {k[len(ckpt.WRAPPER_PREFIX):]: v for k, v in training_state.items()}) if self.recipe.lora else None
            ckpt.write_resume_state(folder, step=step, optimizer_state=optimizer_state,
                                    scheduler_state=self.scheduler.state_dict(), data_states=data_states,
                                    n_shards=self.n_shards, recipe=self.recipe.model_dump(mode="json"),
                                    adapter=adapter)
            ckpt.prune_checkpoints(self.out_dir, self.recipe.keep_checkpoints)
            log.info("saved %s", folder)
        dist_utils.barrier(self.ctx)
        return folder if self.ctx.is_main else None

    def save_final(self) -> Path | None:
        plain, _ = self._plain_state()
        folder = self.out_dir / "final"
        if self.ctx.is_main:
            dtype = torch.bfloat16 if self.recipe.save_dtype == "bfloat16" else None
            ckpt.save_model_folder(plain, self.config, folder, self.processor, dtype=dtype)
        dist_utils.barrier(self.ctx)
        return folder if self.ctx.is_main else None

    def _gather_data_states(self) -> dict[int, dict]:
        if not self.ctx.distributed:
            return dict(self.data_states)
        gathered: list[dict[int, dict] | None] = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(gathered, self.data_states)
        merged: dict[int, dict] = {}
        for states in gathered:
            merged.update(states or {})
        return merged

    def _evaluate(self, step: int) -> None:
        """Rank 0 evaluates a plain copy of the current weights; the others wait.

        Without an eval_hook, the held-out loss of eval_hook.make_heldout_loss_hook is used (built
        on first use; skipped when the recipe has no held-out data).
        """
        if not self._default_hook_tried and self.ctx.is_main:
            from molmo_edge.training.eval_hook import make_heldout_loss_hook

            self._default_hook_tried = True
            self.eval_hook = make_heldout_loss_hook(self.recipe, self.processor)
        has_hook = dist_utils.broadcast_object(self.eval_hook is not None, self.ctx)
        if not has_hook:
            return
        plain, _ = self._plain_state()
        if self.ctx.is_main:
            from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration

            model = Molmo2ForConditionalGeneration(self.config)
            model.load_state_dict(plain)
            model.to(self.ctx.device).eval()
            with torch.no_grad():
                metrics = self.eval_hook(model, step)
            self.metrics.write({"step": step, "eval": metrics})
            log.info("eval at step %d: %s", step, metrics)
        dist_utils.barrier(self.ctx)

    def close(self) -> None:
        dist_utils.teardown(self.ctx)


def _load_adapter(model: torch.nn.Module, adapter: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [k for k in adapter if k not in params]
    if missing:
        raise CheckpointError(f"the saved LoRA adapter does not fit this model (e.g. {missing[:3]}); "
                              "resume with the recipe the run was started with")
    with torch.no_grad():
        for key, value in adapter.items():
            params[key].copy_(value)


def train(recipe: Recipe, out_dir: str | Path, eval_hook: EvalHook | None = None,
          resume: str | Path | bool = "auto", progress: bool = True) -> TrainResult:
    """Run a recipe to completion (or to its --max-minutes budget); see the module docstring."""
    trainer = Trainer(recipe, out_dir, eval_hook=eval_hook, resume=resume, progress=progress)
    try:
        return trainer.run()
    finally:
        trainer.close()

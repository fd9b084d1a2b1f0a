"""Load and save Molmo2 checkpoints in the Hugging Face layout (config.json + *.safetensors).

Loading accepts one file or shards with `model.safetensors.index.json`, in the native
transformers names or the original Ai2 hub names (see `weight_names.py`). Weights are read with
safetensors only: a folder that holds only pickle files (*.bin, *.pt, *.pth, *.ckpt) is refused,
never unpickled. The model is built on the meta device and the tensors are assigned directly in
the requested dtype/device, so an 8B checkpoint needs its own size in memory, not twice.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from molmo_edge.errors import CheckpointError
from molmo_edge.model.config import Molmo2Config
from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration
from molmo_edge.model.rope import RotaryEmbedding
from molmo_edge.model.weight_names import (NativeSource, hub_plan, is_hub_layout, native_to_hub, native_to_ours,
                                           ours_to_native)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    return _DTYPES[key]


# ----- loading ------------------------------------------------------------------------------
def load_checkpoint(folder: str | Path, dtype: torch.dtype | str | None = None,
                    device: torch.device | str | None = None) -> Molmo2ForConditionalGeneration:
    """Build `Molmo2ForConditionalGeneration` from a checkpoint folder, in eval mode.

    dtype: None = float32. device: None = cpu.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    config = Molmo2Config.from_pretrained(folder)
    target_dtype = resolve_dtype(dtype)
    target_device = torch.device(device) if device is not None else torch.device("cpu")

    files = weight_files(folder)
    handles = _open_all(files)
    names = list(handles)
    with torch.device("meta"):
        model = Molmo2ForConditionalGeneration(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}

    plan, unmapped = _native_plan(names, config)
    state: dict[str, torch.Tensor] = {}
    unexpected = list(unmapped)
    cache: dict[str, torch.Tensor] = {}
    n_built_vit = config.vision_blocks_to_run
    for native_name, source in plan.items():
        ours = native_to_ours(native_name)
        if ours is None or ours not in expected:
            if not _is_ignorable(native_name, ours, n_built_vit):
                unexpected.extend(source.sources)
            continue
        tensor = source.combine([_read(handles, cache, name) for name in source.sources])
        if tuple(tensor.shape) != expected[ours]:
            raise CheckpointError(
                f"tensor {native_name} has shape {tuple(tensor.shape)} in {folder} but config.json implies "
                f"{expected[ours]}; the weights and config.json do not belong to the same model"
            )
        state[ours] = tensor.to(dtype=target_dtype, device=target_device)
    missing = sorted(set(expected) - set(state))
    if missing or unexpected:
        raise CheckpointError(_key_report(folder, missing, sorted(set(unexpected))))
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.reset_inv_freq(target_device)
    return model.eval()


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder; CheckpointError when there are none."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            shard_names = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{index_path} is not a valid safetensors index ({exc}); re-download it") from None
        missing = [name for name in shard_names if not (folder / name).is_file()]
        if missing:
            raise CheckpointError(f"{index_path} lists shards that are not in {folder}: {', '.join(missing[:5])}; "
                                  "the download is incomplete")
        return [folder / name for name in shard_names]
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{folder} holds PyTorch pickle weights ({', '.join(pickles[:3])}); molmo-edge loads safetensors only "
            "and never unpickles files (unpickling can run arbitrary code). Convert them once on a trusted "
            "machine, e.g. `Molmo2ForConditionalGeneration.from_pretrained(folder).save_pretrained(out)` in "
            "transformers, which writes model.safetensors"
        )
    raise CheckpointError(f"{folder} has config.json but no weights (no *.safetensors); "
                          "download the model files or point to the right folder")


def _open_all(files: list[Path]) -> dict[str, Any]:
    handles: dict[str, Any] = {}
    for path in files:
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {path} as safetensors ({exc}); the file is damaged or not a "
                                  "safetensors file") from None
        for name in handle.keys():
            handles[name] = handle
    return handles


def _read(handles: dict[str, Any], cache: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    # Fused hub tensors are read by several targets (q, k, v); keep only the last one.
    if name not in cache:
        cache.clear()
        cache[name] = handles[name].get_tensor(name)
    return cache[name]


def _native_plan(names: list[str], config: Molmo2Config) -> tuple[dict[str, NativeSource], list[str]]:
    if is_hub_layout(names):
        return hub_plan(names, config)
    plan = {name: NativeSource((name,), lambda ts: ts[0]) for name in names}
    return plan, []


def _is_ignorable(native_name: str, ours: str | None, n_built_vit: int) -> bool:
    """Checkpoint tensors that are fine to skip: rotary caches (recomputed from the config) and
    ViT blocks after the deepest feature tap (present in some checkpoints, never run)."""
    if ".rotary_emb" in native_name and native_name.endswith("inv_freq"):
        return True
    if ours is None or not ours.startswith("vision.layers."):
        return False
    return int(ours.split(".")[2]) >= n_built_vit


def _key_report(folder: Path, missing: list[str], unexpected: list[str]) -> str:
    parts = [f"the weights in {folder} do not match its config.json"]
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(ours_to_native(n) for n in missing[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:4])})")
    return "; ".join(parts) + ". Use the config.json that came with these weights."


# ----- saving -------------------------------------------------------------------------------
def save_checkpoint(model: Molmo2ForConditionalGeneration, folder: str | Path, tokenizer: Any = None,
                    tokenizer_file: str | Path | None = None, layout: str = "native",
                    max_shard_bytes: int = 5 * 1024**3) -> Path:
    """Write config.json (native layout), safetensors weights and tokenizer files to `folder`.

    tokenizer: an object with `.save(path)` (molmo_edge's Tokenizer) or a path to tokenizer.json /
        a folder of tokenizer files. tokenizer_file: same as a path given as `tokenizer`.
    layout: "native" (transformers names) or "hub" (original Ai2 names, fused tensors).
    Weights over `max_shard_bytes` are split into shards with model.safetensors.index.json.
    transformers' `Molmo2ForConditionalGeneration.from_pretrained(folder)` loads the result.
    """
    if layout not in ("native", "hub"):
        raise ValueError(f"layout must be 'native' or 'hub', got {layout!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    (folder / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n", encoding="utf-8")
    _write_generation_config(folder, config)

    state = {ours_to_native(name): t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    if layout == "hub":
        state = {name: t.contiguous() for name, t in native_to_hub(state, config).items()}
    for stale in list(folder.glob("*.safetensors")) + [folder / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    _write_shards(folder, state, max_shard_bytes)

    for source in (tokenizer, tokenizer_file):
        if source is not None:
            _copy_tokenizer(source, folder)
    return folder


def _write_generation_config(folder: Path, config: Molmo2Config) -> None:
    tokens = {k: getattr(config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
              if getattr(config, k) is not None}
    path = folder / "generation_config.json"
    if tokens:
        path.write_text(json.dumps(tokens, indent=2) + "\n", encoding="utf-8")
    else:
        path.unlink(missing_ok=True)


def _write_shards(folder: Path, state: dict[str, torch.Tensor], max_shard_bytes: int) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        tensor = state[name]
        n_bytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + n_bytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += n_bytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / SINGLE_FILE), metadata=metadata)
        return
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(shards, start=1):
        file_name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file_name), metadata=metadata)
        for name, tensor in shard.items():
            weight_map[name] = file_name
            total += tensor.numel() * tensor.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _copy_tokenizer(source: Any, folder: Path) -> None:
    if hasattr(source, "save") and not isinstance(source, (str, Path)):
        source.save(str(folder / "tokenizer.json"))
        return
    path = Path(source)
    if path.is_dir():
        copied = _copy_files((path / name for name in TOKENIZER_FILES), folder)
        if not copied:
            raise CheckpointError(f"{path} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)")
    elif path.is_file():
        shutil.copyfile(path, folder / ("tokenizer.json" if path.suffix == ".json" and "config" not in path.name
                                        else path.name))
    else:
        raise CheckpointError(f"tokenizer file {path} does not exist")


def _copy_files(paths: Iterable[Path], folder: Path) -> int:
    copied = 0
    for path in paths:
        if path.is_file() and path.resolve() != (folder / path.name).resolve():
            shutil.copyfile(path, folder / path.name)
            copied += 1
        elif path.is_file():
            copied += 1
    return copied

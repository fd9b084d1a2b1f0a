"""From a path to a running model: checkpoint folder -> torch, bundle folder -> ONNX Runtime / TensorRT.

    backend = load_backend()                                   # the shipped model, torch
    backend = load_backend("ckpt/", device="cuda", quantization="nf4")
    backend = load_backend("bundle/")                           # onnx, or tensorrt if it has engines
    model = load_model("ckpt/")                                 # molmo_edge.load_model

What a folder is:
* a bundle: it has `manifest.json` (written by `molmo-edge export`; checked by `open_bundle`)
* a checkpoint: it has `config.json` (Hugging Face Molmo2 layout, safetensors weights)
Anything else is a `ModelNotFoundError` that says what was expected.

The ONNX and TensorRT backends and `molmo_edge.export` are imported only when a bundle is loaded,
so the torch path never needs onnxruntime or TensorRT installed.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from molmo_edge.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from molmo_edge.engine.backend import Backend

log = logging.getLogger(__name__)

BackendChoice = Literal["auto", "torch", "onnx", "tensorrt"]
BACKEND_CHOICES = ("auto", "torch", "onnx", "tensorrt")
QUANTIZATION_CHOICES = ("int8", "nf4")
ModelKind = Literal["checkpoint", "bundle"]

MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"

# backend name -> (module, class) of the bundle backends (written against backend.py)
_BUNDLE_BACKENDS = {
    "onnx": ("molmo_edge.engine.onnx_backend", "OnnxBackend"),
    "tensorrt": ("molmo_edge.engine.tensorrt_backend", "TensorRTBackend"),
}
_INSTALL_HINT = {"onnx": 'pip install "molmo-edge[onnx]" (or [gpu] for CUDA)',
                 "tensorrt": "install TensorRT 10 for your CUDA version (pip install tensorrt)"}


def resolve_model_path(path: str | Path | None) -> tuple[Path, ModelKind]:
    """The model folder and what it holds; None = the shipped model. ModelNotFoundError otherwise."""
    from molmo_edge import ModelNotFoundError, default_model_path

    folder = default_model_path() if path is None else Path(path).expanduser()
    if not folder.exists():
        raise ModelNotFoundError(f"model path {folder} does not exist; pass a checkpoint folder (config.json + "
                                 "*.safetensors) or a bundle folder from `molmo-edge export`")
    if not folder.is_dir():
        hint = f" (did you mean its folder {folder.parent}?)" if folder.name in (CONFIG_FILE, MANIFEST_FILE) or \
            folder.suffix == ".safetensors" else ""
        raise ModelNotFoundError(f"model path {folder} is a file; pass the folder that holds the model{hint}")
    if (folder / MANIFEST_FILE).is_file():
        return folder, "bundle"
    if (folder / CONFIG_FILE).is_file():
        return folder, "checkpoint"
    raise ModelNotFoundError(f"{folder} is neither a checkpoint folder (no {CONFIG_FILE}) nor a bundle folder (no "
                             f"{MANIFEST_FILE}); pass the folder that `molmo-edge train` or `molmo-edge export` "
                             "wrote, or a downloaded Molmo2 checkpoint")


def tensorrt_available() -> bool:
    """Whether the TensorRT Python package can be imported here (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def _bundle_backend_class(name: str):
    module_name, class_name = _BUNDLE_BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the {name} backend cannot be loaded here ({exc}); {_INSTALL_HINT[name]}") from None
    backend_class = getattr(module, class_name, None)
    if backend_class is None:
        raise BackendUnavailableError(f"{module_name} has no {class_name}; this molmo-edge install is incomplete")
    return backend_class


def _choose_bundle_backend(folder: Path, requested: str, device: Any) -> str:
    """'onnx' or 'tensorrt' for a bundle: auto takes TensorRT when the bundle has engines and TensorRT is here."""
    if requested in _BUNDLE_BACKENDS:
        return requested
    from molmo_edge.export.bundle import open_bundle

    bundle = open_bundle(folder, verify=False)  # cheap: manifest, presence and sizes; the backend verifies
    on_cpu = device is not None and str(device).startswith("cpu")
    if bundle.manifest.engines and tensorrt_available() and not on_cpu:
        return "tensorrt"
    if bundle.manifest.engines and not on_cpu:
        log.info("%s has TensorRT engines but TensorRT is not installed; using ONNX Runtime", folder)
    return "onnx"


def load_backend(path: str | Path | None = None, backend: BackendChoice = "auto",
                 device: "torch.device | str | None" = None, dtype: "torch.dtype | str | None" = None,
                 quantization: str | None = None) -> "Backend":
    """Load a model for inference (see the module docstring).

    backend: "auto" (checkpoint -> torch; bundle -> tensorrt when it has engines and TensorRT is
        installed, else onnx), or force one. device: None = CUDA when available, else CPU.
    dtype (torch only): None = float32 on CPU, bfloat16/float16 on CUDA. A bundle's precision is fixed
        at export. quantization (torch only): None, "int8" or "nf4" (bitsandbytes).
    """
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKEND_CHOICES)}")
    if isinstance(quantization, str) and quantization.lower() in ("", "none"):
        quantization = None
    if quantization is not None and quantization not in QUANTIZATION_CHOICES:
        raise ConfigError(f"unknown quantization {quantization!r}; use one of {', '.join(QUANTIZATION_CHOICES)}")
    folder, kind = resolve_model_path(path)

    if kind == "checkpoint":
        if backend not in ("auto", "torch"):
            raise ConfigError(f"{folder} is a checkpoint folder; the {backend} backend runs exported bundles. "
                              f"Export it first (`molmo-edge export --model {folder} --out BUNDLE`) or use "
                              "--backend torch")
        from molmo_edge.engine.torch_backend import TorchBackend

        return TorchBackend.from_checkpoint(folder, device=device, dtype=dtype, quantization=quantization)

    if backend == "torch":
        raise ConfigError(f"{folder} is an exported bundle; the torch backend needs a checkpoint folder. Use "
                          "--backend onnx / tensorrt / auto, or pass the checkpoint the bundle was exported from")
    if quantization is not None:
        raise ConfigError(f"{folder} is an exported bundle: its precision was fixed at export, so quantization="
                          f"{quantization!r} does not apply (quantise with `molmo-edge export --precision ...`)")
    if dtype is not None:
        raise ConfigError(f"{folder} is an exported bundle: its precision was fixed at export, so dtype={dtype!r} "
                          "does not apply")
    name = _choose_bundle_backend(folder, backend, device)
    return _bundle_backend_class(name).from_bundle(folder, device=device)


def load_model(path: str | Path | None = None, dtype: "torch.dtype | str | None" = None,
               device: "torch.device | str | None" = None) -> Any:
    """The model object behind `molmo_edge.load_model`: a checkpoint gives the torch
    `Molmo2ForConditionalGeneration` (dtype None = float32, device None = CPU); a bundle gives the
    export package's bundle model (`molmo_edge.engine.onnx_backend.load_bundle_model`)."""
    folder, kind = resolve_model_path(path)
    if kind == "checkpoint":
        from molmo_edge.model.checkpoint import load_checkpoint

        return load_checkpoint(folder, dtype=dtype, device=device)
    try:
        from molmo_edge.engine.onnx_backend import load_bundle_model
    except ImportError as exc:
        raise BackendUnavailableError(f"cannot load the bundle {folder} here ({exc}); "
                                      f"{_INSTALL_HINT['onnx']}") from None
    return load_bundle_model(folder, dtype=dtype, device=device)


__all__ = ["BACKEND_CHOICES", "BackendChoice", "QUANTIZATION_CHOICES", "load_backend", "load_model",
           "resolve_model_path", "tensorrt_available"]

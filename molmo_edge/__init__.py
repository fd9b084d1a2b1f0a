"""molmo-edge: Molmo2 pointing, counting and tracking on robots and edge GPUs.

The top-level names are imported lazily so that `import molmo_edge` stays cheap (no torch import)
for tools such as the ZeroMQ listener.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Folder of the small model shipped inside the package (trained with `molmo-edge train --recipe
# tiny-synthetic`, see molmo_edge/assets/tiny-synthetic/MODEL_CARD.md).
_SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "tiny-synthetic"

if TYPE_CHECKING:  # pragma: no cover
    import torch


from molmo_edge.errors import MolmoEdgeError


class ModelNotFoundError(MolmoEdgeError, FileNotFoundError):
    """A model path that is neither a checkpoint folder nor a bundle folder."""


def default_model_path() -> Path:
    """Folder of the small model shipped in the package (the default for every CLI verb)."""
    if not (_SHIPPED_MODEL_DIR / "config.json").is_file():
        raise ModelNotFoundError(
            f"the shipped model is missing from {_SHIPPED_MODEL_DIR}; reinstall molmo-edge or pass --model"
        )
    return _SHIPPED_MODEL_DIR


def load_model(path: str | Path | None = None, dtype: "torch.dtype | str | None" = None,
               device: "torch.device | str | None" = None) -> Any:
    """Load a model from a checkpoint folder (Hugging Face Molmo2 layout) or an exported bundle.

    With no path, the shipped small model is loaded. A checkpoint folder gives the PyTorch
    `Molmo2ForConditionalGeneration`; a bundle folder (with `manifest.json`) gives the ONNX /
    TensorRT model of `molmo_edge.engine`. Both accept the reference's keyword tensors and return
    an object with `.logits`.
    """
    from molmo_edge.engine.loading import load_model as _load

    return _load(path if path is not None else default_model_path(), dtype=dtype, device=device)


__all__ = ["__version__", "default_model_path", "load_model", "ModelNotFoundError", "MolmoEdgeError"]

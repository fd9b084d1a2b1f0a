"""molmo_edge.engine: one Backend interface, its backends, the generation loop and the Engine.

    from molmo_edge.engine import Engine, load_backend
    engine = Engine(load_backend("path/to/checkpoint_or_bundle"))
    answer = engine.ask_image(image_rgb, "Point to the red circle")

Modules: `backend` (the interface every backend implements), `generation` (the one generation
loop), `engine` (images / video / cached frame features -> Answer), `torch_backend`,
`onnx_backend`, `tensorrt_backend`, `quantization` (bitsandbytes int8 / NF4), `loading`
(path -> backend), `image_file` (read an image file as RGB).

Names are imported on first use, so importing one backend module does not import the others.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Backend": "backend", "BackendState": "backend",
    "GenerationOptions": "generation", "GenerationResult": "generation", "generate": "generation",
    "Answer": "engine", "Engine": "engine", "FrameFeatures": "engine",
    "TorchBackend": "torch_backend",
    "OnnxBackend": "onnx_backend", "OnnxOptions": "onnx_backend", "load_bundle_model": "onnx_backend",
    "TensorRTBackend": "tensorrt_backend",
    "QuantizationConfig": "quantization", "QuantizationReport": "quantization", "quantize_model": "quantization",
    "load_backend": "loading", "load_model": "loading",
    "read_image_rgb": "image_file",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'molmo_edge.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"molmo_edge.engine.{module}"), name)


__all__ = sorted(_EXPORTS)

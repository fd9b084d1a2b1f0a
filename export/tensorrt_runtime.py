"""Load a serialized TensorRT engine and run it on torch CUDA tensors (TensorRT 10 tensor API).

The TensorRT backend of `molmo_edge.engine` builds on this: inputs and outputs are torch CUDA
tensors whose memory TensorRT reads and writes directly (`set_tensor_address`), and execution is
queued on a CUDA stream (`execute_async_v3`), so no host copies happen between stages.

Engines only run with the TensorRT version and GPU architecture they were built for;
`check_engine_compatible` turns that into a clear "rebuild it here" error before TensorRT would
fail with a terse deserialisation message.
"""
from __future__ import annotations

import logging
from pathlib import Path

from molmo_edge.errors import BackendUnavailableError, BundleError, ConfigError, MolmoEdgeError
from molmo_edge.export.manifest import EngineProfile, EngineSpec, ShapeRange
from molmo_edge.export.tensorrt import import_tensorrt, tensorrt_version_tuple

log = logging.getLogger(__name__)

# trt.DataType member name -> torch dtype name.
TRT_TO_TORCH_DTYPE = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
    "INT32": "int32", "INT64": "int64", "BOOL": "bool",
}


def torch_dtype_for(trt_dtype_name: str):
    import torch

    try:
        return getattr(torch, TRT_TO_TORCH_DTYPE[trt_dtype_name])
    except KeyError:
        raise MolmoEdgeError(f"engine tensor type {trt_dtype_name} has no torch equivalent here") from None


def check_engine_compatible(spec: EngineSpec, tensorrt_version: str, compute_capability: str) -> None:
    """Raise BundleError unless the engine was built for this TensorRT (major.minor.patch) and GPU architecture."""
    if tensorrt_version_tuple(spec.tensorrt_version) != tensorrt_version_tuple(tensorrt_version):
        raise BundleError(
            f"engine {spec.file} was built with TensorRT {spec.tensorrt_version}, this machine has {tensorrt_version}; "
            "rebuild it here with `molmo-edge export --tensorrt`, or use the ONNX Runtime backend"
        )
    if spec.compute_capability != compute_capability:
        raise BundleError(
            f"engine {spec.file} was built for {spec.device_name} (compute capability {spec.compute_capability}), this "
            f"GPU has compute capability {compute_capability}; rebuild it here with `molmo-edge export --tensorrt`"
        )


def select_profile(profiles: list[EngineProfile], shapes: dict[str, tuple[int, ...]]) -> int:
    """Index of the first profile whose ranges contain every given input shape.

    Inputs a profile does not mention are static and not checked here. ConfigError (listing the
    ranges) when no profile fits: the engine must be rebuilt with wider profiles.
    """
    if not profiles:
        return 0
    for index, profile in enumerate(profiles):
        if all(name not in profile.shapes or profile.shapes[name].contains(tuple(shape))
               for name, shape in shapes.items()):
            return index
    ranges = "; ".join(
        f"profile {i}: " + ", ".join(f"{n} {r.min}..{r.max}" for n, r in p.shapes.items())
        for i, p in enumerate(profiles)
    )
    given = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
    raise ConfigError(f"input shapes {given} fit no optimisation profile of the engine ({ranges}); "
                      "rebuild the engine with a profile that covers them")


def _profiles_from_engine(engine, input_names: list[str]) -> list[EngineProfile]:
    """The optimisation profiles stored in a deserialized engine."""
    profiles = []
    for index in range(engine.num_optimization_profiles):
        shapes = {}
        for name in input_names:
            lo, mid, hi = engine.get_tensor_profile_shape(name, index)
            if list(lo) != list(hi):
                shapes[name] = ShapeRange(min=list(lo), opt=list(mid), max=list(hi))
        profiles.append(EngineProfile(shapes=shapes))
    return profiles


class TensorRTEngine:
    """A deserialized engine + execution context + CUDA stream, with an explicit lifecycle.

    `run({name: tensor})` sets the input shapes, binds input and freshly allocated output buffers
    by address, enqueues the engine and waits for it. Use as a context manager or call `close()`.
    """

    def __init__(self, engine_path: str | Path, spec: EngineSpec | None = None, device: str = "cuda"):
        import torch

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailableError("the TensorRT backend needs a CUDA GPU, and torch.cuda reports none")
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"TensorRT engines run on CUDA devices, not {device!r}")
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        if spec is not None:
            check_engine_compatible(spec, trt.__version__, f"{major}.{minor}")
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise BundleError(f"TensorRT engine {engine_path} not found")

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BundleError(f"TensorRT could not load {engine_path} (built by another TensorRT version or for "
                              "another GPU?); rebuild it with `molmo-edge export --tensorrt`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.dtypes = {n: torch_dtype_for(self.engine.get_tensor_dtype(n).name) for n in names}
        self.profiles = spec.profiles if spec is not None and spec.profiles else \
            _profiles_from_engine(self.engine, self.input_names)
        self._active_profile = 0
        self.stream = torch.cuda.Stream(device=self.device)

    def run(self, inputs: dict) -> dict:
        """Run once. `inputs`: name -> torch tensor (moved to the engine's device if needed). Returns outputs."""
        import torch

        if self.context is None:
            raise MolmoEdgeError("this TensorRT engine was closed")
        missing = [n for n in self.input_names if n not in inputs]
        extra = [n for n in inputs if n not in self.input_names]
        if missing or extra:
            raise ConfigError(f"engine inputs are {self.input_names}; missing {missing}, unexpected {extra}")
        bound = {}
        for name in self.input_names:
            tensor = inputs[name]
            if tensor.dtype != self.dtypes[name]:
                raise ConfigError(f"input {name!r} must be {self.dtypes[name]}, got {tensor.dtype}")
            bound[name] = tensor.to(self.device, non_blocking=True).contiguous()

        profile = select_profile(self.profiles, {n: tuple(t.shape) for n, t in bound.items()})
        # Inputs were produced on the caller's stream; ours must not start before they are ready.
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        if profile != self._active_profile:
            self.context.set_optimization_profile_async(profile, self.stream.cuda_stream)
            self._active_profile = profile
        for name, tensor in bound.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise MolmoEdgeError(
                    f"output {name!r} has a data-dependent shape {shape}; such engines are not supported"
                )
            outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise MolmoEdgeError("TensorRT failed to enqueue the engine (see the TensorRT log)")
        self.stream.synchronize()
        return outputs

    def close(self) -> None:
        """Free the engine's GPU memory (context first: it references the engine)."""
        self.context = None
        self.engine = None
        self._runtime = None

    def __enter__(self) -> "TensorRTEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Build TensorRT engines from ONNX graphs (TensorRT 10.x Python API; 11.x strongly typed builds).

An engine is compiled for one GPU model and one TensorRT version, so engines are built on the
target device (`molmo-edge export --tensorrt` on the Jetson) from the portable ONNX bundle.

Precision, and why the build differs between TensorRT 10 and 11:
- TensorRT 10 ("weakly typed" networks) picks kernels per layer; `BuilderFlag.FP16` / `INT8`
  allow it to use those types. INT8 needs scales: either the graph already carries them as
  QuantizeLinear/DequantizeLinear pairs (explicit quantisation, from
  `quantize.quantize_static_int8(..., for_tensorrt=True)`, the recommended path), or an entropy
  calibrator measures them during the build (implicit quantisation, deprecated since 10.1).
- A graph already converted by `quantize.to_fp16` is built strongly typed (on 10.x too), so the
  nodes it deliberately keeps in fp32 (norm statistics) stay fp32.
- TensorRT 11 removes those flags and calibrators: networks are strongly typed and run in the
  types the ONNX graph has. So an fp16 engine needs an fp16 graph (`quantize.to_fp16`) and an
  int8 engine a Q/DQ graph. `plan_build` encodes these rules and explains violations.

Only `build_engine` needs TensorRT; everything it validates first (arguments, profiles, the
build plan) is plain Python and testable anywhere.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from molmo_edge.errors import BackendUnavailableError, ConfigError, MolmoEdgeError
from molmo_edge.export.manifest import EngineProfile, EngineSpec, GraphSpec, ShapeRange

log = logging.getLogger(__name__)

EngineBuildPrecision = Literal["fp32", "fp16", "int8"]
# Scratch memory TensorRT may use for tactic selection. 2 GiB leaves room for the weights on an
# 8 GB Orin Nano (CPU and GPU share that memory); raise it on bigger devices for faster tactics.
DEFAULT_WORKSPACE_BYTES = 2 << 30

_INSTALL_HINT = (
    "TensorRT is not installed: on a desktop GPU `pip install tensorrt` (NVIDIA's wheels on PyPI / "
    "pypi.nvidia.com, matching your CUDA), on a Jetson use the TensorRT that JetPack ships "
    "(python3-libnvinfer). Without it, use the ONNX Runtime backend (`--backend onnx`)."
)


def import_tensorrt():
    """The `tensorrt` module, or BackendUnavailableError saying how to install it."""
    try:
        import tensorrt  # noqa: PLC0415 - optional dependency, imported only when used
    except ImportError as exc:
        raise BackendUnavailableError(f"{_INSTALL_HINT} ({exc})") from None
    return tensorrt


def tensorrt_version_tuple(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version string such as "10.3.0.30"."""
    parts = version.split(".")
    try:
        numbers = [int(p) for p in parts[:3]]
    except ValueError:
        raise ConfigError(f"not a TensorRT version: {version!r}") from None
    return tuple(numbers + [0] * (3 - len(numbers)))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- profiles

def profile_from_dims(inputs: list[Any], dim_ranges: dict[str, tuple[int, int, int]]) -> EngineProfile:
    """An optimisation profile from the (min, opt, max) size of every symbolic dimension.

    `inputs` are TensorSpecs (a GraphSpec's inputs). Static dimensions are fixed; each symbolic
    dimension (e.g. "n_crops", "seq", "past_seq") takes its range from `dim_ranges`, and the same
    name gets the same range in every input, which keeps related inputs consistent.
    Example for the decoder step: {"batch": (1, 1, 1), "past_seq": (1, 512, 4096)}.
    """
    for dim_name, values in dim_ranges.items():
        if len(values) != 3 or not (0 <= values[0] <= values[1] <= values[2]):
            raise ConfigError(f"dimension {dim_name!r}: need (min, opt, max) with 0 <= min <= opt <= max, got {values}")
    shapes: dict[str, ShapeRange] = {}
    for spec in inputs:
        if all(isinstance(dim, int) for dim in spec.shape):
            continue  # static inputs need no range
        ranges = []
        for dim in spec.shape:
            if isinstance(dim, int):
                ranges.append((dim, dim, dim))
            elif dim in dim_ranges:
                ranges.append(tuple(dim_ranges[dim]))
            else:
                raise ConfigError(
                    f"input {spec.name!r} has the dynamic dimension {dim!r}; give its (min, opt, max) sizes "
                    f"(known: {sorted(dim_ranges) or 'none'})"
                )
        lo, mid, hi = (list(column) for column in zip(*ranges))
        shapes[spec.name] = ShapeRange(min=lo, opt=mid, max=hi)
    return EngineProfile(shapes=shapes)


def check_profiles(graph: GraphSpec, profiles: list[EngineProfile]) -> None:
    """Each profile must give every dynamic input a range whose rank and static sizes match the graph."""
    by_name = {spec.name: spec for spec in graph.inputs}
    dynamic = [spec.name for spec in graph.inputs if any(isinstance(d, str) for d in spec.shape)]
    if dynamic and not profiles:
        raise ConfigError(
            f"the graph {graph.file} has dynamic inputs {dynamic}: give at least one optimisation profile"
        )
    for index, profile in enumerate(profiles):
        for name, shape_range in profile.shapes.items():
            if name not in by_name:
                raise ConfigError(
                    f"profile {index}: {name!r} is not an input of {graph.file} (inputs: {sorted(by_name)})"
                )
            spec = by_name[name]
            if len(shape_range.min) != len(spec.shape):
                raise ConfigError(f"profile {index}: input {name!r} has rank {len(spec.shape)}, the range has "
                                  f"rank {len(shape_range.min)}")
            for axis, dim in enumerate(spec.shape):
                if isinstance(dim, int) and not (shape_range.min[axis] == shape_range.max[axis] == dim):
                    raise ConfigError(f"profile {index}: input {name!r} axis {axis} is fixed at {dim} in the graph, "
                                      f"the range says {shape_range.min[axis]}..{shape_range.max[axis]}")
        missing = [name for name in dynamic if name not in profile.shapes]
        if missing:
            raise ConfigError(f"profile {index} gives no shape range for the dynamic inputs {missing}")


# ----------------------------------------------------------------------------- build plan

@dataclass(frozen=True)
class BuildPlan:
    """How to configure the TensorRT builder for one precision request."""

    strongly_typed: bool
    builder_flags: tuple[str, ...]  # names of trt.BuilderFlag members
    use_calibrator: bool
    notes: tuple[str, ...] = field(default=())


def plan_build(precision: str, tensorrt_version: str, graph_has_qdq: bool, graph_float_dtype: str,
               has_calibrator: bool) -> BuildPlan:
    """Decide network typing, builder flags and calibrator use; ConfigError for impossible requests.

    `graph_float_dtype` is the float type of the graph's weights ("float32" or "float16").
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"engine precision must be fp32, fp16 or int8, got {precision!r}")
    major = tensorrt_version_tuple(tensorrt_version)[0]
    if major >= 11:
        # Strong typing only: the graph's own types decide the precision.
        if has_calibrator:
            raise ConfigError("TensorRT 11 has no INT8 calibrators; quantise the graph with "
                              "quantize_static_int8(..., for_tensorrt=True) and build that")
        if precision == "fp16" and graph_float_dtype != "float16":
            raise ConfigError("TensorRT 11 builds in the graph's own types: convert the graph with quantize.to_fp16 "
                              "before building an fp16 engine")
        if precision == "int8" and not graph_has_qdq:
            raise ConfigError("TensorRT 11 needs Q/DQ nodes for int8: quantise with quantize_static_int8 first")
        return BuildPlan(strongly_typed=True, builder_flags=(), use_calibrator=False)
    if major < 10:
        raise ConfigError(f"TensorRT {tensorrt_version} is too old: molmo-edge builds with TensorRT 10 or newer")
    if graph_float_dtype == "float16":
        # A graph from to_fp16 already says which nodes stay fp32 (norm statistics); a strongly typed
        # build keeps that, where FP16 weak typing would be free to run them in fp16 again.
        if precision != "fp16" or has_calibrator:
            raise ConfigError("the graph has fp16 weights: build it with precision fp16 and no calibrator "
                              "(for fp32 or int8 engines start from the fp32 graph)")
        return BuildPlan(strongly_typed=True, builder_flags=(), use_calibrator=False,
                         notes=("strongly typed build: the fp16 graph's own types decide each layer's precision",))
    if precision == "fp32":
        if graph_has_qdq:
            raise ConfigError("the graph has Q/DQ (int8) nodes: build it with precision int8")
        return BuildPlan(strongly_typed=False, builder_flags=(), use_calibrator=False,
                         notes=("no reduced precision: the engine keeps fp32 (slowest, most exact)",))
    if precision == "fp16":
        if has_calibrator:
            raise ConfigError("a calibrator is only used for int8 engines")
        return BuildPlan(strongly_typed=False, builder_flags=("FP16",), use_calibrator=False,
                         notes=("weakly typed fp16: TensorRT may run norms in fp16 too; for exact control build "
                                "the graph from quantize.to_fp16 instead",))
    # int8: FP16 is allowed as well so that layers without int8 kernels (softmax, norms) fall back
    # to fp16 instead of fp32.
    if graph_has_qdq:
        if has_calibrator:
            raise ConfigError("the graph already carries Q/DQ scales; drop the calibrator (it would be ignored)")
        return BuildPlan(strongly_typed=False, builder_flags=("FP16", "INT8"), use_calibrator=False,
                         notes=("explicit quantisation: scales come from the graph's Q/DQ nodes",))
    if not has_calibrator:
        raise ConfigError("int8 needs scales: pass a calibrator (make_entropy_calibrator) or build a Q/DQ graph "
                          "made by quantize_static_int8(..., for_tensorrt=True)")
    return BuildPlan(strongly_typed=False, builder_flags=("FP16", "INT8"), use_calibrator=True,
                     notes=("implicit quantisation with an entropy calibrator (deprecated in TensorRT 10.1+; "
                            "prefer a Q/DQ graph)",))


# ----------------------------------------------------------------------------- parser errors

@dataclass(frozen=True)
class ParserIssue:
    """One error of the TensorRT ONNX parser, in plain Python."""

    node_index: int
    node_name: str
    node_operator: str
    code: str
    description: str


def parser_issues(parser) -> list[ParserIssue]:
    """Copy the errors out of a `trt.OnnxParser` (node_name/node_operator exist since TensorRT 9.1)."""
    issues = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        issues.append(ParserIssue(
            node_index=int(error.node()),
            node_name=str(error.node_name()) if hasattr(error, "node_name") else "",
            node_operator=str(error.node_operator()) if hasattr(error, "node_operator") else "",
            code=str(error.code()),
            description=str(error.desc()),
        ))
    return issues


def format_parser_errors(onnx_path: str | Path, issues: list[ParserIssue]) -> str:
    """A message naming each failing node (index, name, operator) and what the parser said."""
    if not issues:
        return f"TensorRT could not parse {onnx_path} (it reported no details; run with --verbose for its log)"
    lines = [f"TensorRT could not parse {onnx_path}: {len(issues)} error(s)"]
    for issue in issues:
        where = (f"node {issue.node_index} {issue.node_name!r} ({issue.node_operator})"
                 if issue.node_index >= 0 else "the graph")
        lines.append(f"  {where}: {issue.code}: {issue.description}")
    lines.append("Check the graph with `python -m molmo_edge.export.trt_ops <graph.onnx>` and re-export "
                 "with supported operators.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- timing cache

def read_timing_cache(path: str | Path | None) -> bytes:
    """The bytes of a timing cache file, or b"" (an empty cache) when there is none yet."""
    if path is None:
        return b""
    path = Path(path)
    if not path.exists():
        return b""
    if not path.is_file():
        raise ConfigError(f"timing cache {path} is not a file")
    return path.read_bytes()


def write_timing_cache(path: str | Path, data) -> None:
    """Store a serialized timing cache (any bytes-like object) atomically."""
    from molmo_edge.export.atomic import atomic_write_bytes

    atomic_write_bytes(path, memoryview(data))


# ----------------------------------------------------------------------------- build

def current_device() -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of the current CUDA device, via torch."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT needs an NVIDIA GPU, and torch.cuda reports none: install a CUDA "
                                      "build of torch (on Jetson, NVIDIA's wheel) and check the driver")
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), f"{major}.{minor}"


def _validate_build_arguments(onnx_path: Path, engine_path: Path, precision: str, workspace_bytes: int) -> None:
    if not onnx_path.is_file():
        raise ConfigError(f"ONNX graph {onnx_path} not found")
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"engine precision must be fp32, fp16 or int8, got {precision!r}")
    if workspace_bytes <= 0:
        raise ConfigError(f"workspace_bytes must be positive, got {workspace_bytes}")
    if engine_path.resolve() == onnx_path.resolve():
        raise ConfigError("engine_path must differ from onnx_path")
    if engine_path.suffix not in (".engine", ".plan", ".trt"):
        raise ConfigError(f"engine_path {engine_path} should end in .engine (bundles recognise .engine, .plan, .trt)")


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: EngineBuildPrecision = "fp16",
                 profiles: list[EngineProfile] | None = None, calibrator=None,
                 timing_cache_path: str | Path | None = None, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
                 graph_name: str | None = None) -> EngineSpec:
    """Parse an ONNX graph, build a serialized TensorRT engine, write it, and describe it.

    `profiles`: one or more optimisation profiles (see `profile_from_dims`); required when the
    graph has dynamic inputs. `calibrator`: from `make_entropy_calibrator`, for int8 without a
    Q/DQ graph (TensorRT 10 only). `timing_cache_path`: read if present and rewritten after the
    build, which makes later builds of similar graphs much faster. Returns the EngineSpec for
    the bundle manifest (file name relative to the engine's folder).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    profiles = list(profiles or [])
    _validate_build_arguments(onnx_path, engine_path, precision, workspace_bytes)
    from molmo_edge.export.onnx_io import describe_graph, graph_precision_facts

    graph = describe_graph(onnx_path)
    check_profiles(graph, profiles)
    has_qdq, float_dtype = graph_precision_facts(onnx_path)

    trt = import_tensorrt()
    plan = plan_build(precision, trt.__version__, has_qdq, float_dtype, calibrator is not None)
    for note in plan.notes:
        log.info("%s: %s", onnx_path.name, note)
    device_name, capability = current_device()

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external weight files relative to the graph's folder.
    if not parser.parse_from_file(str(onnx_path)):
        from molmo_edge.export.trt_ops import UnsupportedGraphError

        raise UnsupportedGraphError(format_parser_errors(onnx_path, parser_issues(parser)))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    trt_profiles = []
    for profile in profiles:
        trt_profile = builder.create_optimization_profile()
        for name, shape_range in profile.shapes.items():
            trt_profile.set_shape(name, shape_range.min, shape_range.opt, shape_range.max)
        config.add_optimization_profile(trt_profile)
        trt_profiles.append(trt_profile)
    if plan.use_calibrator:
        config.int8_calibrator = calibrator
        if trt_profiles:
            # Calibration runs at one shape: the first profile's (its opt shapes must match the samples).
            config.set_calibration_profile(trt_profiles[0])

    timing_cache = config.create_timing_cache(read_timing_cache(timing_cache_path))
    if not config.set_timing_cache(timing_cache, False):
        log.warning("timing cache %s was made on another device or TensorRT version; starting a new one",
                    timing_cache_path)
        config.set_timing_cache(config.create_timing_cache(b""), False)

    log.info("building %s engine from %s on %s (sm %s); this takes minutes", precision, onnx_path.name,
             device_name, capability)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise MolmoEdgeError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above); "
                             "try a larger workspace_bytes or another precision")
    from molmo_edge.export.atomic import atomic_write_bytes

    atomic_write_bytes(engine_path, memoryview(serialized))
    if timing_cache_path is not None:
        write_timing_cache(timing_cache_path, config.get_timing_cache().serialize())
    return EngineSpec(
        file=engine_path.name,
        graph=graph_name or onnx_path.stem,
        precision=precision,
        profiles=profiles,
        tensorrt_version=trt.__version__,
        device_name=device_name,
        compute_capability=capability,
    )

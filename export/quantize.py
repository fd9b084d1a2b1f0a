"""Reduced-precision copies of ONNX graphs: FP16, static INT8 (QDQ), dynamic INT8 (weights only).

Which one for what:
- `to_fp16`: halves the file; what GPUs run fastest. TensorRT 11 builds fp16 engines only from
  fp16 graphs (see tensorrt.py).
- `quantize_static_int8`: Q/DQ pairs with scales measured on calibration data (INT8 weights and
  activations). With `for_tensorrt=True` (the default) every zero point is 0, the symmetric
  scheme TensorRT requires, so the graph builds an explicitly quantised int8 engine.
- `quantize_dynamic_int8`: INT8 weights, activations quantised on the fly at run time. No
  calibration data needed; for ONNX Runtime on CPUs. TensorRT cannot build it
  (DynamicQuantizeLinear / MatMulInteger are not in its parser).

Graphs over the 2 GB protobuf limit keep weights in an external file `<graph>.onnx.data` next to
the graph; every function here reads such graphs and writes one when the result is large (or
when asked with `external_data=True`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from molmo_edge.errors import ConfigError

log = logging.getLogger(__name__)

# Above this the serialized protobuf would approach its 2 GiB hard limit: write external data.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000

# Fused normalisation ops stay fp32 in fp16 graphs. They square activations internally; the
# residual stream of a decoder routinely holds values of several hundred to thousands, and
# 300² = 90000 already exceeds fp16's largest finite value, 65504, which turns the variance into
# inf and the normalised output into zeros. (Unfused norms are found by pattern, see
# `norm_statistic_nodes`.)
FP32_NORM_OPS = (
    "LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization", "RMSNormalization", "GroupNormalization",
)


def _load(onnx_in: str | Path):
    import onnx

    onnx_in = Path(onnx_in)
    if not onnx_in.is_file():
        raise ConfigError(f"ONNX graph {onnx_in} not found")
    return onnx.load(str(onnx_in))  # loads external weight files from the graph's folder too


def _save(model, onnx_out: str | Path, external_data: bool | None) -> Path:
    """Save, with weights in `<name>.data` beside the graph when asked or when the model is large."""
    import onnx

    onnx_out = Path(onnx_out)
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = model.ByteSize() > EXTERNAL_DATA_THRESHOLD_BYTES
    if external_data:
        location = onnx_out.name + ".data"
        (onnx_out.parent / location).unlink(missing_ok=True)  # onnx appends to an existing file
        onnx.save_model(model, str(onnx_out), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=1024)
    else:
        onnx.save_model(model, str(onnx_out))
    return onnx_out


def _require_fp32_graph(onnx_path: Path) -> None:
    """INT8 quantisers start from the fp32 graph (ONNX Runtime writes fp16 scales that opset < 19 rejects)."""
    from molmo_edge.export.onnx_io import graph_precision_facts

    has_qdq, float_dtype = graph_precision_facts(onnx_path)
    if float_dtype != "float32":
        raise ConfigError(f"{onnx_path} has {float_dtype} weights: quantise the float32 graph instead")
    if has_qdq:
        raise ConfigError(f"{onnx_path} is already quantised (it has Q/DQ nodes)")


def _uses_external_data(onnx_path: Path) -> bool:
    from molmo_edge.export.onnx_io import external_data_locations, load_onnx_structure

    return bool(external_data_locations(load_onnx_structure(onnx_path)))


def _prepare_int8(onnx_in: str | Path, onnx_out: str | Path,
                  external_data: bool | None) -> tuple[Path, Path, bool]:
    """Checks and output set-up shared by the INT8 quantisers: (onnx_in, onnx_out, external_data).

    Refuses a missing, non-fp32 or already quantised input. `external_data` None: external when the
    input is, or when it is large. A stale `<out>.data` is removed because the quantisers append
    to an existing one.
    """
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    if not onnx_in.is_file():
        raise ConfigError(f"ONNX graph {onnx_in} not found")
    _require_fp32_graph(onnx_in)
    if external_data is None:
        external_data = _uses_external_data(onnx_in) or onnx_in.stat().st_size > EXTERNAL_DATA_THRESHOLD_BYTES
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    if external_data:
        (onnx_out.parent / (onnx_out.name + ".data")).unlink(missing_ok=True)
    return onnx_in, onnx_out, bool(external_data)


def _name_unnamed_nodes(graph, prefix: str = "node") -> None:
    """Give every node a unique name (node block lists and error messages refer to nodes by name)."""
    taken = {node.name for node in graph.node if node.name}
    for index, node in enumerate(graph.node):
        if not node.name:
            name = f"{prefix}_{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def topological_sort(graph) -> None:
    """Reorder `graph.node` so every node comes after the producers of its inputs (stable otherwise).

    onnxruntime's fp16 converter appends the Cast nodes it adds at the end of the node list; ONNX
    Runtime sorts on load, but onnx.checker and the TensorRT parser require a sorted graph.
    """
    nodes = list(graph.node)
    producer = {name: index for index, node in enumerate(nodes) for name in node.output if name}
    emitted: set[int] = set()
    entered: set[int] = set()  # a node met again before it is emitted would be a cycle: not expanded twice
    order: list[int] = []

    def emit(index: int) -> None:
        stack = [(index, False)]
        while stack:  # iterative depth-first: graphs have thousands of nodes
            current, expanded = stack.pop()
            if current in emitted:
                continue
            if expanded:
                emitted.add(current)
                order.append(current)
                continue
            if current in entered:
                continue
            entered.add(current)
            stack.append((current, True))
            for name in reversed(nodes[current].input):
                source = producer.get(name)
                if source is not None and source not in emitted and source != current:
                    stack.append((source, False))

    for index in range(len(nodes)):
        emit(index)
    if order != list(range(len(nodes))):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


def norm_statistic_nodes(model) -> list[str]:
    """Names of the nodes computing unfused norm statistics: x² → mean → + eps → sqrt (→ 1/·).

    Exported RMSNorm / LayerNorm decompose into Pow(x, 2) (or Mul(x, x)), ReduceMean, Add(eps),
    Sqrt and Reciprocal/Div. In fp16 the square and the mean overflow for |x| > 256; after the
    square root the value is back in range, so exactly this chain is kept in fp32.
    """
    from onnx import numpy_helper

    from molmo_edge.export.onnx_io import constant_values

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = constant_values(graph)

    def is_square(node) -> bool:
        if node is None:
            return False
        if node.op_type == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1]:
            return True
        if node.op_type == "Pow" and len(node.input) == 2 and node.input[1] in constants:
            exponent = numpy_helper.to_array(constants[node.input[1]])
            return exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0
        return False

    chain: list[str] = []
    for node in graph.node:
        if node.op_type not in ("ReduceMean", "ReduceSumSquare"):
            continue
        source = producers.get(node.input[0])
        if node.op_type == "ReduceMean" and not is_square(source):
            continue
        if node.op_type == "ReduceMean":
            chain.append(source.name)
        chain.append(node.name)
        # Follow the single-consumer path through the eps Add to the square root (and its reciprocal).
        current = node
        for _ in range(3):
            nexts = consumers.get(current.output[0], [])
            if len(nexts) != 1 or nexts[0].op_type not in ("Add", "Sqrt", "Reciprocal"):
                break
            current = nexts[0]
            chain.append(current.name)
            if current.op_type == "Reciprocal":
                break
    return list(dict.fromkeys(chain))


def cast_target(node) -> int | None:
    """The element type a Cast node converts to (onnx.TensorProto.FLOAT, ...); None for other nodes."""
    from molmo_edge.export.onnx_io import node_attribute

    return node_attribute(node, "to") if node.op_type == "Cast" else None


def drop_fp16_round_trips(graph) -> int:
    """Let fp32 nodes feed fp32 nodes directly: remove Cast(fp32 -> fp16) -> Cast(fp16 -> fp32) pairs.

    onnxruntime's fp16 converter wraps every node it keeps in fp32 in its own casts, so two kept nodes
    in a row still pass their tensor through fp16: Pow(x, 2) -> fp16 -> ReduceMean. That is the
    overflow keeping them in fp32 was meant to avoid (the shipped model's final norm sees |x| ~ 300 on
    video prompts: x² = 90 000 became inf and the logits were garbage). The consumers of the fp32
    copy are rewired to the original fp32 tensor; the fp16 cast stays only if something else reads it.
    Returns the number of fp16 -> fp32 casts removed.
    """
    from onnx import TensorProto

    producer = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}
    # element types known without running shape inference again: declared values and Cast outputs
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    types.update({n.output[0]: cast_target(n) for n in graph.node if n.op_type == "Cast"})
    replace: dict[str, str] = {}  # fp32 copy made from fp16 -> the fp32 tensor it started as
    for node in graph.node:
        if cast_target(node) != TensorProto.FLOAT or node.output[0] in graph_outputs:
            continue
        source = producer.get(node.input[0])
        if source is None or cast_target(source) != TensorProto.FLOAT16:
            continue
        if types.get(source.input[0]) == TensorProto.FLOAT:  # int64 -> fp16 -> fp32 is a conversion: keep it
            replace[node.output[0]] = source.input[0]
    if not replace:
        return 0
    kept = [node for node in graph.node if node.op_type != "Cast" or node.output[0] not in replace]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = replace.get(name, name)
    # and the fp16 casts nobody reads any more
    read = {name for node in kept for name in node.input} | graph_outputs
    kept = [n for n in kept if cast_target(n) != TensorProto.FLOAT16 or n.output[0] in read]
    del graph.node[:]
    graph.node.extend(kept)
    return len(replace)


def to_fp16(onnx_in: str | Path, onnx_out: str | Path, keep_io_types: bool = True,
            keep_norms_fp32: bool = True, extra_fp32_ops: Sequence[str] = (),
            external_data: bool | None = None) -> Path:
    """Convert float32 weights and activations to float16, except where fp16 would break the numbers.

    `keep_io_types`: inputs and outputs stay float32 (Cast nodes at the edges), so callers feed the
    same arrays as to the fp32 graph. Note that an additive attention mask of float32's minimum
    becomes -inf after that cast; rows with at least one unmasked position stay exact, a fully
    masked row gives NaN, so build masks with float16's minimum for fp16 graphs.
    `keep_norms_fp32`: keep normalisation statistics in fp32 (FP32_NORM_OPS + `norm_statistic_nodes`).
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = _load(onnx_in)
    _name_unnamed_nodes(model.graph)
    op_block_list = list(DEFAULT_OP_BLOCK_LIST) + list(extra_fp32_ops)
    node_block_list: list[str] = []
    if keep_norms_fp32:
        op_block_list += list(FP32_NORM_OPS)
        node_block_list = norm_statistic_nodes(model)
    converted = convert_float_to_float16(
        model, keep_io_types=keep_io_types, op_block_list=op_block_list, node_block_list=node_block_list,
        # Shape inference of large graphs needs the weights in memory; onnx handles < 2 GB protos only.
        disable_shape_infer=model.ByteSize() > EXTERNAL_DATA_THRESHOLD_BYTES,
    )
    log.info("fp16: %d nodes kept in fp32 (%s)", len(node_block_list), ", ".join(node_block_list[:6]))
    dropped = drop_fp16_round_trips(converted.graph)
    log.info("fp16: %d fp32 -> fp16 -> fp32 cast round trips removed", dropped)
    topological_sort(converted.graph)
    return _save(converted, onnx_out, external_data)


CalibrationMethodName = Literal["minmax", "entropy", "percentile"]


def quantize_static_int8(onnx_in: str | Path, onnx_out: str | Path, reader, per_channel: bool = True,
                         op_types: Sequence[str] = ("MatMul", "Gemm", "Conv"), for_tensorrt: bool = True,
                         calibrate_method: CalibrationMethodName = "minmax", weights_matmul_only: bool = True,
                         nodes_to_exclude: Iterable[str] = (), external_data: bool | None = None) -> Path:
    """Static INT8 in QDQ format, with activation ranges measured by running `reader`'s samples.

    `reader`: an ONNX Runtime CalibrationDataReader, e.g.
    `molmo_edge.calibration.int8.OnnxCalibrationReader(CalibrationInputs(...))`.
    `for_tensorrt`: signed int8 with zero points fixed at 0 (TensorRT's symmetric scheme) instead of
    ONNX Runtime's default asymmetric activations. `per_channel`: one weight scale per output
    channel (MatMul weights [K, N] → axis 1), which keeps narrow channels from losing all precision.
    `weights_matmul_only`: quantise only MatMuls with a constant weight, leaving attention's
    activation × activation products (Q·Kᵀ, P·V) in float, where int8 costs the most accuracy.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise ConfigError(f"calibrate_method must be one of {sorted(methods)}, got {calibrate_method!r}")
    if not hasattr(reader, "get_next"):
        raise ConfigError("reader must be an ONNX Runtime CalibrationDataReader (an object with get_next())")
    onnx_in, onnx_out, external_data = _prepare_int8(onnx_in, onnx_out, external_data)
    extra_options = {
        "MatMulConstBOnly": weights_matmul_only,
        "WeightSymmetric": True,
        "ActivationSymmetric": for_tensorrt,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
    }
    quantize_static(
        str(onnx_in), str(onnx_out), reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(op_types),
        per_channel=per_channel,
        activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(nodes_to_exclude),
        use_external_data_format=bool(external_data),
        calibrate_method=methods[calibrate_method],
        extra_options=extra_options,
    )
    return onnx_out


def quantize_dynamic_int8(onnx_in: str | Path, onnx_out: str | Path, op_types: Sequence[str] = ("MatMul", "Gemm"),
                          per_channel: bool = False, external_data: bool | None = None) -> Path:
    """INT8 weights for MatMul/Gemm; activations are quantised per call at run time (ONNX Runtime only)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_in, onnx_out, external_data = _prepare_int8(onnx_in, onnx_out, external_data)
    quantize_dynamic(
        str(onnx_in), str(onnx_out),
        op_types_to_quantize=list(op_types),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        use_external_data_format=bool(external_data),
    )
    return onnx_out

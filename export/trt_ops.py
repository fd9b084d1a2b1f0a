"""Will the TensorRT ONNX parser accept this graph? A check that runs without TensorRT.

Engines are built on the target device (a Jetson, say), often long after the export; an
unsupported operator found there costs a round trip. This module walks every node of an ONNX
model, including If/Loop/Scan bodies and model-local functions, against the operator table of
onnx-tensorrt (`data/trt_supported_ops.json`, see its "source" header for the version and commit)
and reports:
- `unsupported_ops`: operators the parser lacks, custom-domain operators (they need a TensorRT
  plugin), and operators added after the targeted TensorRT version;
- `violations`: supported operators used in a way the table says the parser refuses
  (e.g. a non-zero quantisation zero point, a cubic Resize, ScatterND with a reduction);
- `notes`: things that may still work but deserve a look (non-constant `axes` inputs, DOUBLE
  tensors cast down, element types outside an operator's documented list).

Usage from a shell: `python -m molmo_edge.export.trt_ops graph.onnx [--tensorrt 10.3]`.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from molmo_edge.errors import MolmoEdgeError
from molmo_edge.export.onnx_io import node_attribute

_TABLE_PATH = Path(__file__).resolve().parent / "data" / "trt_supported_ops.json"
_DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX element type -> the names the operator table uses.
_TABLE_TYPE_NAMES = {
    1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "DOUBLE",
    16: "BF16", 17: "FP8", 22: "INT4", 23: "FP4",
}
# Ops whose table "types" describe their data input 0 meaningfully (type notes are skipped elsewhere:
# Shape, Cast, Constant... accept or produce many types the short table lists leave out).
_TYPE_CHECK_SKIP = {
    "Cast", "CastLike", "Shape", "Size", "Constant", "ConstantOfShape", "Identity", "If", "Loop", "Scan",
    "QuantizeLinear", "DequantizeLinear", "Range", "EyeLike", "RandomNormal", "RandomUniform",
}
_RESIZE_COORD_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_TOPK_MAX_K = 3840


class UnsupportedGraphError(MolmoEdgeError):
    """A graph the TensorRT ONNX parser will not accept."""


@dataclass(frozen=True)
class OpIssue:
    """One node that TensorRT cannot take as it is."""

    op_type: str
    domain: str
    node_name: str
    location: str  # "main graph", or e.g. "main graph > Loop 'loop_0'.body"
    reason: str

    def __str__(self) -> str:
        qualified = f"{self.domain}::{self.op_type}" if self.domain not in _DEFAULT_DOMAINS else self.op_type
        return f"{qualified} node {self.node_name!r} in {self.location}: {self.reason}"


@dataclass
class Report:
    """What `check_trt_support` found. `ok` is True when the parser should accept the graph."""

    tensorrt_version: str
    opset: int
    opset_range: tuple[int, int]
    unsupported_ops: list[OpIssue] = field(default_factory=list)
    violations: list[OpIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_nodes: int = 0

    @property
    def opset_supported(self) -> bool:
        lo, hi = self.opset_range
        return lo <= self.opset <= hi

    @property
    def ok(self) -> bool:
        return self.opset_supported and not self.unsupported_ops and not self.violations

    @property
    def unsupported_op_types(self) -> list[str]:
        """Distinct unsupported operator names, sorted (domain-qualified for custom domains)."""
        return sorted({
            issue.op_type if issue.domain in _DEFAULT_DOMAINS else f"{issue.domain}::{issue.op_type}"
            for issue in self.unsupported_ops
        })

    def summary(self) -> str:
        lines = [f"TensorRT {self.tensorrt_version} ONNX parser check: {self.n_nodes} nodes, opset {self.opset} "
                 f"(supported {self.opset_range[0]}..{self.opset_range[1]}): {'OK' if self.ok else 'NOT SUPPORTED'}"]
        if not self.opset_supported:
            lines.append(f"  opset {self.opset} is outside {self.opset_range[0]}..{self.opset_range[1]}: "
                         "re-export with a supported opset_version")
        lines += [f"  unsupported: {issue}" for issue in self.unsupported_ops]
        lines += [f"  violation: {issue}" for issue in self.violations]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class SupportTable:
    tensorrt_version: str
    opset_min: int
    opset_max_by_tensorrt: dict[str, int]
    operators: dict[str, dict[str, Any]]
    source: dict[str, str]

    def opset_max(self, version: tuple[int, int]) -> int:
        """Highest opset documented for the newest table version not newer than `version`."""
        known = sorted((_version_tuple(v), m) for v, m in self.opset_max_by_tensorrt.items())
        eligible = [m for v, m in known if v <= version]
        return eligible[-1] if eligible else known[0][1]


@lru_cache(maxsize=1)
def load_support_table() -> SupportTable:
    data = json.loads(_TABLE_PATH.read_text(encoding="utf-8"))
    return SupportTable(
        tensorrt_version=data["tensorrt_version"],
        opset_min=int(data["opset_min"]),
        opset_max_by_tensorrt={k: int(v) for k, v in data["opset_max_by_tensorrt"].items()},
        operators=data["operators"],
        source=data["source"],
    )


def _version_tuple(version: str) -> tuple[int, int]:
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    if not parts:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return (parts[0], parts[1] if len(parts) > 1 else 0)


def _installed_tensorrt_version() -> str | None:
    try:
        from importlib import metadata

        return metadata.version("tensorrt")
    except Exception:
        return None


class _Scope:
    """Names of constant tensors visible in a graph (its initializers and Constant outputs, plus outer scopes)."""

    def __init__(self, graph, outer: "_Scope | None" = None):
        self.outer = outer
        self.values: dict[str, Any] = {}
        for init in graph.initializer:
            self.values[init.name] = init
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS and node.output:
                tensor = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
                self.values[node.output[0]] = tensor  # None: a constant of another attribute kind
        self.consumed: set[str] = {name for node in graph.node for name in node.input if name}
        self.consumed |= {o.name for o in graph.output}

    def is_constant(self, name: str) -> bool:
        return name in self.values or (self.outer is not None and self.outer.is_constant(name))

    def constant_array(self, name: str):
        """The numpy value of a constant tensor whose data is in the proto, else None."""
        from onnx import numpy_helper
        from onnx.external_data_helper import uses_external_data

        scope: _Scope | None = self
        while scope is not None:
            if name in scope.values:
                tensor = scope.values[name]
                if tensor is None or uses_external_data(tensor):
                    return None
                try:
                    return numpy_helper.to_array(tensor)
                except Exception:
                    return None
            scope = scope.outer
        return None


def _check_restriction(node, check: str, scope: _Scope) -> tuple[list[str], list[str]]:
    """(violations, notes) for one node under one named rule of the table."""
    violations: list[str] = []
    notes: list[str] = []
    if check == "const_input_1":
        if len(node.input) > 1 and node.input[1] and not scope.is_constant(node.input[1]):
            notes.append(f"input {node.input[1]!r} is computed at run time; the parser needs a build-time constant "
                         "(it may still fold it)")
    elif check == "zero_point_2":
        if len(node.input) > 2 and node.input[2]:
            value = scope.constant_array(node.input[2])
            if value is None:
                notes.append(f"zero point {node.input[2]!r} is not a readable constant; TensorRT needs it to be zero")
            elif value.size and (value.astype("float64") != 0).any():
                violations.append("zero point must be 0 (TensorRT quantises symmetrically); "
                                  "quantise with symmetric activations and weights")
    elif check == "only_first_output":
        extra = [name for name in node.output[1:] if name and name in scope.consumed]
        if extra:
            violations.append(f"only the first output is supported, but {extra} is used")
    elif check == "constant_attrs":
        bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
        if bad:
            violations.append(f"attribute {bad[0]} is unsupported")
    elif check == "lstm_attrs":
        if node_attribute(node, "input_forget", 0) != 0 or node_attribute(node, "layout", 0) != 0:
            violations.append("input_forget and layout must be 0")
    elif check == "resize_attrs":
        coord = node_attribute(node, "coordinate_transformation_mode", "half_pixel")
        mode = node_attribute(node, "mode", "nearest")
        nearest = node_attribute(node, "nearest_mode", "round_prefer_floor")
        if coord not in _RESIZE_COORD_MODES:
            violations.append(f"coordinate_transformation_mode {coord!r} is unsupported")
        if mode not in _RESIZE_MODES:
            violations.append(f"mode {mode!r} is unsupported (nearest or linear only)")
        if mode == "nearest" and nearest not in _RESIZE_NEAREST_MODES:
            violations.append(f"nearest_mode {nearest!r} is unsupported")
        if node_attribute(node, "antialias", 0):
            violations.append("antialiasing is unsupported")
        if node_attribute(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            violations.append("keep_aspect_ratio_policy must be stretch")
    elif check == "scatternd_reduction":
        reduction = node_attribute(node, "reduction", "none")
        if reduction != "none":
            violations.append(f"reduction {reduction!r} is unsupported (none only)")
    elif check == "topk_attrs":
        if node_attribute(node, "sorted", 1) != 1:
            violations.append("sorted must be 1")
        if len(node.input) > 1:
            k = scope.constant_array(node.input[1])
            if k is not None and k.size and int(k.reshape(-1)[0]) >= _TOPK_MAX_K:
                violations.append(f"K={int(k.reshape(-1)[0])} must be below {_TOPK_MAX_K}")
    return violations, notes


def _value_types(model) -> dict[str, int]:
    """Element type of every tensor whose type shape inference can tell (main graph only)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    graph = inferred.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def check_trt_support(model_or_path, tensorrt_version: str | None = None) -> Report:
    """Check an ONNX model (a path or a ModelProto) against the TensorRT ONNX parser's operator table.

    `tensorrt_version` is the TensorRT that will build the engine ("10.3" for JetPack 6.x, say);
    by default the installed TensorRT, else the version the table documents.
    """
    import onnx

    if isinstance(model_or_path, (str, Path)):
        from molmo_edge.export.onnx_io import load_onnx_structure

        model = load_onnx_structure(model_or_path)
    elif isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
    else:
        raise TypeError(f"expected a path or onnx.ModelProto, got {type(model_or_path).__name__}")

    table = load_support_table()
    version_text = tensorrt_version or _installed_tensorrt_version() or table.tensorrt_version
    version = _version_tuple(version_text)
    opset = next((int(o.version) for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), 0)
    report = Report(tensorrt_version=version_text, opset=opset,
                    opset_range=(table.opset_min, table.opset_max(version)))
    if version < (10, 0):
        report.notes.append(f"the operator table documents TensorRT 10.x; support in {version_text} is not modelled "
                            "(older parsers lack several operators)")
    if version > _version_tuple(table.tensorrt_version):
        report.notes.append(f"the operator table documents TensorRT {table.tensorrt_version}; "
                            f"{version_text} may accept more")

    functions = {(f.domain, f.name): f for f in model.functions}
    types = _value_types(model)

    def visit(graph_nodes, scope: _Scope, location: str, seen_functions: tuple) -> None:
        for node in graph_nodes:
            report.n_nodes += 1
            name = node.name or f"<unnamed {node.op_type}>"
            key = (node.domain, node.op_type)
            if key in functions and key not in seen_functions:
                # The parser expands model-local functions (unless a plugin of that name exists).
                function = functions[key]
                visit(function.node, scope, f"{location} > function {node.domain}.{node.op_type}",
                      seen_functions + (key,))
                continue
            if node.domain not in _DEFAULT_DOMAINS:
                report.unsupported_ops.append(OpIssue(
                    node.op_type, node.domain, name, location,
                    f"custom domain {node.domain!r}: needs a TensorRT plugin registered under this name"))
            else:
                entry = table.operators.get(node.op_type)
                if entry is None or not entry["supported"]:
                    if entry is None:
                        reason = "not in the parser's operator table"
                    else:
                        reason = "not supported by the parser" + (f": {entry['restriction']}"
                                                                  if entry.get("restriction") else "")
                    report.unsupported_ops.append(OpIssue(node.op_type, node.domain, name, location, reason))
                elif "since" in entry and version < _version_tuple(entry["since"]):
                    report.unsupported_ops.append(OpIssue(
                        node.op_type, node.domain, name, location,
                        f"added in TensorRT {entry['since']}, newer than the targeted {version_text}"))
                else:
                    if "check" in entry:
                        violations, notes = _check_restriction(node, entry["check"], scope)
                        report.violations += [OpIssue(node.op_type, node.domain, name, location, v) for v in violations]
                        report.notes += [f"{node.op_type} node {name!r} in {location}: {n}" for n in notes]
                    allowed = entry.get("types") or []
                    if node.op_type not in _TYPE_CHECK_SKIP and allowed and node.input and node.input[0] in types:
                        type_name = _TABLE_TYPE_NAMES.get(types[node.input[0]])
                        if type_name and type_name not in allowed and type_name != "DOUBLE":
                            report.notes.append(f"{node.op_type} node {name!r} in {location}: input type {type_name} "
                                                f"is not among the documented {', '.join(allowed)}")
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g.node, _Scope(attribute.g, scope),
                          f"{location} > {node.op_type} {name!r}.{attribute.name}", seen_functions)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    for i, sub in enumerate(attribute.graphs):
                        visit(sub.node, _Scope(sub, scope),
                              f"{location} > {node.op_type} {name!r}.{attribute.name}[{i}]", seen_functions)

    visit(model.graph.node, _Scope(model.graph), "main graph", ())

    doubles = sorted(n for n, t in types.items() if t == 11)
    if doubles:
        report.notes.append(
            f"{len(doubles)} DOUBLE tensors (e.g. {doubles[0]!r}) will be cast down to FP32 by the parser"
        )
    io_types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}
    for io_name, elem in io_types.items():
        if elem == 8:  # STRING
            report.violations.append(OpIssue("(graph io)", "", io_name, "main graph", "STRING tensors are unsupported"))
    return report


def assert_trt_compatible(model_or_path, tensorrt_version: str | None = None) -> Report:
    """`check_trt_support`, raising UnsupportedGraphError (with the full report) when the graph would fail."""
    report = check_trt_support(model_or_path, tensorrt_version)
    if not report.ok:
        where = model_or_path if isinstance(model_or_path, (str, Path)) else "the graph"
        raise UnsupportedGraphError(
            f"{where} will not build with TensorRT {report.tensorrt_version}: "
            f"unsupported {report.unsupported_op_types or 'none'}, "
            f"{len(report.violations)} restriction violation(s), opset {report.opset}"
            f"{'' if report.opset_supported else ' (out of range)'}.\n{report.summary()}"
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m molmo_edge.export.trt_ops",
                                     description="check ONNX graphs against the TensorRT ONNX parser's operator table")
    parser.add_argument("onnx", nargs="+", help="ONNX files")
    parser.add_argument("--tensorrt", default=None, help="TensorRT version that will build the engine, e.g. 10.3")
    args = parser.parse_args(argv)
    all_ok = True
    for path in args.onnx:
        report = check_trt_support(path, args.tensorrt)
        print(f"{path}:\n{report.summary()}")
        all_ok &= report.ok
    return 0 if all_ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

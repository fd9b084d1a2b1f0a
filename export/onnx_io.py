"""Read what an ONNX file declares (inputs, outputs, opset, external weight files) without its weights.

Bundles are verified and manifests written from these facts. Graphs of the real model are
several GB, so weights stay on disk: `onnx.load(..., load_external_data=False)` parses only the
protobuf, and graphs above the 2 GB protobuf limit keep their weights in external files anyway.
"""
from __future__ import annotations

from pathlib import Path

from molmo_edge.errors import BundleError
from molmo_edge.export.manifest import GraphSpec, TensorSpec

# ONNX TensorProto element type -> manifest dtype name.
_ONNX_TO_DTYPE = {
    1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "float16", 11: "float64", 16: "bfloat16", 17: "float8e4m3fn", 21: "uint4", 22: "int4",
}


def onnx_dtype_name(elem_type: int) -> str:
    """Manifest dtype name of an ONNX element type; raises for types bundles never carry (strings...)."""
    try:
        return _ONNX_TO_DTYPE[elem_type]
    except KeyError:
        import onnx

        known = elem_type in onnx.TensorProto.DataType.values()
        name = onnx.TensorProto.DataType.Name(elem_type) if known else elem_type
        raise BundleError(f"ONNX element type {name} is not supported in bundles") from None


def load_onnx_structure(path: str | Path):
    """The ModelProto of `path` with external weights left on disk. Raises BundleError if unreadable."""
    import onnx

    path = Path(path)
    try:
        return onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise BundleError(f"{path}: ONNX file not found") from None
    except Exception as exc:  # protobuf DecodeError and friends carry no useful type to catch
        raise BundleError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None


def _tensor_spec(value_info) -> TensorSpec:
    tensor_type = value_info.type.tensor_type
    shape: list[int | str] = []
    for i, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.dim_param:
            shape.append(dim.dim_param)
        else:
            # A dynamic dimension without a name: give it a stable one so manifests stay comparable.
            shape.append(f"{value_info.name}_dim{i}")
    return TensorSpec(name=value_info.name, dtype=onnx_dtype_name(tensor_type.elem_type), shape=shape)


def default_opset(model) -> int:
    """The opset version of the default ONNX domain ("" or "ai.onnx")."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def describe_graph(path: str | Path, file_name: str | None = None) -> GraphSpec:
    """A GraphSpec of the ONNX file at `path` (inputs exclude initializers, as in old opsets)."""
    return describe_model(load_onnx_structure(path), file_name or Path(path).name)


def describe_model(model, file_name: str) -> GraphSpec:
    """A GraphSpec of a loaded ModelProto, to be stored under `file_name` in a bundle."""
    initializer_names = {init.name for init in model.graph.initializer}
    inputs = [_tensor_spec(v) for v in model.graph.input if v.name not in initializer_names]
    outputs = [_tensor_spec(v) for v in model.graph.output]
    return GraphSpec(file=file_name, inputs=inputs, outputs=outputs, opset=default_opset(model))


def node_attribute(node, name: str, default=None):
    """The value of one attribute of an ONNX node (strings decoded), or `default` when it is not set."""
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def constant_values(graph) -> dict[str, object]:
    """name -> TensorProto of the graph's initializers and Constant nodes (top level only).

    The exporter writes small constants (exponents, clip bounds) as either; graph rewrites that
    need a constant's value look it up here without caring which.
    """
    values = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = attribute.t
    return values


def external_data_locations(model) -> set[str]:
    """Relative paths of the external weight files the model's initializers point at (all subgraphs)."""
    from onnx.external_data_helper import uses_external_data

    locations: set[str] = set()

    def tensors_of(graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from tensors_of(attr.g)
                for sub in attr.graphs:
                    yield from tensors_of(sub)

    for tensor in tensors_of(model.graph):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return locations


def graph_precision_facts(onnx_path: str | Path) -> tuple[bool, str]:
    """(has Q/DQ nodes, float type of the weights) of an ONNX graph, read without its weight data."""
    model = load_onnx_structure(onnx_path)
    has_qdq = False
    counts = {"float32": 0, "float16": 0}
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                has_qdq = True
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    stack.append(attribute.g)
                stack.extend(attribute.graphs)
        for init in graph.initializer:
            if init.data_type == 1:
                counts["float32"] += 1
            elif init.data_type == 10:
                counts["float16"] += 1
    return has_qdq, "float16" if counts["float16"] > counts["float32"] else "float32"

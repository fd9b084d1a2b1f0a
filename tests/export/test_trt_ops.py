"""The TensorRT operator check: hand-made graphs with supported, unsupported, nested and custom operators."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from molmo_edge.export.trt_ops import (
    UnsupportedGraphError,
    assert_trt_compatible,
    check_trt_support,
    load_support_table,
    main,
)

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=17, extra_opsets=(), functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def _io(name, shape=(2, 4), elem=F):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _supported_graph():
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Softmax", ["r"], ["y"], name="softmax", axis=-1)]
    return _model(nodes, [_io("x")], [_io("y")], [w])


def test_graph_of_supported_ops_passes(tmp_path):
    path = tmp_path / "ok.onnx"
    onnx.save(_supported_graph(), str(path))
    report = check_trt_support(path, tensorrt_version="10.3")
    assert report.ok, report.summary()
    assert report.n_nodes == 3 and report.opset == 17 and report.opset_range == (9, 20)
    assert assert_trt_compatible(path, "10.3").ok
    assert main([str(path), "--tensorrt", "10.3"]) == 0


def test_unsupported_op_fails_naming_op_and_node(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Unique", ["r"], ["y"], name="dedupe")]
    model = _model(nodes, [_io("x")], [_io("y", (None,))])
    report = check_trt_support(model, "10.15")
    assert not report.ok
    assert report.unsupported_op_types == ["Unique"]
    assert report.unsupported_ops[0].node_name == "dedupe"
    with pytest.raises(UnsupportedGraphError, match=r"(?s)unsupported \['Unique'\].*Unique node 'dedupe' in main graph"):
        assert_trt_compatible(model, "10.15")
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    assert main([str(path)]) == 1
    assert "dedupe" in capsys.readouterr().out


def test_custom_domain_op_needs_a_plugin():
    node = helper.make_node("FusedMatMul", ["x", "x"], ["y"], name="fused", domain="com.microsoft")
    report = check_trt_support(_model([node], [_io("x", (4, 4))], [_io("y", (4, 4))],
                                      extra_opsets=[("com.microsoft", 1)]), "10.15")
    assert report.unsupported_op_types == ["com.microsoft::FusedMatMul"]
    assert "plugin" in str(report.unsupported_ops[0])


def test_ops_inside_loop_and_if_bodies_are_checked():
    # Loop body: (iter, cond, carried) -> (cond, carried'), with an unsupported op inside.
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
         helper.make_node("NegativeLogLikelihoodLoss", ["carried", "labels"], ["carried_out"], name="deep_bad")],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried", F, [2, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried_out", F, [2, 4])],
    )
    then_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["t"], name="then_relu")], "then", [], [_io("t")])
    else_branch = helper.make_graph([helper.make_node("Det", ["x"], ["e"], name="else_det")], "else", [], [_io("e")])
    nodes = [
        helper.make_node("Loop", ["trip", "cond", "x"], ["loop_out"], name="loop0", body=body),
        helper.make_node("If", ["flag"], ["z"], name="branch", then_branch=then_branch, else_branch=else_branch),
    ]
    inputs = [_io("x"), helper.make_tensor_value_info("trip", TensorProto.INT64, []),
              helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
              helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
              helper.make_tensor_value_info("labels", TensorProto.INT64, [2])]
    report = check_trt_support(_model(nodes, inputs, [_io("loop_out"), _io("z")]), "10.15")
    found = {issue.node_name: issue.location for issue in report.unsupported_ops}
    assert found == {"deep_bad": "main graph > Loop 'loop0'.body", "else_det": "main graph > If 'branch'.else_branch"}
    assert report.n_nodes == 2 + 2 + 2


def test_model_local_functions_are_expanded():
    good = helper.make_function("local", "SafeAct", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                                [helper.make_opsetid("", 17)])
    bad = helper.make_function("local", "OddAct", ["a"], ["b"], [helper.make_node("Hardmax", ["a"], ["h"]),
                                                                 helper.make_node("Unique", ["h"], ["b"], name="inner")],
                               [helper.make_opsetid("", 17)])
    ok_model = _model([helper.make_node("SafeAct", ["x"], ["y"], domain="local", name="call")], [_io("x")], [_io("y")],
                      extra_opsets=[("local", 1)], functions=[good])
    assert check_trt_support(ok_model, "10.15").ok
    bad_model = _model([helper.make_node("OddAct", ["x"], ["y"], domain="local", name="call")], [_io("x")], [_io("y")],
                       extra_opsets=[("local", 1)], functions=[bad])
    report = check_trt_support(bad_model, "10.15")
    assert report.unsupported_op_types == ["Unique"]
    assert report.unsupported_ops[0].location == "main graph > function local.OddAct"


@pytest.mark.parametrize("opset, version, ok", [(8, "10.15", False), (17, "10.0", True), (21, "10.3", False),
                                                (21, "10.15", True), (24, "10.15", True), (25, "10.15", False)])
def test_opset_range_depends_on_the_tensorrt_version(opset, version, ok):
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_io("x")], [_io("y")], opset=opset)
    report = check_trt_support(model, version)
    assert report.ok is ok, report.summary()
    assert report.opset_supported is ok


def test_operators_newer_than_the_target_tensorrt_are_unsupported():
    scale = numpy_helper.from_array(np.ones(4, np.float32), "scale")
    node = helper.make_node("RMSNormalization", ["x", "scale"], ["y"], name="norm", axis=-1)
    model = _model([node], [_io("x")], [_io("y")], [scale], opset=23)
    assert check_trt_support(model, "10.15").ok
    old = check_trt_support(model, "10.3")
    assert old.unsupported_op_types == ["RMSNormalization"] and "added in TensorRT 10.15" in str(old.unsupported_ops[0])


def _qdq_graph(zero_point: int):
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(zero_point, np.int8), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dequant")]
    return _model(nodes, [_io("x")], [_io("y")], inits)


def test_quantization_zero_points_must_be_zero():
    assert check_trt_support(_qdq_graph(0), "10.15").ok
    report = check_trt_support(_qdq_graph(3), "10.15")
    assert {v.node_name for v in report.violations} == {"quant", "dequant"}
    assert "zero point must be 0" in report.violations[0].reason


def test_attribute_restrictions_are_enforced():
    roi = numpy_helper.from_array(np.array([], np.float32), "roi")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    k = numpy_helper.from_array(np.array([5000], np.int64), "k")
    x4 = _io("x", (1, 1, 4, 4))
    cubic = _model([helper.make_node("Resize", ["x", "roi", "scales"], ["y"], name="up", mode="cubic")],
                   [x4], [_io("y", (1, 1, 8, 8))], [roi, scales])
    report = check_trt_support(cubic, "10.15")
    assert [v.node_name for v in report.violations] == ["up"] and "cubic" in report.violations[0].reason
    linear = _model([helper.make_node("Resize", ["x", "roi", "scales"], ["y"], name="up", mode="linear")],
                    [x4], [_io("y", (1, 1, 8, 8))], [roi, scales])
    assert check_trt_support(linear, "10.15").ok
    topk = _model([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top", sorted=0)],
                  [_io("x", (1, 6000))], [_io("v", (1, 5000)), _io("i", (1, 5000), TensorProto.INT64)], [k])
    reasons = [v.reason for v in check_trt_support(topk, "10.15").violations]
    assert any("sorted" in r for r in reasons) and any("K=5000" in r for r in reasons)


def test_runtime_axes_are_noted_not_failed():
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Slice", ["shape", "zero", "one"], ["axes"], name="first_dim"),
             helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum", keepdims=1)]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    report = check_trt_support(_model(nodes, [_io("x")], [_io("y")], inits, opset=18), "10.15")
    assert report.ok
    assert any("'sum'" in note and "build-time constant" in note for note in report.notes)


def test_support_table_records_its_source():
    table = load_support_table()
    assert table.tensorrt_version == "10.15" and table.opset_min == 9 and table.opset_max((10, 15)) == 24
    assert table.source["repository"] == "onnx/onnx-tensorrt"
    assert "96e781103cfc4adf4a6bb557e94bac8e693f6f4c" in table.source["cross_checked_with"]
    assert len(table.operators) >= 190
    # Names are real ONNX operators except three experimental ones the parser still accepts.
    unknown = sorted(name for name in table.operators if not onnx.defs.has(name))
    assert unknown == ["ImageScaler", "ParametricSoftplus", "ScaledTanh"]
    for op in ("MatMul", "Gather", "Softmax", "LayerNormalization", "Where", "Expand"):
        assert table.operators[op]["supported"], op
    for op in ("MatMulInteger", "DynamicQuantizeLinear", "Unique", "SequenceAt"):
        assert not table.operators[op]["supported"], op

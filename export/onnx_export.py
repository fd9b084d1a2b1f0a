"""The three stages of a torch Molmo2 model as ONNX graphs: vit, connector, decoder.

    specs = export_graphs(model, out_dir, opset=17)      # vit.onnx, connector.onnx, decoder.onnx

The stages are traced with the TorchScript exporter (`dynamo=False`): the model's stages were
written for it (no hooks, no data-dependent branches, no boolean indexing), it needs no extra
packages, and it gives plain MatMul/Softmax graphs that both ONNX Runtime and the TensorRT parser
take. Tracing runs at sample shapes chosen so that no dynamic axis is 0 or 1 (the tracer would
specialise on them); the dynamic axes are declared, and `describe_graph` reads them back.

Opset 17 by default: the oldest opset with LayerNormalization as one op, inside what ONNX
Runtime (1.18+) and every TensorRT 10 parser support (9..20; `trt_ops` checks it per graph).
Only fp32 graphs are exported here; fp16 / int8 variants are made from them by `quantize`.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from molmo_edge.engine import graph_io as io
from molmo_edge.errors import ConfigError, MolmoEdgeError
from molmo_edge.export.manifest import GraphSpec
from molmo_edge.export.onnx_io import constant_values
from molmo_edge.model.inputs import add_visual_tokens
from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# TorchScript exporter opsets that ONNX Runtime and every TensorRT 10 parser accept.
SUPPORTED_OPSETS = (17, 18, 19, 20)
# Above this the protobuf nears its 2 GiB limit: weights go to `<graph>.onnx.data` beside the graph.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000


class DecoderGraph(nn.Module):
    """The decoder as traced: embeddings + visual tokens, decoder layers with past/present KV, lm_head
    of the last position. Inputs and outputs are those of `graph_io` (flattened KV pairs)."""

    def __init__(self, model: Molmo2ForConditionalGeneration) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.lm_head = model.lm_head

    def forward(self, input_ids: torch.Tensor, visual_tokens: torch.Tensor, visual_index: torch.Tensor,
                attention_mask: torch.Tensor, position_ids: torch.Tensor, *past_flat: torch.Tensor):
        embeds = add_visual_tokens(self.decoder.embed(input_ids), visual_tokens, visual_index)  # [1, S, D]
        past = tuple(zip(past_flat[0::2], past_flat[1::2]))
        hidden, present = self.decoder(embeds, attention_mask, position_ids, past)  # [1, S, D]
        logits = self.lm_head(hidden[:, -1])  # [1, V]: only the last position is ever sampled from
        return (logits, *[tensor for pair in present for tensor in pair])


def check_opset(opset: int) -> int:
    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(f"opset {opset} is not supported; use one of {', '.join(map(str, SUPPORTED_OPSETS))} "
                          f"(default {DEFAULT_OPSET})")
    return opset


def _save_onnx(model_proto, path: Path, external_data: bool) -> None:
    """Save a ModelProto, with all weights in ONE `<name>.data` file when `external_data`."""
    import onnx

    data_name = path.name + ".data"
    (path.parent / data_name).unlink(missing_ok=True)  # onnx appends to an existing data file
    if external_data:
        onnx.save_model(model_proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
    else:
        onnx.save_model(model_proto, str(path))


def integer_clips_to_max_min(model_proto) -> int:
    """Rewrite Clip on integer tensors as Max / Min; returns how many were rewritten.

    `pooling.clamp(min=0)` (the connector's padded slots) exports as an int64 Clip. ONNX Runtime
    runs it, but the TensorRT parser implements Clip for float types only; Max and Min take INT64.
    """
    from onnx import TensorProto, helper

    graph = model_proto.graph
    constants = constant_values(graph)
    integer_types = {TensorProto.INT32, TensorProto.INT64}
    rewritten = 0
    for position in range(len(graph.node) - 1, -1, -1):
        node = graph.node[position]
        if node.op_type != "Clip" or node.domain not in ("", "ai.onnx"):
            continue
        bounds = list(node.input[1:3])
        bounds += [""] * (2 - len(bounds))
        known = [constants.get(name) for name in bounds if name]
        if not known or any(t is None or t.data_type not in integer_types for t in known):
            continue
        low, high = bounds
        replacement, current = [], node.input[0]
        if low:
            out = node.output[0] if not high else f"{node.output[0]}_max"
            replacement.append(helper.make_node("Max", [current, low], [out], name=f"{node.name or 'clip'}_max"))
            current = out
        if high:
            replacement.append(helper.make_node("Min", [current, high], [node.output[0]],
                                                name=f"{node.name or 'clip'}_min"))
        del graph.node[position]
        for offset, new_node in enumerate(replacement):
            graph.node.insert(position + offset, new_node)
        rewritten += 1
    return rewritten


def set_output_dims(model_proto, dims: dict[str, list[int | str]]) -> None:
    """Overwrite the declared shapes of graph outputs (the exporter names static sizes it could not
    prove, e.g. the ViT's patch axis after the tap Concat, or the logits' batch axis)."""
    for output in model_proto.graph.output:
        if output.name not in dims:
            continue
        shape = output.type.tensor_type.shape
        if len(shape.dim) != len(dims[output.name]):
            raise MolmoEdgeError(f"output {output.name} has rank {len(shape.dim)}, expected {len(dims[output.name])}")
        for dim, value in zip(shape.dim, dims[output.name]):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value


def export_module(module: nn.Module, args: tuple, path: str | Path, input_names: list[str],
                  output_names: list[str], dynamic_axes: dict[str, dict[int, str]], opset: int = DEFAULT_OPSET,
                  external_data: bool | None = None,
                  output_dims: dict[str, list[int | str]] | None = None) -> GraphSpec:
    """Trace `module` at `args` into `path`, make it TensorRT-friendly, check it, and describe it.

    external_data: None = only when the weights approach the protobuf limit; True/False = force.
    The TorchScript exporter spills models over 2 GB into one file per tensor; those are gathered
    into a single `<name>.onnx.data` so a bundle holds two files per graph, not thousands.
    output_dims: declared output shapes to pin (see `set_output_dims`).
    """
    import onnx

    from molmo_edge.export.onnx_io import describe_graph, external_data_locations, load_onnx_structure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_opset(opset)
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every Python int it reads from a shape; the dynamic axes are
        # declared, and the tests run every graph at shapes other than the traced ones.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
    spilled = sorted(external_data_locations(load_onnx_structure(path)))
    proto = onnx.load(str(path))  # with any spilled tensors
    for name in spilled:
        (path.parent / name).unlink(missing_ok=True)
    n_clips = integer_clips_to_max_min(proto)
    if n_clips:
        log.debug("%s: %d integer Clip nodes rewritten as Max/Min", path.name, n_clips)
    set_output_dims(proto, output_dims or {})
    weights_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    if external_data is None:
        external_data = bool(spilled) or weights_bytes > EXTERNAL_DATA_THRESHOLD_BYTES
    _save_onnx(proto, path, external_data)
    try:
        onnx.checker.check_model(str(path))  # by path: works for graphs with external data
    except onnx.checker.ValidationError as exc:
        raise MolmoEdgeError(f"the exported graph {path.name} is not valid ONNX ({exc}); please report this") from None
    return describe_graph(path)


# ----------------------------------------------------------------------------- sample inputs
def _sample_pooling(n_crops: int, n_patches: int, n_tokens: int, window: int) -> torch.Tensor:
    """[n_tokens, window] valid indices into n_crops·n_patches patches, some slots padded (-1)."""
    pooling = torch.arange(n_tokens * window).reshape(n_tokens, window) % (n_crops * n_patches)
    pooling[0, -1] = -1  # exercise the padded-slot path in the trace
    return pooling


@torch.no_grad()
def export_vit(model: Molmo2ForConditionalGeneration, path: str | Path, opset: int = DEFAULT_OPSET,
               external_data: bool | None = None) -> GraphSpec:
    vision = model.config.vision
    pixels = torch.rand(3, vision.num_patches, vision.patch_dim) * 2 - 1  # traced at N = 3
    return export_module(model.vision, (pixels,), path, list(io.VIT_INPUTS), list(io.VIT_OUTPUTS),
                         {"pixel_values": {0: io.DIM_CROPS}, "features": {0: io.DIM_CROPS}}, opset, external_data,
                         output_dims={"features": [io.DIM_CROPS, vision.num_patches, model.vision.output_size]})


@torch.no_grad()
def export_connector(model: Molmo2ForConditionalGeneration, path: str | Path, opset: int = DEFAULT_OPSET,
                     external_data: bool | None = None) -> GraphSpec:
    """One graph with a dynamic window axis serves both 2×2 image and 3×3 video pooling: the
    connector weights (a SwiGLU as wide as the LLM's MLP) are stored once."""
    vision = model.config.vision
    features = torch.randn(3, vision.num_patches, model.vision.output_size)
    pooling = _sample_pooling(3, vision.num_patches, n_tokens=5, window=6)  # K=6: neither 4 nor 9
    return export_module(model.connector, (features, pooling), path, list(io.CONNECTOR_INPUTS),
                         list(io.CONNECTOR_OUTPUTS),
                         {"features": {0: io.DIM_CROPS}, "pooling": {0: io.DIM_TOKENS, 1: io.DIM_WINDOW},
                          "visual_tokens": {0: io.DIM_TOKENS}}, opset, external_data)


@torch.no_grad()
def export_decoder(model: Molmo2ForConditionalGeneration, path: str | Path, opset: int = DEFAULT_OPSET,
                   external_data: bool | None = None) -> GraphSpec:
    config = model.config
    text = config.text
    seq, past, n_visual = 5, 3, 2
    input_ids = torch.randint(0, text.vocab_size, (1, seq))
    visual = torch.randn(n_visual, text.hidden_size)
    index = torch.tensor([[0, 1, 2, 0, 0]])
    mask = torch.zeros(1, 1, seq, past + seq)
    positions = torch.arange(past, past + seq)[None]
    past_kv = [torch.randn(io.kv_shape(config, past)) for _ in io.past_names(text.num_hidden_layers)]
    n_layers = text.num_hidden_layers
    axes: dict[str, dict[int, str]] = {
        "input_ids": {1: io.DIM_SEQ}, "visual_tokens": {0: io.DIM_VISUAL}, "visual_index": {1: io.DIM_SEQ},
        "attention_mask": {2: io.DIM_SEQ, 3: io.DIM_TOTAL}, "position_ids": {1: io.DIM_SEQ},
    }
    axes.update({name: {2: io.DIM_PAST} for name in io.past_names(n_layers)})
    axes.update({name: {2: io.DIM_TOTAL} for name in io.present_names(n_layers)})
    return export_module(DecoderGraph(model), (input_ids, visual, index, mask, positions, *past_kv), path,
                         io.decoder_input_names(n_layers), io.decoder_output_names(n_layers), axes, opset,
                         external_data, output_dims={"logits": [1, text.vocab_size]})


def export_graphs(model: Molmo2ForConditionalGeneration, out_dir: str | Path, opset: int = DEFAULT_OPSET,
                  external_data: bool | None = None, progress=None) -> dict[str, GraphSpec]:
    """vit.onnx, connector.onnx and decoder.onnx of a float32 model into `out_dir` -> {name: GraphSpec}."""
    if model.dtype != torch.float32:
        raise ConfigError(f"export a float32 model (got {model.dtype}); reduced precision comes after, from "
                          "the fp32 graphs")
    out_dir = Path(out_dir)
    exporters = {io.VIT: export_vit, io.CONNECTOR: export_connector, io.DECODER: export_decoder}
    specs = {}
    for name, exporter in exporters.items():
        if progress is not None:
            progress(f"tracing {name}.onnx")
        specs[name] = exporter(model.float().eval(), out_dir / f"{name}.onnx", opset, external_data)
    return specs


__all__ = ["DEFAULT_OPSET", "DecoderGraph", "SUPPORTED_OPSETS", "check_opset", "export_connector", "export_decoder",
           "export_graphs", "export_module", "export_vit", "integer_clips_to_max_min", "set_output_dims"]

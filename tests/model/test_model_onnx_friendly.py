"""The stages trace to static ONNX graphs (opset 17) that ONNX Runtime runs at OTHER shapes than
the traced ones, matching PyTorch fp32 to 1e-4. A data-dependent Python branch, `.tolist()`,
boolean indexing or a hook in a stage would either fail to export or give wrong numbers here.

This uses the TorchScript exporter (`dynamo=False`), which needs no extra packages; the
project's exporter (molmo_edge.export) builds the real bundle graphs.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from .model_test_inputs import image_inputs, randomize_, video_inputs
from molmo_edge.model import Molmo2Config, Molmo2ForConditionalGeneration, build_attention_mask, visual_token_index
from molmo_edge.model.inputs import add_visual_tokens

ort = pytest.importorskip("onnxruntime")
ATOL = 1e-4


def export_and_load(module: nn.Module, args: tuple, input_names: list[str], output_names: list[str],
                    dynamic_axes: dict) -> "ort.InferenceSession":
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, opset_version=17, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, dynamo=False)
    return ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])


def run(session: "ort.InferenceSession", **feeds: torch.Tensor) -> list[np.ndarray]:
    return session.run(None, {name: t.numpy() for name, t in feeds.items()})


class EmbedWithVisual(nn.Module):
    def __init__(self, model: Molmo2ForConditionalGeneration) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, visual_tokens, visual_index):
        return add_visual_tokens(self.model.decoder.embed(input_ids), visual_tokens, visual_index)


class DecoderWithCache(nn.Module):
    """(embeds, mask, positions, *past k/v) -> (last logits, *present k/v): the graph signature."""

    def __init__(self, model: Molmo2ForConditionalGeneration) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs_embeds, attention_mask, position_ids, *past_flat):
        past = tuple(zip(past_flat[0::2], past_flat[1::2])) if past_flat else None
        hidden, present = self.model.decoder(inputs_embeds, attention_mask, position_ids, past)
        return (self.model.lm_head(hidden[:, -1:]), *[t for kv in present for t in kv])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Molmo2ForConditionalGeneration(Molmo2Config.preset("tiny-test-olmo")).eval()
    randomize_(m, seed=5)
    return m


@torch.no_grad()
def test_vision_and_connector_run_at_new_shapes(model):
    traced = image_inputs(model.config, seed=0, highres_crops=[(1, 2)])
    fresh = video_inputs(model.config, seed=1, n_frames=4)  # other N, other T, 3×3 windows
    vit = export_and_load(model.vision, (traced["pixel_values"],), ["pixels"], ["features"],
                          {"pixels": {0: "n_crops"}, "features": {0: "n_crops"}})
    pixels = fresh["pixel_values_videos"]
    (features,) = run(vit, pixels=pixels)
    assert np.abs(features - model.vision(pixels).numpy()).max() <= ATOL

    connector = export_and_load(model.connector, (model.vision(traced["pixel_values"]), traced["image_token_pooling"]),
                                ["features", "pooling"], ["visual_tokens"],
                                {"features": {0: "n_crops"}, "pooling": {0: "n_tokens", 1: "window"},
                                 "visual_tokens": {0: "n_tokens"}})
    torch_features = model.vision(pixels)
    pooling = fresh["video_token_pooling"]
    (tokens,) = run(connector, features=torch_features, pooling=pooling)
    assert tokens.shape == (pooling.shape[0], model.config.text.hidden_size)
    assert np.abs(tokens - model.connector(torch_features, pooling).numpy()).max() <= ATOL


@torch.no_grad()
def test_embedding_gather_runs_at_new_shapes(model):
    small = image_inputs(model.config, seed=2, highres_crops=[(1, 1)])
    big = image_inputs(model.config, seed=3, highres_crops=[(2, 2), (1, 2)])

    def args(inputs):
        visual = model.encode_images(inputs["pixel_values"], inputs["image_token_pooling"])
        return inputs["input_ids"], visual, visual_token_index(inputs["input_ids"], model.config.image_patch_id)

    session = export_and_load(EmbedWithVisual(model), args(small), ["input_ids", "visual_tokens", "visual_index"],
                              ["inputs_embeds"], {"input_ids": {1: "seq"}, "visual_tokens": {0: "n_tokens"},
                                                  "visual_index": {1: "seq"}, "inputs_embeds": {1: "seq"}})
    ids, visual, index = args(big)
    (embeds,) = run(session, input_ids=ids, visual_tokens=visual, visual_index=index)
    assert np.abs(embeds - model.embed_inputs(ids, visual).numpy()).max() <= ATOL


@torch.no_grad()
def test_decoder_prefill_and_step_run_at_new_shapes(model):
    n_layers = model.config.text.num_hidden_layers
    kv_names = [f"{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]

    def prefill_args(inputs):
        visual = model.encode_images(inputs["pixel_values"], inputs["image_token_pooling"])
        embeds = model.embed_inputs(inputs["input_ids"], visual)
        mask = build_attention_mask(1, embeds.shape[1], 0, mm_token_type_ids=inputs["mm_token_type_ids"])
        return embeds, mask, torch.arange(embeds.shape[1])[None]

    traced = prefill_args(image_inputs(model.config, seed=4, highres_crops=[(1, 1)]))
    seq_axes = {"inputs_embeds": {1: "seq"}, "attention_mask": {2: "seq", 3: "seq"}, "position_ids": {1: "seq"}}
    prefill = export_and_load(DecoderWithCache(model), traced, ["inputs_embeds", "attention_mask", "position_ids"],
                              ["logits", *[f"present_{n}" for n in kv_names]],
                              {**seq_axes, **{f"present_{n}": {2: "seq"} for n in kv_names}})
    embeds, mask, positions = prefill_args(image_inputs(model.config, seed=5, highres_crops=[(2, 2)]))
    logits, *present = run(prefill, inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
    full_logits = model.lm_head(model.decoder(embeds, mask, positions)[0])
    assert np.abs(logits[:, -1] - full_logits[:, -1].numpy()).max() <= ATOL

    # One decode step after a past of another length than the traced one.
    past_traced = tuple(torch.zeros(1, model.config.text.num_key_value_heads, 7, model.config.text.head_dim)
                        for _ in kv_names)
    step_args = (torch.zeros(1, 1, model.config.text.hidden_size), torch.zeros(1, 1, 1, 8),
                 torch.tensor([[7]]), *past_traced)
    step = export_and_load(DecoderWithCache(model), step_args,
                           ["inputs_embeds", "attention_mask", "position_ids", *[f"past_{n}" for n in kv_names]],
                           ["logits", *[f"present_{n}" for n in kv_names]],
                           {"attention_mask": {3: "total"}, **{f"past_{n}": {2: "past"} for n in kv_names},
                            **{f"present_{n}": {2: "total"} for n in kv_names}})
    past_length = embeds.shape[1]
    token = torch.tensor([[int(np.argmax(logits[0, -1]))]])
    step_embeds = model.decoder.embed(token)
    step_mask = build_attention_mask(1, 1, past_length)
    step_positions = torch.tensor([[past_length]])
    feeds = {f"past_{n}": torch.from_numpy(t) for n, t in zip(kv_names, present)}
    step_logits, *new_present = run(step, inputs_embeds=step_embeds, attention_mask=step_mask,
                                    position_ids=step_positions, **feeds)
    assert new_present[0].shape[2] == past_length + 1
    torch_past = model.decoder(embeds, mask, positions)[1]
    torch_step = model(token, past_key_values=torch_past, logits_to_keep=1).logits
    assert np.abs(step_logits[:, -1] - torch_step[:, -1].numpy()).max() <= ATOL

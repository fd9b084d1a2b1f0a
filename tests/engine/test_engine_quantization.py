"""bitsandbytes int8 / NF4 on the CPU, through the real loading path (TorchBackend.from_checkpoint).

Tolerance: the logits may drift by at most 4x the weights' own quantisation error. Each quantised
layer's weight error e_w = |W_q - W| / |W| is measured here by dequantising (int8 absmax per row:
~0.6 %; NF4 in 64-blocks: ~9 % on these unit-scale Gaussian weights). The tiny decoder has two
layers, each with an attention and an MLP sublayer on the residual path; if each sublayer adds an
output error of about e_w, the logits err by at most ~4 e_w (measured: ~2 e_w for int8, ~1.5 e_w
for NF4). A wiring bug (dropped bias, wrong scale, transposed weight) gives errors of order 1.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from molmo_edge.errors import ConfigError

from .conftest import random_image

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module", params=["int8", "nf4"])
def quantized(request, engine_checkpoint_dir):
    from molmo_edge.engine.torch_backend import TorchBackend

    return request.param, TorchBackend.from_checkpoint(engine_checkpoint_dir, device="cpu",
                                                       quantization=request.param)


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    if isinstance(layer, bnb.nn.Linear8bitLt):  # int8 codes x per-row absmax / 127
        from molmo_edge.engine.quantization import int8_row_scales

        return layer.weight.data.float() * int8_row_scales(layer).float()[:, None] / 127.0
    state = layer.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):  # bitsandbytes repacks for its CPU kernel after a call
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

        data, state = _convert_weight_packed_for_cpu_inverse(layer.weight.data, state)
        return bnb.functional.dequantize_4bit(data, state).float()
    return bnb.functional.dequantize_4bit(layer.weight.data, state).float()


def weight_error(quantized_model, float_model) -> float:
    """Largest relative weight error over the quantised layers."""
    errors = []
    for name, layer in quantized_model.named_modules():
        if isinstance(layer, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)):
            original = float_model.get_submodule(name).weight.detach().float()
            errors.append(float((dequantized_weight(layer) - original).norm() / original.norm()))
    assert errors, "no layer was quantised"
    return max(errors)


def image_inputs(backend, seed=0):
    return backend.processor("Point to the red circle", images=random_image(seed))


def test_logits_stay_close_to_float32(quantized, torch_backend):
    mode, backend = quantized
    inputs = image_inputs(backend)
    tokens = backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    logits, state = backend.prefill(inputs["input_ids"], tokens, inputs["mm_token_type_ids"])
    ref_tokens = torch_backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    reference, _ = torch_backend.prefill(inputs["input_ids"], ref_tokens, inputs["mm_token_type_ids"])
    e_w = weight_error(backend.model, torch_backend.model)
    assert e_w < (0.02 if mode == "int8" else 0.15)  # what the formats promise on Gaussian weights
    drift = float((logits - reference).norm() / reference.norm())
    assert 0.0 < drift <= 4 * e_w, f"{mode}: logits drift {drift:.4f}, weight error {e_w:.4f}"
    # decode steps run on the quantised weights too
    step_logits, _ = backend.decode(int(logits.argmax()), state)
    assert step_logits.shape == (backend.vocab_size,) and bool(torch.isfinite(step_logits).all())


def test_vit_connector_and_lm_head_stay_float_by_default(quantized, torch_backend):
    mode, backend = quantized
    model = backend.model
    for prefix in ("vision", "connector"):
        kept = [type(m) for m in model.get_submodule(prefix).modules() if isinstance(m, nn.Linear)]
        assert kept and all(t is nn.Linear for t in kept), f"{prefix} was quantised"
    assert type(model.lm_head) is nn.Linear
    decoder_linears = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    expected_type = bnb.nn.Linear8bitLt if mode == "int8" else bnb.nn.Linear4bit
    assert decoder_linears and all(isinstance(m, expected_type) for m in decoder_linears)
    # an unquantised ViT + connector gives exactly the float visual tokens
    inputs = image_inputs(backend, seed=1)
    tokens = backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    assert torch.equal(tokens, torch_backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"]))


def test_size_report(quantized, torch_backend):
    mode, backend = quantized
    report = backend.quantization_report
    shapes = [(m.out_features, m.in_features) for m in torch_backend.model.decoder.modules()
              if isinstance(m, nn.Linear)]
    assert report.mode == mode and report.n_quantized == len(shapes)
    assert report.float_bytes == sum(4 * o * i for o, i in shapes)  # fp32 weights
    if mode == "int8":  # one int8 per weight + one fp32 scale per output row
        assert report.quantized_bytes == sum(o * i + 4 * o for o, i in shapes)
    else:  # two 4-bit codes per byte, plus block scales and code tables
        packed = sum(o * i // 2 for o, i in shapes)
        assert packed < report.quantized_bytes < sum(o * i + 4 * o for o, i in shapes)
    assert report.compression > 3.5
    float_total = sum(p.numel() * p.element_size() for p in torch_backend.model.parameters())
    assert report.model_bytes == pytest.approx(float_total - report.float_bytes + report.quantized_bytes, rel=0.01)


def test_quantize_vision_too(engine_checkpoint_dir, torch_backend):
    from molmo_edge.engine.quantization import QuantizationConfig, quantize_model
    from molmo_edge.model import load_checkpoint

    model = load_checkpoint(engine_checkpoint_dir)
    report = quantize_model(model, QuantizationConfig(mode="int8", quantize_vision=True))
    vision_types = {name: type(m) for name, m in model.named_modules() if name.startswith(("vision.", "connector."))
                    and isinstance(m, nn.Linear)}
    # the two layers the model reads its compute dtype from stay float
    assert vision_types.pop("vision.patch_embedding") is nn.Linear
    assert vision_types.pop("connector.projector.down_proj") is nn.Linear
    assert vision_types and all(t is bnb.nn.Linear8bitLt for t in vision_types.values())
    assert report.n_quantized == len(vision_types) + sum(
        isinstance(m, nn.Linear) for m in torch_backend.model.decoder.modules())
    inputs = image_inputs(torch_backend, seed=2)
    with torch.inference_mode():
        tokens = model.encode_images(inputs["pixel_values"], inputs["image_token_pooling"])
    reference = torch_backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    drift = float((tokens - reference).norm() / reference.norm())
    assert 0.0 < drift <= 4 * weight_error(model, torch_backend.model)


def test_generation_runs_quantised(quantized):
    from molmo_edge.engine.engine import Engine

    _, backend = quantized
    answer = Engine(backend).ask_image(random_image(3), "Point to the red circle", max_new_tokens=6,
                                       eos_token_ids=[])
    assert len(answer.generation.token_ids) == 6
    assert all(0 <= t < backend.vocab_size for t in answer.generation.token_ids)


def test_unknown_quantization_is_a_config_error(engine_checkpoint_dir):
    from molmo_edge.engine.loading import load_backend

    with pytest.raises(ConfigError, match="unknown quantization 'int3'"):
        load_backend(engine_checkpoint_dir, quantization="int3")

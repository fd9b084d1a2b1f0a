"""The torch backend against the model it wraps: the Backend contract of backend.py, checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from molmo_edge.engine.backend import BackendState, drop_padding_rows, real_token_rows
from molmo_edge.errors import InputError, MolmoEdgeError

from .conftest import random_image

ATOL = 1e-4  # fp32 on the CPU: only summation order differs between the paths compared here


def test_encode_visual_matches_the_model(torch_backend):
    inputs = torch_backend.processor("Point to x", images=random_image(1, 90, 130))
    tokens = torch_backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    n_patch_tokens = int((inputs["input_ids"] == torch_backend.config.image_patch_id).sum())
    assert tokens.shape == (n_patch_tokens, torch_backend.hidden_size)
    assert tokens.device == torch_backend.device and tokens.dtype == torch.float32
    with torch.no_grad():
        features = torch_backend.model.vision(inputs["pixel_values"])
        all_rows = torch_backend.model.connector(features, inputs["image_token_pooling"])
    torch.testing.assert_close(tokens, drop_padding_rows(all_rows, inputs["image_token_pooling"]))


def test_padding_rows_are_dropped():
    pooling = torch.tensor([[0, 1], [-1, -1], [2, -1]])
    tokens = torch.arange(6.0).reshape(3, 2)
    assert real_token_rows(pooling).tolist() == [True, False, True]
    assert drop_padding_rows(tokens, pooling).tolist() == [[0.0, 1.0], [4.0, 5.0]]


@pytest.mark.parametrize("kind", ["image", "video", "text"])
def test_prefill_logits_match_the_full_forward(torch_backend, kind):
    processor = torch_backend.processor
    if kind == "image":
        inputs = processor("Point to x", images=[random_image(2), random_image(3, 50, 50)])
        tokens = torch_backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    elif kind == "video":
        inputs = processor("Track x.", video=([random_image(4 + i, 40, 60) for i in range(3)], [0.0, 0.5, 1.0]))
        tokens = torch_backend.encode_visual(inputs["pixel_values_videos"], inputs["video_token_pooling"])
    else:
        inputs, tokens = processor("Say something"), None
    logits, state = torch_backend.prefill(inputs["input_ids"], tokens, inputs["mm_token_type_ids"])
    with torch.no_grad():
        expected = torch_backend.model(**inputs).logits[0, -1]
    assert logits.shape == (torch_backend.vocab_size,) and logits.dtype == torch.float32
    assert logits.device.type == "cpu" and not logits.is_inference()  # callers may edit it in place
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
    assert isinstance(state, BackendState) and state.length == inputs["input_ids"].shape[1]


@pytest.mark.parametrize("kind", ["image", "video"])
def test_kv_cache_decode_equals_full_prefill(torch_backend, kind):
    processor = torch_backend.processor
    if kind == "image":
        inputs = processor("Point to x", images=random_image(5))
        tokens = torch_backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    else:
        inputs = processor("Track x.", video=([random_image(6 + i, 40, 60) for i in range(2)], [0.0, 0.5]))
        tokens = torch_backend.encode_visual(inputs["pixel_values_videos"], inputs["video_token_pooling"])
    ids, mm = inputs["input_ids"], inputs["mm_token_type_ids"]
    logits, state = torch_backend.prefill(ids, tokens, mm)
    generated: list[int] = []
    for step in range(6):
        token = int(logits.argmax())
        generated.append(token)
        logits, state = torch_backend.decode(token, state)
        assert state.length == ids.shape[1] + step + 1
        # the same sequence prefilled from scratch: the decode step's logits must agree
        full_ids = torch.cat([ids, torch.tensor([generated])], dim=1)
        full_mm = torch.cat([mm, torch.zeros(1, len(generated), dtype=torch.long)], dim=1)
        reference, _ = torch_backend.prefill(full_ids, tokens, full_mm)
        torch.testing.assert_close(logits, reference, atol=ATOL, rtol=0)


def test_visual_tokens_change_the_answer(torch_backend):
    """A check that the comparisons above are not vacuous: other image, other logits."""
    a = torch_backend.processor("Point to x", images=random_image(7))
    b = torch_backend.processor("Point to x", images=random_image(8))
    tokens_a = torch_backend.encode_visual(a["pixel_values"], a["image_token_pooling"])
    tokens_b = torch_backend.encode_visual(b["pixel_values"], b["image_token_pooling"])
    logits_a, _ = torch_backend.prefill(a["input_ids"], tokens_a, a["mm_token_type_ids"])
    logits_b, _ = torch_backend.prefill(a["input_ids"], tokens_b, a["mm_token_type_ids"])
    assert (logits_a - logits_b).abs().max() > 1e-4


def test_bad_inputs_are_clear_errors(torch_backend):
    inputs = torch_backend.processor("Point to x", images=random_image(9))
    ids, mm = inputs["input_ids"], inputs["mm_token_type_ids"]
    tokens = torch_backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    with pytest.raises(InputError, match="<im_patch> tokens but"):
        torch_backend.prefill(ids, tokens[:-1], mm)
    with pytest.raises(InputError, match="<im_patch> tokens but 0"):
        torch_backend.prefill(ids, None, mm)
    with pytest.raises(InputError, match="mm_token_type_ids"):
        torch_backend.prefill(ids, tokens, mm[:, :-1])
    with pytest.raises(InputError, match=r"\[1, S\]"):
        torch_backend.prefill(ids.repeat(2, 1), tokens, mm.repeat(2, 1))
    with pytest.raises(InputError, match="pixel_values must be"):
        torch_backend.encode_visual(inputs["pixel_values"][..., :100], inputs["image_token_pooling"])
    with pytest.raises(InputError, match="pooling indexes patch"):
        torch_backend.encode_visual(inputs["pixel_values"][:1], inputs["image_token_pooling"])
    _, state = torch_backend.prefill(ids, tokens, mm)
    with pytest.raises(InputError, match="outside the base vocabulary"):
        torch_backend.decode(torch_backend.config.image_patch_id, state)
    with pytest.raises(TypeError, match="state returned by this backend"):
        torch_backend.decode(1, BackendState(length=3))


def test_closed_backend_refuses_work(engine_checkpoint_dir):
    from molmo_edge.engine.torch_backend import TorchBackend

    with TorchBackend.from_checkpoint(engine_checkpoint_dir, device="cpu") as backend:
        ids, mm = backend.processor.text_prompt("hello")
        backend.prefill(ids, None, mm)
    with pytest.raises(MolmoEdgeError, match="closed"):
        backend.prefill(ids, None, mm)


def test_dtype_follows_the_request(engine_checkpoint_dir):
    from molmo_edge.engine.torch_backend import TorchBackend

    backend = TorchBackend.from_checkpoint(engine_checkpoint_dir, device="cpu", dtype="bfloat16")
    inputs = backend.processor("Point to x", images=random_image(10))
    tokens = backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    assert tokens.dtype == torch.bfloat16
    logits, _ = backend.prefill(inputs["input_ids"], tokens, inputs["mm_token_type_ids"])
    assert logits.dtype == torch.float32 and bool(torch.isfinite(logits).all())
    assert np.isfinite(logits.numpy()).all()

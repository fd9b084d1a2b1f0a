"""Molmo2Config: presets, native and legacy config.json layouts, tokenizer-derived copies."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.errors import ConfigError
from molmo_edge.model import Molmo2Config
from molmo_edge.model.presets import PRESETS

# The layout of the original Ai2 hub config.json (remote-code era), shrunk to test size: legacy
# key names, a 27-block ViT of which only the taps' blocks are used, `rope_scaling` with `type`.
LEGACY_HUB_CONFIG = {
    "model_type": "molmo2",
    "architectures": ["Molmo2ForConditionalGeneration"],
    "vit_config": {
        "model_type": "molmo2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 27,
        "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6, "image_default_input_size": [56, 56], "image_patch_size": 14, "image_num_pos": 16,
        "float32_attention": True, "attention_dropout": 0.0, "residual_dropout": 0.0,
    },
    "adapter_config": {
        "model_type": "molmo2", "vit_layers": [-3, -9], "pooling_attention_mask": True, "hidden_size": 32,
        "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 64,
        "text_hidden_size": 64, "hidden_act": "silu", "image_feature_dropout": 0.0, "float32_attention": True,
    },
    "text_config": {
        "model_type": "molmo2_text", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
        "head_dim": 16, "vocab_size": 128, "additional_vocab_size": 16, "qkv_bias": False, "num_hidden_layers": 3,
        "intermediate_size": 128, "hidden_act": "silu", "max_position_embeddings": 256, "rope_theta": 500000.0,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        "rope_scaling_layers": [2], "use_qk_norm": True, "qk_norm_type": "olmo", "layer_norm_eps": 1e-5,
        "norm_after": True, "embedding_dropout": 0.0, "residual_dropout": 0.0, "use_cache": True,
        # generic PretrainedConfig keys that older transformers versions write into every sub-config
        "return_dict": True, "torchscript": False, "id2label": {"0": "LABEL_0"}, "pruned_heads": {},
        "architectures": None, "_name_or_path": "", "chunk_size_feed_forward": 0,
    },
    "image_start_token_id": 128, "image_end_token_id": 129, "image_patch_id": 130, "image_col_id": 131,
    "low_res_image_start_token_id": 132, "frame_start_token_id": 135, "frame_end_token_id": 136,
    "use_frame_special_tokens": True, "tie_word_embeddings": False,
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_the_native_layout(name):
    config = Molmo2Config.preset(name)
    assert Molmo2Config.from_hf_dict(config.to_hf_dict()) == config


def test_real_size_presets_have_the_published_shapes():
    eight = Molmo2Config.preset("molmo2-8b")
    assert (eight.text.hidden_size, eight.text.num_hidden_layers, eight.text.intermediate_size) == (4096, 36, 12288)
    assert eight.vision_taps == [24, 18] and eight.vision.num_hidden_layers == 25
    assert eight.image_patch_id == 151938 and eight.eos_token_id == 151645
    olmo = Molmo2Config.preset("molmo2-o-7b")
    assert olmo.text.qk_norm_type == "olmo" and olmo.text.norm_after
    assert olmo.text.num_key_value_heads == 32 and olmo.text.rope.rope_type == "yarn"
    with pytest.raises(ConfigError, match="unknown Molmo2 preset"):
        Molmo2Config.preset("molmo3-1t")


@pytest.mark.parametrize("name", list(PRESETS))
def test_transformers_reads_our_native_dict(hf_molmo2, name):
    hf_config_cls, _ = hf_molmo2
    ours = Molmo2Config.preset(name)
    hf = hf_config_cls(**copy.deepcopy(ours.to_hf_dict()))
    assert hf.text_config.hidden_size == ours.text.hidden_size
    assert hf.text_config.qk_norm_type == ours.text.qk_norm_type
    assert hf.text_config.rope_parameters["rope_type"] == ours.text.rope.rope_type
    assert hf.text_config.rope_parameters["rope_theta"] == ours.text.rope.rope_theta
    assert hf.adapter_config.vision_feature_layer == ours.vision_taps
    assert hf.vision_config.num_hidden_layers == ours.vision.num_hidden_layers
    assert list(hf.vision_config.image_size) == list(ours.vision.image_size)
    assert hf.image_patch_id == ours.image_patch_id


def test_legacy_hub_layout_is_read_like_transformers_reads_it(hf_molmo2):
    hf_config_cls, _ = hf_molmo2
    ours = Molmo2Config.from_hf_dict(copy.deepcopy(LEGACY_HUB_CONFIG))
    hf = hf_config_cls(**copy.deepcopy(LEGACY_HUB_CONFIG))
    # transformers trims the 27 declared blocks to the deepest tap and resolves negative taps.
    assert ours.vision_taps == hf.adapter_config.vision_feature_layer == [24, 18]
    assert ours.vision.num_hidden_layers == hf.vision_config.num_hidden_layers == 25
    assert list(ours.vision.image_size) == list(hf.vision_config.image_size) == [56, 56]
    assert ours.vision.num_patches == hf.vision_config.num_position_embeddings == 16
    assert ours.text.rms_norm_eps == hf.text_config.rms_norm_eps == 1e-5
    assert ours.text.attention_bias is hf.text_config.attention_bias is False
    assert ours.text.rope.rope_type == hf.text_config.rope_parameters["rope_type"] == "yarn"
    assert ours.text.rope.rope_theta == hf.text_config.rope_parameters["rope_theta"] == 500000.0
    assert ours.text.rope.factor == 4.0 and ours.text.rope.original_max_position_embeddings == 64
    assert ours.text.rope_scaling_layers == hf.text_config.rope_scaling_layers == [2]
    assert ours.image_col_id == 131


def test_rope_variants_and_missing_ids_get_reference_defaults():
    d = Molmo2Config.preset("tiny-test").to_hf_dict()
    del d["image_col_id"]
    d["text_config"].pop("rope_parameters")
    d["text_config"]["rope_theta"] = 1234.0
    config = Molmo2Config.from_hf_dict(d)
    assert config.text.rope.rope_type == "default" and config.text.rope.rope_theta == 1234.0
    assert config.image_col_id == config.image_start_token_id + 3
    assert config.bos_token_id is None and config.stop_token_ids == []
    d["text_config"]["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10.0, "factor": 2.0}
    yarn = Molmo2Config.from_hf_dict(d)
    assert yarn.text.rope.original_max_position_embeddings == d["text_config"]["max_position_embeddings"]


def test_unknown_model_type_is_refused_with_a_clear_error():
    d = Molmo2Config.preset("tiny-test").to_hf_dict()
    d["model_type"] = "llava"
    with pytest.raises(ConfigError, match="model_type 'llava'.*Molmo2"):
        Molmo2Config.from_hf_dict(d)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["adapter_config"].update(hidden_size=48), "adapter.hidden_size"),
    (lambda d: d["adapter_config"].update(vision_feature_layer=[5, 0]), "must index the 2 ViT layers"),
    (lambda d: d.update(image_patch_id=10_000), "image_patch_id=10000 is outside the embedding table"),
    (lambda d: d["text_config"].update(rope_parameters={"rope_type": "llama3", "rope_theta": 1.0}), "llama3"),
    (lambda d: d["text_config"].update(hidden_act="swish2"), "hidden_act"),
    (lambda d: d.update(tie_word_embeddings=True), "tied"),
    (lambda d: d["text_config"].update(use_sliding_window=True, sliding_window=4096), "sliding-window"),
    (lambda d: d["text_config"].update(partial_rotary_factor=0.5), "partial_rotary_factor"),
])
def test_inconsistent_configs_raise_config_error(mutate, message):
    d = Molmo2Config.preset("tiny-test").to_hf_dict()
    mutate(d)
    with pytest.raises(ConfigError, match=message):
        Molmo2Config.from_hf_dict(d)


@settings(max_examples=40, deadline=None)
@given(n_layers=st.integers(1, 30), data=st.data())
def test_vision_taps_resolve_and_trim_like_the_reference(n_layers, data):
    taps = data.draw(st.lists(st.integers(-n_layers, n_layers - 1), min_size=1, max_size=3))
    d = Molmo2Config.preset("tiny-test").to_hf_dict()
    d["vision_config"]["num_hidden_layers"] = n_layers
    d["adapter_config"]["vision_feature_layer"] = taps
    config = Molmo2Config.from_hf_dict(d)
    assert config.vision_taps == [t % n_layers for t in taps]
    assert config.vision.num_hidden_layers == max(config.vision_taps) + 1
    assert Molmo2Config.from_hf_dict(config.to_hf_dict()) == config


def test_from_pretrained_reads_token_ids_from_generation_config(tmp_path):
    import json

    d = Molmo2Config.preset("tiny-test").to_hf_dict()
    (tmp_path / "config.json").write_text(json.dumps(d))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 4], "bos_token_id": 3}))
    config = Molmo2Config.from_pretrained(tmp_path)
    assert config.stop_token_ids == [3, 4] and config.bos_token_id == 3
    with pytest.raises(ConfigError, match="no config.json"):
        Molmo2Config.from_pretrained(tmp_path / "missing")


def test_with_tokenizer_takes_vocabulary_and_ids_from_the_tokenizer():
    builder = pytest.importorskip("molmo_edge.training.tokenizer_builder")
    tokenizer = builder.build_tokenizer()
    config = Molmo2Config.preset("tiny-test").with_tokenizer(tokenizer)
    assert config.text.vocab_size == tokenizer.base_vocab_size
    assert config.text.additional_vocab_size == tokenizer.additional_vocab_size
    assert config.image_patch_id == tokenizer.token_to_id("<im_patch>")
    assert config.image_col_id == tokenizer.token_to_id("<im_col>")
    assert config.frame_end_token_id == tokenizer.token_to_id("<frame_end>")
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    assert config.stop_token_ids == [tokenizer.eos_id]

"""load_checkpoint / save_checkpoint: layouts, shards, dtypes, tokenizer files, and bad folders."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from .model_test_inputs import image_inputs
from molmo_edge.errors import CheckpointError, ConfigError
from molmo_edge.model import Molmo2Config, Molmo2ForConditionalGeneration, load_checkpoint, save_checkpoint
from molmo_edge.model.weight_names import is_hub_layout


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def olmo_model():
    torch.manual_seed(1)
    return Molmo2ForConditionalGeneration(Molmo2Config.preset("tiny-test-olmo")).eval()


@pytest.mark.parametrize("layout", ["native", "hub"])
def test_save_then_load_gives_identical_weights_and_logits(olmo_model, tmp_path, layout):
    save_checkpoint(olmo_model, tmp_path, layout=layout)
    names = list(load_file(str(tmp_path / "model.safetensors")))
    assert is_hub_layout(names) == (layout == "hub")
    loaded = load_checkpoint(tmp_path)
    assert loaded.config == olmo_model.config
    assert _same_weights(loaded, olmo_model)
    inputs = image_inputs(olmo_model.config, seed=0)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, olmo_model(**inputs).logits)


def test_hub_layout_fuses_qkv_and_up_gate_in_reference_order(olmo_model, tmp_path):
    save_checkpoint(olmo_model, tmp_path, layout="hub")
    hub = load_file(str(tmp_path / "model.safetensors"))
    layer = olmo_model.decoder.layers[0]
    fused_qkv = hub["model.transformer.blocks.0.self_attn.att_proj.weight"]
    assert torch.equal(fused_qkv, torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                                             layer.self_attn.v_proj.weight]))
    fused_ff = hub["model.transformer.blocks.0.mlp.ff_proj.weight"]
    assert torch.equal(fused_ff, torch.cat([layer.mlp.up_proj.weight, layer.mlp.gate_proj.weight]))
    vocab = olmo_model.config.text.vocab_size
    assert hub["model.transformer.wte.embedding"].shape[0] == vocab
    assert hub["model.transformer.wte.new_embedding"].shape[0] == olmo_model.config.text.additional_vocab_size
    assert torch.equal(hub["model.vision_backbone.image_projector.w3.weight"],
                       olmo_model.connector.projector.up_proj.weight)


def test_transformers_loads_our_hub_layout(hf_molmo2, olmo_model, tmp_path):
    _, hf_model_cls = hf_molmo2
    save_checkpoint(olmo_model, tmp_path, layout="hub")
    hf = hf_model_cls.from_pretrained(tmp_path).eval()
    inputs = image_inputs(olmo_model.config, seed=3)
    with torch.no_grad():
        diff = (hf(**inputs).logits - olmo_model(**inputs).logits).abs().max().item()
    assert diff <= 1e-4


def test_sharded_checkpoint_with_index_loads(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path, max_shard_bytes=200_000)
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert _same_weights(load_checkpoint(tmp_path), tiny_model)


@pytest.mark.parametrize("dtype", [torch.bfloat16, "float16"])
def test_load_in_reduced_precision(tiny_model, tmp_path, dtype):
    save_checkpoint(tiny_model, tmp_path)
    loaded = load_checkpoint(tmp_path, dtype=dtype)
    expected_dtype = dtype if isinstance(dtype, torch.dtype) else torch.float16
    assert {p.dtype for p in loaded.parameters()} == {expected_dtype}
    assert loaded.decoder.rotary_plain.inv_freq.dtype == torch.float32  # positions stay exact


def test_tokenizer_and_generation_config_are_written(tmp_path, tiny_model):
    tok_src = tmp_path / "src"
    tok_src.mkdir()
    (tok_src / "tokenizer.json").write_text('{"version": "1.0"}')
    (tok_src / "tokenizer_config.json").write_text("{}")
    model = Molmo2ForConditionalGeneration(tiny_model.config.validated_copy(eos_token_id=5, pad_token_id=6))
    out = tmp_path / "out"
    save_checkpoint(model, out, tokenizer=tok_src)
    assert (out / "tokenizer.json").read_text() == '{"version": "1.0"}'
    assert (out / "tokenizer_config.json").is_file()
    assert json.loads((out / "generation_config.json").read_text()) == {"eos_token_id": 5, "pad_token_id": 6}
    assert Molmo2Config.from_pretrained(out).stop_token_ids == [5]


def test_tiny_checkpoint_fixture_round_trips_text(tiny_checkpoint_dir):
    from molmo_edge.processing.tokenizer import Tokenizer

    model = load_checkpoint(tiny_checkpoint_dir)
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint_dir)
    assert model.config.text.vocab_size == tokenizer.base_vocab_size
    assert model.config.eos_token_id == tokenizer.eos_id
    ids = torch.tensor([tokenizer.encode("Point to the red circle", add_special_tokens=True)])
    out = model.generate(ids, max_new_tokens=4)
    assert out.shape[1] <= ids.shape[1] + 4
    assert isinstance(tokenizer.decode(out[0, ids.shape[1]:].tolist()), str)


# ----- bad folders: one clear error each ------------------------------------------------------
def test_folder_without_weights(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_unknown_model_type(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "qwen2_vl"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="model_type 'qwen2_vl'"):
        load_checkpoint(tmp_path)


def test_mismatched_shapes_name_the_tensor(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["text_config"]["intermediate_size"] = 96
    config["adapter_config"]["intermediate_size"] = 96  # connector MLP too: several tensors change
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mlp\.\w+_proj\.weight has shape \(\d+, \d+\).*implies \(\d+, \d+\)"):
        load_checkpoint(tmp_path)


def test_missing_and_unexpected_keys_are_listed(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("model.language_model.norm.weight")
    state["model.language_model.extra_head.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. model\.language_model\.norm\.weight\).*"
                                              r"1 unexpected \(e\.g\. model\.language_model\.extra_head\.weight\)"):
        load_checkpoint(tmp_path)


def test_pickle_weights_are_refused_without_unpickling(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path)
    (tmp_path / "model.safetensors").unlink()

    class Boom:
        def __reduce__(self):  # would run at unpickling time
            return (exec, ("raise SystemExit('unpickled!')",))

    torch.save({"x": Boom()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle.*never unpickles"):
        load_checkpoint(tmp_path)


def test_damaged_safetensors_file(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)


def test_index_pointing_to_missing_shard(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path, max_shard_bytes=200_000)
    next(iter(sorted(tmp_path.glob("model-*.safetensors")))).unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp_path)


def test_tiny_checkpoint_runs_processor_outputs(tiny_checkpoint_dir):
    """The contract with molmo_edge.processing: the processor's keys are exactly forward's kwargs."""
    import numpy as np

    processor_module = pytest.importorskip("molmo_edge.processing.processor")
    processor = processor_module.Processor.from_pretrained(tiny_checkpoint_dir)
    model = load_checkpoint(tiny_checkpoint_dir)
    image = np.random.default_rng(0).integers(0, 256, (90, 140, 3), dtype=np.uint8)
    inputs = processor("Point to the red circle", images=[image])
    with torch.no_grad():
        out = model(**inputs)
        generated = model.generate(**inputs, max_new_tokens=3)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], model.config.text.vocab_size)
    assert generated.shape[1] <= inputs["input_ids"].shape[1] + 3

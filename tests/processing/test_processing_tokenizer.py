"""The tokenizer wrapper and the shipped model's small tokenizer."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.errors import CheckpointError
from molmo_edge.processing import IMAGE_TOKEN_OFFSETS, Tokenizer
from molmo_edge.training.tokenizer_builder import build_tokenizer, target_strings

from .processing_reference import write_json

# ------------------------------------------------------------------------------ the small tokenizer


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_round_trips(small_tokenizer, text):
    ids = small_tokenizer.encode(text)
    assert small_tokenizer.decode(ids, skip_special_tokens=False) == text
    assert all(0 <= i < small_tokenizer.base_vocab_size or i in small_tokenizer.special_ids for i in ids)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
       emoji=st.sampled_from(["🌍", "é", "中文", "\t\n"]))
def test_non_ascii_round_trips(small_tokenizer, text, emoji):
    sample = emoji + text + emoji
    assert small_tokenizer.decode(small_tokenizer.encode(sample), skip_special_tokens=False) == sample


@pytest.mark.parametrize("prefix", ["", " "])
def test_every_coordinate_is_one_token(small_tokenizer, prefix):
    numbers = [f"{n:03d}" for n in range(1000)] + ["1000"]
    ids = [small_tokenizer.encode(prefix + number) for number in numbers]
    assert all(len(one) == 1 for one in ids)
    assert len({one[0] for one in ids}) == len(numbers)  # all distinct


def test_answer_grammar_is_compact(small_tokenizer):
    answer = '<points coords="1 1 123 456 2 234 567">red circle</points>'
    # markup, image index, 6 coordinates/ids, '">', 2 label words, closing markup
    assert len(small_tokenizer.encode(answer)) == 12
    track = '<tracks coords="0.0 1 635 522;12.5 1 606 490 2 511 124">star</tracks>'
    # timestamps are two tokens each ("12" ".5"), the ';' one
    assert len(small_tokenizer.encode(track)) == 1 + 2 + 3 + 1 + 2 + 6 + 1 + 1 + 1
    assert len(small_tokenizer.encode("12.5")) == 2 and len(small_tokenizer.encode(" 7.0")) == 2


def test_every_building_block_is_one_token(small_tokenizer):
    # ".5"-style decimals are one token inside a number ("12.5"), not on their own
    blocks = [t for t in target_strings() if not t.startswith(".")]
    assert [t for t in blocks if len(small_tokenizer.encode(t)) != 1] == []


@pytest.mark.parametrize("prompt", [
    "Point to the red circle", "Point to all stars", "How many purple triangles are there?",
    "Track the orange square.", "Track all circles.", "There are none.",
])
def test_task_prompts_are_word_level(small_tokenizer, prompt):
    pieces = prompt.replace(".", " .").replace("?", " ?").split()
    assert len(small_tokenizer.encode(prompt)) == len(pieces)


def test_special_token_ids(small_tokenizer):
    tok = small_tokenizer
    base = tok.base_vocab_size
    assert base % 64 == 0 and base <= 3000 and tok.additional_vocab_size == 16 and tok.vocab_size == base + 16
    for name, offset in IMAGE_TOKEN_OFFSETS.items():
        assert tok.token_to_id(name) == base + offset
    for name in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert tok.token_to_id(name) < base and tok.token_to_id(name) in tok.special_ids
    assert tok.eos_id == tok.bos_id == tok.token_to_id("<|im_end|>")
    assert tok.pad_id == tok.token_to_id("<|endoftext|>")
    assert tok.encode("a<|im_end|>b<im_patch>") == [tok.token_to_id("a"), tok.eos_id, tok.token_to_id("b"),
                                                    base + 2]
    assert tok.encode("hi", add_special_tokens=True)[0] == tok.bos_id
    assert tok.decode(tok.encode("Point<|im_end|><im_col> to")) == "Point to"
    assert tok.id_to_token(base + 3) == "<im_col>"


def test_build_is_deterministic(tmp_path):
    first, second = build_tokenizer(), build_tokenizer()
    first.save(tmp_path / "a.json")
    second.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert first.to_json_str() == second.to_json_str()


def test_saved_tokenizer_reloads_and_matches_transformers(small_tokenizer, small_tokenizer_json):
    from transformers import PreTrainedTokenizerFast

    reloaded = Tokenizer.from_file(small_tokenizer_json)
    assert (reloaded.base_vocab_size, reloaded.additional_vocab_size) == (small_tokenizer.base_vocab_size, 16)
    assert (reloaded.bos_id, reloaded.eos_id, reloaded.pad_id) == (small_tokenizer.bos_id, small_tokenizer.eos_id,
                                                                   small_tokenizer.pad_id)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(small_tokenizer_json))
    for text in ["Counting the <points coords=\"1 1 050 500\">blue stars</points> shows a total of 1.",
                 "<|im_end|>0.0 <frame_start><im_patch><frame_end><|im_start|>user\nhi<|im_end|>\n", "ünïcödé 12.5"]:
        assert hf(text, add_special_tokens=False)["input_ids"] == reloaded.encode(text)
        assert hf.decode(reloaded.encode(text)) == text


# ------------------------------------------------------------------- a Qwen3-sized Molmo2 tokenizer


def _qwen_like_tokenizer_json(path) -> None:
    """A tokenizer.json with the real Molmo2 / Qwen3 ids (base vocabulary 151936) but few entries."""
    from tokenizers import AddedToken, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "<|endoftext|>": 151643, "<|im_start|>": 151644,
             "<|im_end|>": 151645}
    for name, offset in IMAGE_TOKEN_OFFSETS.items():
        vocab[name] = 151936 + offset
    backend = Backend(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in vocab if t.startswith("<")])
    backend.save(str(path))


def test_qwen_sized_base_vocabulary_from_the_image_tokens(tmp_path):
    _qwen_like_tokenizer_json(tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert tok.base_vocab_size == 151936 and tok.additional_vocab_size == 10
    assert tok.image_token_ids.image_patch == 151938 and tok.image_token_ids.frame_end == 151944
    assert tok.eos_id == tok.bos_id == 151645 and tok.pad_id == 151643


def test_vocabulary_split_and_special_names_from_checkpoint_files(tmp_path):
    _qwen_like_tokenizer_json(tmp_path / "tokenizer.json")
    write_json(tmp_path / "config.json", {"text_config": {"vocab_size": 151936, "additional_vocab_size": 128}})
    write_json(tmp_path / "tokenizer_config.json",
               {"bos_token": None, "eos_token": {"content": "<|im_end|>"}, "pad_token": "<|endoftext|>"})
    tok = Tokenizer.from_pretrained(tmp_path)
    assert (tok.base_vocab_size, tok.additional_vocab_size, tok.vocab_size) == (151936, 128, 152064)
    assert tok.bos_id == 151645 and tok.pad_id == 151643


def test_image_token_inside_the_base_vocabulary_is_refused(tmp_path):
    _qwen_like_tokenizer_json(tmp_path / "tokenizer.json")
    write_json(tmp_path / "config.json", {"text_config": {"vocab_size": 152000}})
    with pytest.raises(CheckpointError, match="inside the base vocabulary"):
        Tokenizer.from_pretrained(tmp_path)


def test_missing_or_broken_tokenizer_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Tokenizer.from_file(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="cannot parse"):
        Tokenizer.from_file(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0"}), encoding="utf-8")
    with pytest.raises(CheckpointError):
        Tokenizer.from_file(tmp_path / "tokenizer.json")


def test_tokenizer_without_image_tokens_is_refused_by_image_token_ids(tmp_path):
    from tokenizers import models
    from tokenizers import Tokenizer as Backend

    backend = Backend(models.WordLevel({"[UNK]": 0, "<|im_end|>": 1}, unk_token="[UNK]"))
    tok = Tokenizer(backend)
    with pytest.raises(CheckpointError, match="lacks the image special tokens"):
        tok.image_token_ids

"""The small tokenizer of the shipped model, built deterministically (no download, no training data).

Design:
* **Byte-level BPE**: the 256 byte symbols are in the vocabulary, so any text round-trips losslessly
  (encode -> decode is the identity).
* **A hand-picked vocabulary** for the synthetic grounding task instead of a trained one: the task's
  words, the answer markup (`<points coords="`, `">`, `</points>`, ...), and every coordinate
  `000`..`999`, `1000` as ONE token, with and without a leading space (in the Molmo2 grammar
  coordinates always follow a space, so the space-prefixed form is the one the model emits; one
  token per coordinate halves the answer length compared with a separate space token).
  Timestamps stay compact: `12.5` is `12` + `.5`.
* Merges are derived incrementally: each target string is segmented with the merges made so far
  and its pieces are then joined left to right by new, lower-priority merges. A new merge never
  changes the segmentation of an earlier target (it ranks after every merge that target uses), so
  every target encodes to a single token; `tests/processing/test_tokenizer_builder.py` checks it.
* Chat tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` are special tokens inside the base
  vocabulary (EOS = `<|im_end|>` is generable). The image special tokens follow the base
  vocabulary at the Molmo2 offsets (`IMAGE_TOKEN_OFFSETS`), padded to 16 additional ids.
* The base vocabulary is padded with reserved special tokens to a multiple of 64 (friendlier
  matrix shapes for the lm_head).

Building twice gives byte-identical tokenizer.json.
"""
from __future__ import annotations

from molmo_edge.processing.tokenizer import (END_OF_TEXT, IM_END, IM_START, IMAGE_TOKEN_OFFSETS,
                                             Tokenizer)

ADDITIONAL_VOCAB_SIZE = 16
BASE_VOCAB_MULTIPLE = 64

# Pre-tokenization (applied to the raw text before the byte mapping). Alternatives are tried in
# order at each position: the answer markup first so that it stays one piece, then GPT-2-style
# words / numbers / punctuation / whitespace. A number keeps its decimals ("12.5") in one piece.
PRETOKENIZE_PATTERN = (
    r' ?<points coords="| ?<tracks coords="|</points>|</tracks>|">'
    r"|'(?:s|t|re|ve|m|ll|d)"
    r"| ?\p{L}+"
    r"| ?\p{N}+(?:\.\p{N}+)?"
    r"| ?[^\s\p{L}\p{N}]+"
    r"|\s+(?!\S)|\s+"
)

MARKUP = ['<points coords="', '<tracks coords="', "</points>", "</tracks>", '">']
TASK_WORDS = [
    "a", "an", "the", "to", "of", "in", "is", "it", "if", "at", "no", "not", "and", "all", "are", "there",
    "how", "many", "say", "please", "none", "point", "points", "track", "tracks", "count", "counting",
    "shows", "total", "image", "video", "frame", "frames", "object", "objects", "fps", "alt",
]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]
SENTENCE_STARTS = ["Point", "How", "Track", "There", "Counting", "Please", "Image", "Count"]


def bytes_to_symbols() -> list[str]:
    """The byte-level alphabet: symbol of byte b at index b (the GPT-2 mapping: printable bytes map to
    themselves, the others to code points from 256 upwards, so every byte has a visible symbol)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def target_strings() -> list[str]:
    """Strings that must each become one token, shortest building blocks first."""
    digits = "0123456789"
    two = [a + b for a in digits for b in digits]
    three = [a + b + c for a in digits for b in digits for c in digits]
    targets: list[str] = []
    targets += two                                   # 00..99: ids, counts, timestamp seconds
    targets += [" " + d for d in digits]             # " 7": object ids and counts
    targets += [" " + n for n in two]
    targets += ["." + d for d in digits]             # ".5": timestamp decimals
    targets += [" " + n for n in three]              # " 123": coordinates as written in answers
    targets += three                                 # "123": the same without the space
    targets += ["1000", " 1000"]
    words = TASK_WORDS + COLOURS + SHAPES + [s + "s" for s in SHAPES]
    for word in words:
        targets += [word, " " + word]
    for word in SENTENCE_STARTS:
        targets += [word, " " + word]
    for markup in MARKUP:
        targets.append(markup)
        if markup.startswith("<points") or markup.startswith("<tracks"):
            targets.append(" " + markup)
    return targets


def _segment(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE as the tokenizers library applies it: merge the lowest-ranked adjacent pair (leftmost on ties)."""
    parts = list(symbols)
    while len(parts) > 1:
        best = min(((ranks[pair], i) for i, pair in enumerate(zip(parts, parts[1:])) if pair in ranks),
                   default=None)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def build_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (byte symbols, then merged tokens in creation order) and the ordered merge list."""
    alphabet = bytes_to_symbols()
    vocab: dict[str, int] = {symbol: i for i, symbol in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for target in target_strings():
        mapped = [alphabet[b] for b in target.encode("utf-8")]
        parts = _segment(mapped, ranks)
        while len(parts) > 1:  # join the remaining pieces left to right with new merges
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            joined = parts[0] + parts[1]
            vocab.setdefault(joined, len(vocab))
            parts = [joined, *parts[2:]]
    return vocab, merges


def build_tokenizer() -> Tokenizer:
    """The shipped model's tokenizer (see the module docstring)."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    vocab, merges = build_vocab_and_merges()
    chat_tokens = [END_OF_TEXT, IM_START, IM_END]
    for token in chat_tokens:
        vocab[token] = len(vocab)
    # Reserved special tokens pad the base vocabulary (never produced by encoding ordinary text).
    reserved = []
    while len(vocab) % BASE_VOCAB_MULTIPLE:
        reserved.append(f"<|reserved_{len(reserved)}|>")
        vocab[reserved[-1]] = len(vocab)
    base_vocab_size = len(vocab)

    image_tokens = {offset: name for name, offset in IMAGE_TOKEN_OFFSETS.items()}
    extra_tokens = [image_tokens.get(i, f"<|mm_reserved_{i}|>") for i in range(ADDITIONAL_VOCAB_SIZE)]
    for token in extra_tokens:
        vocab[token] = len(vocab)

    backend = Backend(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                                 fuse_unk=False, byte_fallback=False, ignore_merges=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    # Specials are already in the BPE vocabulary, so add_special_tokens reuses their ids.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in chat_tokens + reserved + extra_tokens])
    return Tokenizer(backend, base_vocab_size=base_vocab_size, additional_vocab_size=ADDITIONAL_VOCAB_SIZE,
                     bos_token=IM_END, eos_token=IM_END, pad_token=END_OF_TEXT)


__all__ = ["build_tokenizer", "build_vocab_and_merges", "target_strings", "PRETOKENIZE_PATTERN",
           "ADDITIONAL_VOCAB_SIZE"]

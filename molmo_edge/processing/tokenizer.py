"""The tokenizer: a thin wrapper on the `tokenizers` library reading a Hugging Face tokenizer.json.

transformers is not needed at run time. The wrapper adds what Molmo2 needs on top of the plain
tokenizer: the split of the id space into

* the *base vocabulary* `[0, base_vocab_size)`: every id the lm_head can emit (ordinary text
  tokens and the chat tokens `<|im_start|>`, `<|im_end|>`, `<|endoftext|>`), and
* the *additional vocabulary* `[base_vocab_size, base_vocab_size + additional_vocab_size)`: the
  image special tokens, which have embedding rows but no lm_head rows, so they are never generated.

In a real Molmo2 checkpoint (Qwen3 vocabulary) base_vocab_size is 151936 and `<im_start>` is
151936 + 0; the other image tokens follow at the fixed offsets of `IMAGE_TOKEN_OFFSETS`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from molmo_edge.errors import CheckpointError

# Image special tokens and their offset from base_vocab_size, in the Molmo2 order.
IMAGE_TOKEN_OFFSETS: dict[str, int] = {
    "<im_start>": 0,
    "<im_end>": 1,
    "<im_patch>": 2,
    "<im_col>": 3,
    "<low_res_im_start>": 4,
    "<|image|>": 5,
    "<im_low>": 6,
    "<frame_start>": 7,
    "<frame_end>": 8,
    "<|video|>": 9,
}

# Chat tokens of the Qwen3 / ChatML template. Molmo2 uses `<|im_end|>` as both BOS and EOS.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"

_EOS_CANDIDATES = (IM_END, END_OF_TEXT, "</s>")
_PAD_CANDIDATES = (END_OF_TEXT, "<|pad|>", "<pad>")


@dataclass(frozen=True)
class ImageTokenIds:
    """Ids of the image special tokens of one tokenizer (None where the tokenizer lacks an optional one)."""

    image_start: int
    image_end: int
    image_patch: int
    image_col: int
    low_res_image_start: int
    frame_start: int
    frame_end: int
    image_low: int | None = None
    image_placeholder: int | None = None
    video_placeholder: int | None = None

    @property
    def multimodal_ids(self) -> frozenset[int]:
        """Ids that get mm_token_type_id 1: every image/frame special token that can appear in a prompt."""
        ids = {self.image_patch, self.image_col, self.image_start, self.low_res_image_start,
               self.frame_start, self.image_end, self.frame_end}
        if self.image_low is not None:
            ids.add(self.image_low)
        return frozenset(ids)


def _token_name(value: object) -> str | None:
    """tokenizer_config.json writes special tokens either as a string or as {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}; the file is missing or not valid JSON") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


class Tokenizer:
    """Text <-> ids for Molmo2 prompts and answers (see the module docstring for the id layout)."""

    def __init__(self, backend, *, base_vocab_size: int | None = None,
                 additional_vocab_size: int | None = None, bos_token: str | None = None,
                 eos_token: str | None = None, pad_token: str | None = None):
        self._backend = backend
        vocab = backend.get_vocab(with_added_tokens=True)
        if not vocab:
            raise CheckpointError("the tokenizer has an empty vocabulary")
        max_id = max(vocab.values())

        if base_vocab_size is None:
            # The first image token marks the end of the base vocabulary (151936 for Qwen3 Molmo2).
            im_start = backend.token_to_id("<im_start>")
            base_vocab_size = im_start if im_start is not None else max_id + 1
        if additional_vocab_size is None:
            additional_vocab_size = max(0, max_id + 1 - base_vocab_size)
        self.base_vocab_size = int(base_vocab_size)
        self.additional_vocab_size = int(additional_vocab_size)
        for name in IMAGE_TOKEN_OFFSETS:
            token_id = backend.token_to_id(name)
            if token_id is not None and token_id < self.base_vocab_size:
                raise CheckpointError(
                    f"image token {name} has id {token_id}, inside the base vocabulary "
                    f"(size {self.base_vocab_size}); image tokens must come after it. Check "
                    "text_config.vocab_size in config.json against tokenizer.json")

        self.eos_token = eos_token or self._first_present(_EOS_CANDIDATES)
        if self.eos_token is None or backend.token_to_id(self.eos_token) is None:
            raise CheckpointError(
                f"the tokenizer has no end-of-sequence token (looked for {eos_token or _EOS_CANDIDATES}); "
                "add one or name it as eos_token in tokenizer_config.json")
        # Molmo2's processor prepends `bos_token or eos_token`; Qwen3 has no BOS, so it is <|im_end|>.
        self.bos_token = bos_token if bos_token and backend.token_to_id(bos_token) is not None else self.eos_token
        self.pad_token = (pad_token if pad_token and backend.token_to_id(pad_token) is not None
                          else self._first_present(_PAD_CANDIDATES) or self.eos_token)
        self._special_ids = frozenset(
            token_id for token_id, added in backend.get_added_tokens_decoder().items() if added.special)

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_file(cls, path: str | Path, *, base_vocab_size: int | None = None,
                  additional_vocab_size: int | None = None, bos_token: str | None = None,
                  eos_token: str | None = None, pad_token: str | None = None) -> "Tokenizer":
        """Load a tokenizer.json. Without `base_vocab_size` it is the id of `<im_start>`."""
        from tokenizers import Tokenizer as _Backend

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"tokenizer file {path} does not exist; a checkpoint folder needs a tokenizer.json")
        try:
            backend = _Backend.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise CheckpointError(f"cannot parse {path} as a tokenizers tokenizer.json: {exc}") from exc
        return cls(backend, base_vocab_size=base_vocab_size, additional_vocab_size=additional_vocab_size,
                   bos_token=bos_token, eos_token=eos_token, pad_token=pad_token)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Tokenizer":
        """Load `folder/tokenizer.json`, taking the vocabulary split from `config.json` (text_config) and the
        BOS/EOS/pad names from `tokenizer_config.json` / `special_tokens_map.json` when they exist."""
        folder = Path(folder)
        base = additional = None
        if (folder / "config.json").is_file():
            config = _read_json(folder / "config.json")
            text_config = config.get("text_config") or config.get("llm_config") or {}
            base = text_config.get("vocab_size", config.get("vocab_size"))
            additional = text_config.get("additional_vocab_size", config.get("additional_vocab_size"))
        names: dict[str, str | None] = {"bos_token": None, "eos_token": None, "pad_token": None}
        for file_name in ("special_tokens_map.json", "tokenizer_config.json"):  # later file wins
            if (folder / file_name).is_file():
                data = _read_json(folder / file_name)
                for key in names:
                    names[key] = _token_name(data.get(key)) or names[key]
        return cls.from_file(folder / "tokenizer.json", base_vocab_size=base, additional_vocab_size=additional,
                             **names)

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json (the vocabulary split is not stored in it: it follows from `<im_start>`)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._backend.save(str(path), pretty=True)

    def to_json_str(self) -> str:
        return self._backend.to_str(pretty=True)

    # ------------------------------------------------------------------------------ ids
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`. Special-token strings inside the text (`<|im_end|>`, `<im_patch>`, ...)
        become their ids. `add_special_tokens=True` prepends the BOS id."""
        ids = self._backend.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_special_tokens else list(ids)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(int(token_id))

    def _first_present(self, names: Iterable[str]) -> str | None:
        return next((name for name in names if self._backend.token_to_id(name) is not None), None)

    @property
    def bos_id(self) -> int:
        return self._backend.token_to_id(self.bos_token)

    @property
    def eos_id(self) -> int:
        return self._backend.token_to_id(self.eos_token)

    @property
    def pad_id(self) -> int:
        return self._backend.token_to_id(self.pad_token)

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table: base + additional vocabulary."""
        return self.base_vocab_size + self.additional_vocab_size

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of all special tokens (chat and image tokens); decode(skip_special_tokens=True) drops them."""
        return self._special_ids

    @property
    def image_token_ids(self) -> ImageTokenIds:
        """The image special token ids; CheckpointError when the tokenizer lacks a required one."""
        found = {name: self._backend.token_to_id(name) for name in IMAGE_TOKEN_OFFSETS}
        required = ("<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<low_res_im_start>",
                    "<frame_start>", "<frame_end>")
        missing = [name for name in required if found[name] is None]
        if missing:
            raise CheckpointError(
                f"the tokenizer lacks the image special tokens {missing}; a Molmo2 tokenizer.json must define them")
        return ImageTokenIds(
            image_start=found["<im_start>"], image_end=found["<im_end>"], image_patch=found["<im_patch>"],
            image_col=found["<im_col>"], low_res_image_start=found["<low_res_im_start>"],
            frame_start=found["<frame_start>"], frame_end=found["<frame_end>"], image_low=found["<im_low>"],
            image_placeholder=found["<|image|>"], video_placeholder=found["<|video|>"])

    @property
    def backend(self):
        """The underlying `tokenizers.Tokenizer`."""
        return self._backend

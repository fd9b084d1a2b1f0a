"""Where the visual tokens go in the prompt: the token layout of images and video frames.

One image (grid = lowres_rows, lowres_cols, highres_rows, highres_cols):
    <low_res_im_start> + lowres_rows × (lowres_cols × <im_patch> [+ <im_col>]) + <im_end>
    <im_start>         + highres_rows × (highres_cols × <im_patch> [+ <im_col>]) + <im_end>
(`use_single_crop_start_token=False` starts the low-res part with <im_start>; the column tokens
follow `image_use_col_tokens` and `use_single_crop_col_tokens`.)

Several images: the chat template writes "Image 1" before the first image, "Image 2" before the
second, ... (plain text); a single image has no label.

Video frame i at time t (seconds, one decimal):
    (" " if i > 0) + f"{t:.1f} " + <frame_start> + rows × (cols × <im_patch> [+ <im_col>]) + <frame_end>
(<im_start>/<im_end> instead of the frame tokens when `use_frame_special_tokens=False`.)

The timestamps and labels are TEXT between special tokens. A `TokenSequence` keeps text and
special-token runs as separate pieces; each text piece is tokenized on its own, which gives exactly
the ids of tokenizing the whole prompt string at once (the tokenizer splits on special tokens first).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from molmo_edge.processing.config import ProcessorConfig
from molmo_edge.processing.tokenizer import ImageTokenIds, Tokenizer

IM_START, IM_END, IM_PATCH, IM_COL = "<im_start>", "<im_end>", "<im_patch>", "<im_col>"
LOW_RES_IM_START, FRAME_START, FRAME_END = "<low_res_im_start>", "<frame_start>", "<frame_end>"


class TokenSequence:
    """A prompt under construction: text pieces and runs of special-token names, in order."""

    def __init__(self) -> None:
        self._pieces: list[str | list[str]] = []

    def add_text(self, text: str) -> "TokenSequence":
        if not text:
            return self
        if self._pieces and isinstance(self._pieces[-1], str):
            self._pieces[-1] += text  # adjacent text is one piece, as in the full prompt string
        else:
            self._pieces.append(text)
        return self

    def add_tokens(self, names: Iterable[str]) -> "TokenSequence":
        names = list(names)
        if names:
            if self._pieces and isinstance(self._pieces[-1], list):
                self._pieces[-1].extend(names)
            else:
                self._pieces.append(names)
        return self

    def extend(self, other: "TokenSequence") -> "TokenSequence":
        for piece in other._pieces:
            self.add_text(piece) if isinstance(piece, str) else self.add_tokens(piece)
        return self

    def to_string(self) -> str:
        """The prompt as one string (what the Hugging Face processor would tokenize)."""
        return "".join(piece if isinstance(piece, str) else "".join(piece) for piece in self._pieces)

    def to_ids(self, tokenizer: Tokenizer) -> list[int]:
        """Token ids: text pieces through the tokenizer, special-token runs looked up by name."""
        ids: list[int] = []
        lookup: dict[str, int] = {}
        for piece in self._pieces:
            if isinstance(piece, str):
                ids.extend(tokenizer.encode(piece))
                continue
            for name in piece:
                if name not in lookup:
                    token_id = tokenizer.token_to_id(name)
                    if token_id is None:
                        raise KeyError(f"the tokenizer has no token {name}")
                    lookup[name] = token_id
                ids.append(lookup[name])
        return ids


def _rows(n_rows: int, n_cols: int, col_token: bool) -> list[str]:
    row = [IM_PATCH] * n_cols + ([IM_COL] if col_token else [])
    return row * n_rows


def image_token_names(grid: Sequence[int], cfg: ProcessorConfig) -> list[str]:
    """Special tokens of one image with this (lowres_rows, lowres_cols, highres_rows, highres_cols) grid."""
    low_rows, low_cols, high_rows, high_cols = (int(v) for v in grid)
    start = LOW_RES_IM_START if cfg.use_single_crop_start_token else IM_START
    return ([start, *_rows(low_rows, low_cols, cfg.single_crop_col_tokens), IM_END,
             IM_START, *_rows(high_rows, high_cols, cfg.image_use_col_tokens), IM_END])


def frame_token_names(rows: int, cols: int, cfg: ProcessorConfig) -> list[str]:
    """Special tokens of one video frame with a rows × cols token grid."""
    start, end = (FRAME_START, FRAME_END) if cfg.use_frame_special_tokens else (IM_START, IM_END)
    return [start, *_rows(rows, cols, cfg.video_use_col_tokens), end]


def image_layout(grids: Sequence[Sequence[int]], cfg: ProcessorConfig) -> TokenSequence:
    """The visual part of a prompt with these images, labelled "Image i" when there are several."""
    sequence = TokenSequence()
    for i, grid in enumerate(grids):
        if len(grids) > 1:
            sequence.add_text(f"Image {i + 1}")
        sequence.add_tokens(image_token_names(grid, cfg))
    return sequence


def video_layout(rows: int, cols: int, timestamps_s: Sequence[float], cfg: ProcessorConfig) -> TokenSequence:
    """The visual part of a prompt with one video: each frame preceded by its timestamp text."""
    sequence = TokenSequence()
    frame = frame_token_names(rows, cols, cfg)
    for i, t_s in enumerate(timestamps_s):
        sequence.add_text((" " if i > 0 else "") + f"{float(t_s):.1f} ")
        sequence.add_tokens(frame)
    return sequence


def mm_token_type_ids(input_ids: Sequence[int], ids: ImageTokenIds) -> list[int]:
    """1 at every image/frame special token (patch, col, starts, ends, frame tokens), 0 elsewhere."""
    visual = ids.multimodal_ids
    return [1 if token_id in visual else 0 for token_id in input_ids]

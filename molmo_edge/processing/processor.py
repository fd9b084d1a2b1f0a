"""The processor: text + images / video -> the model's keyword tensors.

    processor = Processor.from_pretrained("path/to/checkpoint")
    inputs = processor("Point to the red circle", images=image_rgb)
    logits = model(**inputs).logits

The keys of `ModelInputs` are exactly the keyword arguments of the model's forward:
input_ids [1, S], mm_token_type_ids [1, S], and with images pixel_values [n_crops, P, ps²·3],
image_token_pooling [T, K], image_grids [n_images, 4]; with a video pixel_values_videos
[n_frames, P, ps²·3], video_token_pooling [T, K], video_grids [1, 3].

The stream caches each frame's visual tokens, so for a window it needs only the ids:
`video_prompt_from_frames(n_frames, timestamps_s, text)` (and `image_prompt(grids, text)` for images).
Timestamps in a prompt are relative to the first frame of the clip or window.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from molmo_edge.errors import CheckpointError
from molmo_edge.processing.config import ProcessorConfig
from molmo_edge.processing.errors import InputError
from molmo_edge.processing.image import ImageInputs, concat_images, preprocess_image
from molmo_edge.processing.layout import TokenSequence, image_layout, mm_token_type_ids, video_layout
from molmo_edge.processing.prompt import chat_prompt
from molmo_edge.processing.tokenizer import Tokenizer
from molmo_edge.processing.video import VideoInputs, frame_pooling, preprocess_frame, preprocess_frames

# config.json token-id fields and the tokenizer tokens they must name
_CONFIG_TOKEN_FIELDS = {
    "image_start_token_id": "<im_start>", "image_end_token_id": "<im_end>", "image_patch_id": "<im_patch>",
    "image_col_id": "<im_col>", "low_res_image_start_token_id": "<low_res_im_start>",
    "frame_start_token_id": "<frame_start>", "frame_end_token_id": "<frame_end>",
}


class ModelInputs(dict):
    """A dict of torch tensors keyed by the model's forward keyword names."""

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ModelInputs":
        """Move every tensor to `device`; `dtype` applies to the float tensors (pixels) only."""
        moved = ModelInputs()
        for key, value in self.items():
            if dtype is not None and value.is_floating_point():
                moved[key] = value.to(device=device, dtype=dtype)
            else:
                moved[key] = value.to(device=device)
        return moved


def _relative_times(timestamps_s: Sequence[float], n_frames: int) -> np.ndarray:
    """Timestamps in seconds from the first frame, after checking one per frame, finite, not decreasing."""
    times = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
    if len(times) != n_frames:
        raise InputError(f"got {len(times)} timestamps for {n_frames} frames; give one time in seconds per frame")
    if not np.all(np.isfinite(times)):
        raise InputError("timestamps must be finite numbers of seconds")
    if np.any(np.diff(times) < 0):
        raise InputError("timestamps must not decrease")
    return times - times[0]


class Processor:
    """Builds prompts and visual inputs for one tokenizer and one set of preprocessing settings."""

    def __init__(self, tokenizer: Tokenizer, cfg: ProcessorConfig | None = None):
        self.tokenizer = tokenizer
        self.cfg = cfg or ProcessorConfig()
        self.token_ids = tokenizer.image_token_ids

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Processor":
        """Tokenizer and settings of a checkpoint or bundle folder. CheckpointError when config.json names
        image token ids that differ from the tokenizer's."""
        folder = Path(folder)
        processor = cls(Tokenizer.from_pretrained(folder), ProcessorConfig.from_pretrained(folder))
        if (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            for field, token in _CONFIG_TOKEN_FIELDS.items():
                expected = processor.tokenizer.token_to_id(token)
                if field in config and config[field] != expected:
                    raise CheckpointError(
                        f"{folder}/config.json sets {field}={config[field]} but tokenizer.json has {token}={expected}; "
                        "the tokenizer does not belong to this model")
        return processor

    def save_pretrained(self, folder: str | Path) -> None:
        """Write tokenizer.json and processor_config.json into `folder`."""
        folder = Path(folder)
        self.tokenizer.save(folder / "tokenizer.json")
        self.cfg.save_pretrained(folder)

    # --------------------------------------------------------------------------- visual inputs
    def preprocess_image(self, image: np.ndarray) -> ImageInputs:
        return preprocess_image(image, self.cfg)

    def preprocess_frames(self, frames: Sequence[np.ndarray] | np.ndarray) -> VideoInputs:
        return preprocess_frames(frames, self.cfg)

    def preprocess_frame(self, frame: np.ndarray) -> VideoInputs:
        return preprocess_frame(frame, self.cfg)

    # ------------------------------------------------------------------------------- prompts
    def _ids(self, sequence: TokenSequence) -> tuple[torch.Tensor, torch.Tensor]:
        ids = sequence.to_ids(self.tokenizer)
        mm = mm_token_type_ids(ids, self.token_ids)
        return (torch.tensor([ids], dtype=torch.int64), torch.tensor([mm], dtype=torch.int64))

    def _visual_sequence(self, image_grids: Sequence[Sequence[int]], video_grid: tuple[int, int] | None,
                         timestamps_s: np.ndarray | None) -> TokenSequence:
        sequence = image_layout(image_grids, self.cfg) if image_grids else TokenSequence()
        if video_grid is not None:
            sequence.extend(video_layout(video_grid[0], video_grid[1], timestamps_s, self.cfg))
        return sequence

    def image_prompt(self, grids: Sequence[Sequence[int]], text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids [1, S], mm_token_type_ids [1, S]) for images with these grids, whose visual tokens
        are computed elsewhere."""
        return self._ids(chat_prompt(self.tokenizer.bos_token, self._visual_sequence(grids, None, None), text))

    def video_prompt_from_frames(self, n_frames: int, timestamps_s: Sequence[float],
                                 text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids [1, S], mm_token_type_ids [1, S]) for a window of n_frames whose visual tokens are
        already computed (the stream's feature cache). Timestamps become relative to the first frame."""
        if n_frames < 1:
            raise InputError("a video prompt needs at least one frame")
        _, rows, cols = frame_pooling(self.cfg)
        times = _relative_times(timestamps_s, n_frames)
        visual = self._visual_sequence([], (rows, cols), times)
        return self._ids(chat_prompt(self.tokenizer.bos_token, visual, text))

    def text_prompt(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A prompt without visual input."""
        return self._ids(chat_prompt(self.tokenizer.bos_token, None, text))

    # ------------------------------------------------------------------------------- the call
    def __call__(self, text: str, images: np.ndarray | Sequence[np.ndarray] | None = None,
                 video: tuple[Sequence[np.ndarray] | np.ndarray, Sequence[float]] | None = None) -> ModelInputs:
        """Model inputs for one prompt. `images`: one RGB uint8 array or a list of them; `video`:
        (frames, timestamps_s) with one time in seconds per frame (e.g. from `read_video`)."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        inputs = ModelInputs()
        image_items: list[ImageInputs] = []
        if images is not None:
            image_list = [images] if isinstance(images, np.ndarray) and images.ndim in (2, 3) else list(images)
            if not image_list:
                raise InputError("images is an empty list; pass None for a text-only prompt")
            image_items = [preprocess_image(image, self.cfg) for image in image_list]
            batch = concat_images(image_items)
            inputs.update(pixel_values=batch.pixel_values, image_token_pooling=batch.token_pooling,
                          image_grids=batch.grids)
        video_grid = times = None
        if video is not None:
            if not isinstance(video, (tuple, list)) or len(video) != 2:
                raise InputError("video must be a pair (frames, timestamps_s)")
            frames, timestamps_s = video
            clip = preprocess_frames(frames, self.cfg)
            times = _relative_times(timestamps_s, clip.n_frames)
            video_grid = clip.grid[1:]
            inputs.update(pixel_values_videos=clip.pixel_values, video_token_pooling=clip.token_pooling,
                          video_grids=torch.tensor([clip.grid], dtype=torch.int64))
        visual = self._visual_sequence([item.grid for item in image_items], video_grid, times)
        input_ids, mm = self._ids(chat_prompt(self.tokenizer.bos_token, visual, text))
        inputs["input_ids"], inputs["mm_token_type_ids"] = input_ids, mm
        return inputs

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

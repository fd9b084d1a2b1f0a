"""The Engine: images, video and cached frame features in; text and points out. Any backend.

    with Engine.from_pretrained() as engine:                  # the shipped model, torch backend
        answer = engine.ask_image(image_rgb, "Point to the red circle")
        points = engine.point(image_rgb, "red circle")        # -> GroundingResult
        answer = engine.ask_video(frames, timestamps_s, "Track the blue star.")

        # the stream's path: encode every frame once, prompt windows from the cached features
        features = [engine.encode_frame(f) for f in frames]
        answer = engine.ask_frames(features[-4:], timestamps_s[-4:], "Track all stars.")

`ask_frames` builds exactly the prompt `ask_video` builds for the same frames (timestamps
relative to the first frame of the window), so both give the same answer; per-frame encoding
costs nothing extra because the ViT sees each frame on its own either way.

Timings (ms) of every answer: vision (preprocessing + ViT + connector), prefill, decode, total.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from molmo_edge.engine.backend import Backend
from molmo_edge.engine.generation import GenerationOptions, GenerationResult, generate, merge_options
from molmo_edge.errors import InputError
from molmo_edge.grounding import GroundedPoint, GroundingResult, parse
from molmo_edge.processing.prompt import prompt_for_query

ImageLike = np.ndarray | str | Path


@dataclass(frozen=True)
class FrameFeatures:
    """One video frame after ViT + connector: what the stream caches per frame.

    visual_tokens: [T_f, D] on the backend's device (T_f = rows·cols pooled tokens, 81 for 378 px
    frames with 3×3 pooling). width_px / height_px: the frame as captured (for points in pixels).
    encode_ms: time spent preprocessing and encoding it.
    """

    visual_tokens: torch.Tensor
    width_px: int
    height_px: int
    encode_ms: float = 0.0

    @property
    def n_tokens(self) -> int:
        return int(self.visual_tokens.shape[0])


@dataclass
class Answer:
    """The model's answer: its text, the points parsed from it, and where the time went.

    image_sizes: (width_px, height_px) per image of the prompt, or per frame for video.
    """

    text: str
    grounding: GroundingResult
    timings_ms: dict[str, float]
    generation: GenerationResult
    image_sizes: list[tuple[int, int]]

    @property
    def points(self) -> list[GroundedPoint]:
        return self.grounding.points

    def points_px(self) -> list[tuple[GroundedPoint, float, float]]:
        """(point, u_px, v_px) for every point, in the pixels of the image (or frame) it belongs to."""
        out = []
        for point in self.grounding.points:
            index = (point.image_index or 1) - 1
            width, height = self.image_sizes[index] if 0 <= index < len(self.image_sizes) else self.image_sizes[0]
            u_px, v_px = point.to_pixels(width, height)
            out.append((point, u_px, v_px))
        return out


def _as_rgb(image: ImageLike) -> np.ndarray:
    if isinstance(image, (str, Path)):
        from molmo_edge.engine.image_file import read_image_rgb

        return read_image_rgb(image)
    if not isinstance(image, np.ndarray):
        raise InputError(f"an image must be an RGB uint8 array [H, W, 3] or a file path, got {type(image).__name__}")
    return image


def _size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


class Engine:
    """Prompts, images and video around one Backend (see the module docstring)."""

    def __init__(self, backend: Backend, options: GenerationOptions | None = None) -> None:
        self.backend = backend
        self.processor = backend.processor
        #: defaults for every call; keyword arguments of a call (max_new_tokens=..., seed=...) override them
        self.options = options or GenerationOptions()

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **load_kwargs: Any) -> "Engine":
        """Engine over `load_backend(path, **load_kwargs)` (None = the shipped model)."""
        from molmo_edge.engine.loading import load_backend

        return cls(load_backend(path, **load_kwargs))

    # ----- images ------------------------------------------------------------------------------
    def ask_image(self, image: ImageLike | Sequence[ImageLike], text: str, **generation: Any) -> Answer:
        """Ask about one image or several (a list, in prompt order); `text` is used as it is."""
        images = [_as_rgb(i) for i in image] if isinstance(image, (list, tuple)) else [_as_rgb(image)]
        if not images:
            raise InputError("ask_image needs at least one image")
        start = time.perf_counter()
        inputs = self.processor(text, images=images)
        tokens = self.backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
        vision_ms = (time.perf_counter() - start) * 1e3
        result = self._generate(inputs["input_ids"], inputs["mm_token_type_ids"], tokens, vision_ms, generation)
        return self._answer(result, "image", [_size(i) for i in images])

    def point(self, image: ImageLike | Sequence[ImageLike], query: str, **generation: Any) -> GroundingResult:
        """Points on `query` ("red circle" becomes "Point to red circle"; full sentences are kept)."""
        return self.ask_image(image, self.prompt(query, "point"), **generation).grounding

    def count(self, image: ImageLike | Sequence[ImageLike], query: str, **generation: Any) -> GroundingResult:
        """Count by pointing ("stars" becomes "How many stars are there?"); the number is `.count`."""
        return self.ask_image(image, self.prompt(query, "count"), **generation).grounding

    @staticmethod
    def prompt(query: str, task: str = "point") -> str:
        """The Molmo2 prompt for a user query: a bare label becomes the task prompt (point / count /
        track), a full sentence or question is kept as it is."""
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query is empty; say what to look for, e.g. 'red circle'")
        return prompt_for_query(query, task)

    # ----- video -------------------------------------------------------------------------------
    def ask_video(self, frames: Sequence[np.ndarray] | np.ndarray, timestamps_s: Sequence[float], text: str,
                  **generation: Any) -> Answer:
        """Ask about a clip: RGB frames with their times in seconds (relative times go into the prompt).
        All frames go through the ViT in one call."""
        start = time.perf_counter()
        inputs = self.processor(text, video=(frames, timestamps_s))
        tokens = self.backend.encode_visual(inputs["pixel_values_videos"], inputs["video_token_pooling"])
        vision_ms = (time.perf_counter() - start) * 1e3
        sizes = [_size(f) for f in frames]
        result = self._generate(inputs["input_ids"], inputs["mm_token_type_ids"], tokens, vision_ms, generation)
        return self._answer(result, "video", sizes)

    def ask_video_file(self, path: str | Path, text: str, **generation: Any) -> Answer:
        """Sample a video file at the model's fps (`processing.read_video`) and ask about it."""
        from molmo_edge.processing.video_file import read_video

        frames, timestamps_s = read_video(path, self.processor.cfg)
        return self.ask_video(frames, timestamps_s, text, **generation)

    def encode_frame(self, frame_rgb: np.ndarray) -> FrameFeatures:
        """ViT + connector for one frame: [T_f, D] visual tokens to cache and reuse in `ask_frames`."""
        start = time.perf_counter()
        inputs = self.processor.preprocess_frame(frame_rgb)
        tokens = self.backend.encode_visual(inputs.pixel_values, inputs.token_pooling)  # [T_f, D]
        encode_ms = (time.perf_counter() - start) * 1e3
        return FrameFeatures(visual_tokens=tokens, width_px=int(frame_rgb.shape[1]),
                             height_px=int(frame_rgb.shape[0]), encode_ms=encode_ms)

    def ask_frames(self, features: Sequence[FrameFeatures], timestamps_s: Sequence[float], text: str, *,
                   vision_ms: float = 0.0, **generation: Any) -> Answer:
        """Ask about a window of already encoded frames (one timestamp in seconds per frame).

        vision_ms: what to report as vision time (the stream passes the encode time of the frames new
        to this window); the cached tokens themselves cost nothing here.
        """
        features = list(features)
        if not features:
            raise InputError("ask_frames needs at least one frame")
        counts = {f.n_tokens for f in features}
        if len(counts) != 1:
            raise InputError(f"the frames have different token counts {sorted(counts)}; encode every frame of "
                             "a window with the same engine")
        input_ids, mm = self.processor.video_prompt_from_frames(len(features), timestamps_s, text)
        tokens = torch.cat([f.visual_tokens for f in features])  # [n_frames · T_f, D], frame order
        result = self._generate(input_ids, mm, tokens, vision_ms, generation)
        return self._answer(result, "video", [(f.width_px, f.height_px) for f in features])

    # ----- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----- internals ------------------------------------------------------------------------------
    def _generate(self, input_ids: torch.Tensor, mm: torch.Tensor, tokens: torch.Tensor | None,
                  vision_ms: float, generation: dict[str, Any]) -> GenerationResult:
        options = merge_options(self.options, generation)
        return generate(self.backend, input_ids, mm, tokens, options, vision_ms=vision_ms)

    @staticmethod
    def _answer(result: GenerationResult, kind: str, sizes: list[tuple[int, int]]) -> Answer:
        return Answer(text=result.text, grounding=parse(result.text, kind_hint=kind), timings_ms=result.timings_ms,
                      generation=result, image_sizes=sizes)


__all__ = ["Answer", "Engine", "FrameFeatures"]

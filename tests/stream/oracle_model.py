"""An oracle model for the runtime tests: a real, deterministic `Backend` that answers from ground truth.

What is under test in the tracking tests is window -> parse -> tracker -> events, not the model. A
random-init model writes garbage, and the shipped model is not perfect, so neither can show that
track ids survive from window to window. This backend is a model that is always right: it runs
the real Backend contract (encode_visual -> prefill -> decode, driven by the real generation loop
through the real Engine), and its "weights" are the synthetic scene itself:

- `encode_visual` recognises which scene frame it was given (exact match of the preprocessed
  pixels against the scene rendered at the source's frame times) and returns visual tokens
  [T_f, D] that carry that frame's time in channel 0;
- `prefill` reads the window's frame times back from the visual tokens and the question from the
  prompt tokens ("Track the red circle.", "Point to all stars", "How many blue squares are
  there?"), and writes the answer the training data teaches (`training.tasks.build_example`:
  window-local ids 1.. in the order the grammar writes them, timestamps relative to the window);
- `decode` then emits that answer token by token (one-hot logits), then EOS.

Because window-local ids follow the grammar's order, the same object usually has different ids in
different windows, exactly as with a real model: the tracker must stitch them.
Once the shipped model exists the same tests can run with it instead (a looser id check).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from molmo_edge.engine.backend import Backend, BackendState, real_token_rows
from molmo_edge.model.config import Molmo2Config
from molmo_edge.processing.processor import Processor
from molmo_edge.training.scenes import SceneSimulator
from molmo_edge.training.tasks import Media, Query, TaskConfig, build_example

_TRACK_ONE = re.compile(r"Track the (\w+) (\w+)\.")
_TRACK_ALL = re.compile(r"Track all (\w+?)s\.")
_POINT_ONE = re.compile(r"Point to the (\w+) (\w+)")
_POINT_ALL = re.compile(r"Point to all (\w+?)s\b")
_COUNT = re.compile(r"How many (\w+) (\w+?)s are there\?")


@dataclass
class OracleState(BackendState):
    answer_ids: list[int]  # the whole answer, EOS last
    next_index: int = 1  # the answer token the next decode step emits (prefill emitted the first)


class SceneOracleBackend(Backend):
    """Answers about `SceneSimulator(seed, width, height)` sampled at `source_fps` (see the module docstring)."""

    name = "oracle"

    def __init__(self, model_folder: Path, seed: int, width_px: int, height_px: int, source_fps: float,
                 duration_s: float, exact_frames: bool = True, gate: threading.Event | None = None) -> None:
        self.config = Molmo2Config.from_pretrained(model_folder)
        self.processor = Processor.from_pretrained(model_folder)
        self.device = torch.device("cpu")
        self.scene = SceneSimulator(seed, width_px, height_px)
        # exact_frames: frames come straight from the scene (a synthetic source); False: through a
        # lossy video file, so the nearest scene frame is taken.
        self.exact_frames = exact_frames
        # gate: encoding waits until it is set (a test lets subscribers connect before the first event)
        self.gate = gate
        self.encode_calls = 0
        self.prompts: list[str] = []
        # The scene at every time the source can produce: the oracle's "knowledge" of frames.
        self._times_s = [k / source_fps for k in range(int(duration_s * source_fps) + 1)]
        pixels = [self.processor.preprocess_frame(self.scene.frame_at(t).rgb).pixel_values for t in self._times_s]
        self._pixels = torch.stack([p.reshape(-1) for p in pixels])  # [n_times, P·588]

    # -- the Backend contract ---------------------------------------------------------------------
    def encode_visual(self, pixel_values: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
        if self.gate is not None and not self.gate.wait(timeout=60):
            raise TimeoutError("the oracle's gate was never opened")
        self.encode_calls += 1
        distances = (self._pixels - pixel_values.reshape(1, -1)).abs().sum(dim=1)  # [n_times]
        best = int(torch.argmin(distances))
        if self.exact_frames and float(distances[best]) > 1e-3:
            raise AssertionError("the oracle was shown a frame that is not in its scene")
        n_tokens = int(real_token_rows(pooling).sum())
        tokens = torch.zeros(n_tokens, self.hidden_size)  # [T_f, D]
        tokens[:, 0] = self._times_s[best]
        return tokens

    def prefill(self, input_ids: torch.Tensor, visual_tokens: torch.Tensor | None,
                mm_token_type_ids: torch.Tensor) -> tuple[torch.Tensor, OracleState]:
        text = self.processor.tokenizer.decode(input_ids[0].tolist(), skip_special_tokens=True)
        self.prompts.append(text)
        times = self._frame_times(visual_tokens)
        answer = self.answer(text, times)
        ids = self.processor.tokenizer.encode(answer) + [self.config.stop_token_ids[0]]
        state = OracleState(length=int(input_ids.shape[1]), answer_ids=ids)
        return self._one_hot(ids[0]), state

    def decode(self, token_id: int, state: OracleState) -> tuple[torch.Tensor, OracleState]:
        state.length += 1
        next_id = state.answer_ids[min(state.next_index, len(state.answer_ids) - 1)]
        state.next_index += 1
        return self._one_hot(next_id), state

    # -- helpers ----------------------------------------------------------------------------------
    def _one_hot(self, token_id: int) -> torch.Tensor:
        logits = torch.full((self.vocab_size,), -1e4)
        logits[token_id] = 0.0
        return logits

    def _frame_times(self, visual_tokens: torch.Tensor | None) -> list[float]:
        if visual_tokens is None or visual_tokens.shape[0] == 0:
            return []
        times = []
        for value in visual_tokens[:, 0].tolist():
            if not times or value != times[-1]:
                times.append(value)
        return times

    def answer(self, prompt_text: str, times_s: list[float]) -> str:
        """The training-data answer to the question in `prompt_text` about the frames at `times_s`."""
        for pattern, kind in ((_TRACK_ONE, "track"), (_TRACK_ALL, "track"), (_COUNT, "video_count"),
                              (_POINT_ONE, "video_point"), (_POINT_ALL, "video_point")):
            match = pattern.search(prompt_text)
            if match is None:
                continue
            groups = match.groups()
            query = Query(groups[0], None) if len(groups) == 1 else Query(groups[1], groups[0])
            frames = [self.scene.frame_at(t) for t in times_s]
            media = Media(frames=tuple(f.rgb for f in frames),
                          timestamps_s=tuple(round(t - times_s[0], 1) for t in times_s))
            return build_example(kind, media, frames, query, TaskConfig()).answer
        return "I cannot answer that."

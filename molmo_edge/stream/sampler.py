"""Pick frames at the model's rate (2 fps by default) by their timestamps, not by counting.

Molmo2 sees video at a fixed frame rate, so what matters is the time between sampled frames, not
how many camera frames lie between them. The sampler keeps a grid of due times `period_s` apart
and takes, for each due time, the frame nearest to it that it can know of without waiting for the
next one: a frame is taken when it is at most half a source frame interval early. This keeps the
sampled times on the grid (no drift) whatever the camera's rate and jitter.

Robustness rules:
- a source slower than the target: every frame is taken (as long as frames are at least
  `min_spacing` periods apart), nothing is invented;
- a gap (the camera stalled, a reconnect): the grid restarts at the first frame after the gap,
  so the frames that follow are not taken in a burst to "catch up";
- time going backwards (a file looped, a clock reset): the sampler restarts (`resets` counts it).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.stream.frame import Frame


class SamplerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_fps: float = Field(2.0, gt=0)
    # Two sampled frames are never closer than this many periods (jittery sources, catch-up).
    min_spacing: float = Field(0.5, gt=0, le=1)
    # At most this many periods early is still "on time" (caps the half-source-interval rule for
    # sources much slower than the target).
    max_early: float = Field(0.25, ge=0, lt=1)
    # Timestamps this far behind the last sampled one mean the clock went back: restart.
    backwards_tolerance_s: float = Field(0.5, ge=0)


class SamplerStats(BaseModel):
    offered: int = 0
    selected: int = 0
    resets: int = 0


class FrameSampler:
    def __init__(self, config: SamplerConfig | None = None, **overrides) -> None:
        if overrides:
            config = SamplerConfig.model_validate({**(config.model_dump() if config else {}), **overrides})
        self.config = config or SamplerConfig()
        self.period_s = 1.0 / self.config.target_fps
        self.stats = SamplerStats()
        self.reset()

    def reset(self) -> None:
        self._due_s: float | None = None  # next grid time
        self._last_selected_s: float | None = None
        self._last_offered_s: float | None = None
        self._source_interval_s: float | None = None  # running estimate of the source's frame interval

    def offer(self, t_s: float) -> bool:
        """Whether the frame at media time `t_s` is one to process. Call once per frame, in order."""
        self.stats.offered += 1
        period = self.period_s
        if self._last_selected_s is not None and t_s < self._last_selected_s - self.config.backwards_tolerance_s:
            self.stats.resets += 1
            self.reset()
        self._update_interval(t_s)
        if self._due_s is None:
            return self._select(t_s, due_s=t_s + period)
        if self._last_selected_s is not None and t_s - self._last_selected_s < self.config.min_spacing * period:
            return False
        # How early a frame may be and still count as the one nearest to the due time: half a
        # source interval (the next frame would be farther), capped for very slow sources.
        early_s = min(0.5 * (self._source_interval_s or 0.0), self.config.max_early * period)
        if t_s < self._due_s - early_s:
            return False
        if t_s - self._due_s >= period:
            next_due = t_s + period  # a gap: restart the grid here instead of catching up
        else:
            next_due = self._due_s + period
        return self._select(t_s, due_s=next_due)

    def select(self, frame: Frame) -> bool:
        return self.offer(frame.t_s)

    def sample(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """The frames of `frames` to process, lazily (works on an endless live source)."""
        for frame in frames:
            if self.offer(frame.t_s):
                yield frame

    def _select(self, t_s: float, due_s: float) -> bool:
        self._due_s = due_s
        self._last_selected_s = t_s
        self.stats.selected += 1
        return True

    def _update_interval(self, t_s: float) -> None:
        previous, self._last_offered_s = self._last_offered_s, t_s
        if previous is None or t_s <= previous:
            return
        interval = t_s - previous
        if interval > 2 * self.period_s:
            return  # a gap, not the source's frame rate
        # Exponential average: follows rate changes within ~10 frames, smooths jitter.
        self._source_interval_s = interval if self._source_interval_s is None else (
            0.9 * self._source_interval_s + 0.1 * interval)

"""What the node reports on /diagnostics: window rate, latency, and the counters of every stage.

`NodeHealth` is written by the inference thread (one call per published window or error) and read
by the diagnostics timer; both sides take its lock. Latency is the source image's stamp to the
moment `~/points` is published, on the node's clock (the same clock as the camera's stamps when
both run on one machine, or under sim time).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

# Rate and latency are taken over the windows published in the last this many seconds.
RATE_HORIZON_S = 10.0


class NodeHealth:
    def __init__(self, horizon_s: float = RATE_HORIZON_S) -> None:
        self.horizon_s = horizon_s
        self._lock = threading.Lock()
        self._published: deque[tuple[float, float]] = deque()  # (monotonic s, latency ms)
        self._windows = 0
        self._points = 0
        self._errors = 0
        self._last_error = ""
        self._last_error_monotonic_s: float | None = None
        self._last_latency_ms = float("nan")

    def window_published(self, latency_ms: float, n_points: int, now_s: float | None = None) -> None:
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self._published.append((now_s, latency_ms))
            self._windows += 1
            self._points += n_points
            self._last_latency_ms = latency_ms
            self._trim(now_s)

    def error(self, message: str, now_s: float | None = None) -> None:
        """A failure of the inference loop (the loop goes on); shown as ERROR for one horizon."""
        with self._lock:
            self._errors += 1
            self._last_error = message
            self._last_error_monotonic_s = time.monotonic() if now_s is None else now_s

    def reset(self) -> None:
        with self._lock:
            self._published.clear()
            self._last_error, self._last_error_monotonic_s = "", None
            self._last_latency_ms = float("nan")

    def snapshot(self, now_s: float | None = None) -> dict[str, Any]:
        """rate_hz, latency_ms (last), latency_mean_ms / latency_max_ms (horizon), windows, points,
        loop_errors, and `error` while a failure is recent."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self._trim(now_s)
            times = [t for t, _ in self._published]
            latencies = np.array([ms for _, ms in self._published], dtype=np.float64)
            stats: dict[str, Any] = {
                "rate_hz": _rate_hz(times, now_s, self.horizon_s),
                "latency_ms": self._last_latency_ms,
                "latency_mean_ms": float(latencies.mean()) if latencies.size else float("nan"),
                "latency_max_ms": float(latencies.max()) if latencies.size else float("nan"),
                "windows_published": self._windows,
                "points_published": self._points,
                "loop_errors": self._errors,
            }
            recent = self._last_error_monotonic_s is not None and now_s - self._last_error_monotonic_s < self.horizon_s
            if recent:
                stats["error"] = self._last_error
        return stats

    def _trim(self, now_s: float) -> None:
        while self._published and now_s - self._published[0][0] > self.horizon_s:
            self._published.popleft()


def _rate_hz(times: list[float], now_s: float, horizon_s: float) -> float:
    """Windows per second over the horizon: the intervals between the published windows divided by
    the time from the first of them to now, so a stalled node's rate falls as time passes."""
    if len(times) < 2:
        return len(times) / horizon_s
    return (len(times) - 1) / max(now_s - times[0], 1e-6)

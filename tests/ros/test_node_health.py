"""/diagnostics figures of the node: window rate, latency over a horizon, recent loop errors."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.ros.health import NodeHealth


def test_nothing_published_yet_is_rate_zero_and_latency_unknown():
    stats = NodeHealth().snapshot(now_s=100.0)
    assert stats["rate_hz"] == 0.0 and math.isnan(stats["latency_ms"]) and "error" not in stats


@given(rate_hz=st.floats(0.2, 20.0), n=st.integers(2, 40))
@settings(max_examples=50, deadline=None)
def test_a_steady_stream_reports_its_rate(rate_hz, n):
    health = NodeHealth(horizon_s=1e6)
    for i in range(n):
        health.window_published(latency_ms=100.0 + i, n_points=2, now_s=i / rate_hz)
    stats = health.snapshot(now_s=(n - 1) / rate_hz)
    assert stats["rate_hz"] == pytest.approx(rate_hz, rel=1e-6)
    assert stats["latency_ms"] == 100.0 + n - 1 and stats["latency_max_ms"] == 100.0 + n - 1
    assert stats["latency_mean_ms"] == pytest.approx(100.0 + (n - 1) / 2)
    assert stats["windows_published"] == n and stats["points_published"] == 2 * n


def test_a_stalled_node_rate_falls_and_old_windows_leave_the_horizon():
    health = NodeHealth(horizon_s=10.0)
    for i in range(5):
        health.window_published(latency_ms=50.0, n_points=0, now_s=float(i))
    assert health.snapshot(now_s=4.0)["rate_hz"] == pytest.approx(1.0)
    assert health.snapshot(now_s=8.0)["rate_hz"] == pytest.approx(0.5)  # nothing new for 4 s
    stats = health.snapshot(now_s=30.0)
    assert stats["rate_hz"] == 0.0 and math.isnan(stats["latency_mean_ms"])
    assert stats["windows_published"] == 5  # the totals stay


def test_a_loop_error_is_reported_for_one_horizon():
    health = NodeHealth(horizon_s=10.0)
    health.error("RuntimeError: model on fire", now_s=100.0)
    assert health.snapshot(now_s=105.0)["error"] == "RuntimeError: model on fire"
    stats = health.snapshot(now_s=111.0)
    assert "error" not in stats and stats["loop_errors"] == 1

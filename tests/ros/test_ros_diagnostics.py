"""DiagnosticArray from a stats dict."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from molmo_edge.ros.diagnostics import DiagnosticThresholds, stats_to_diagnostics  # noqa: E402
from molmo_edge.ros.headers import make_header  # noqa: E402

pytestmark = pytest.mark.ros

HEALTHY = {"rate_hz": 1.95, "latency_ms": 412.5, "frames_received": 812, "dropped_frames": 3,
           "parse_failures": 0, "model_loaded": True}


def _status(stats, **kwargs):
    array = stats_to_diagnostics(stats, make_header(7, "cam"), **kwargs)
    array = deserialize_message(serialize_message(array), type(array))
    assert len(array.status) == 1
    return array.status[0]


def test_healthy_stats_are_ok_and_every_key_is_reported():
    status = _status(HEALTHY, hardware_id="usb-cam-1")
    assert status.level == DiagnosticStatus.OK and status.message == "running"
    assert status.name == "molmo_edge: tracker" and status.hardware_id == "usb-cam-1"
    assert {kv.key: kv.value for kv in status.values} == {
        "rate_hz": "1.950", "latency_ms": "412.500", "frames_received": "812", "dropped_frames": "3",
        "parse_failures": "0", "model_loaded": "true"}


@pytest.mark.parametrize("change, message", [
    ({"rate_hz": 0.2}, "rate 0.200 Hz below 0.5 Hz"),
    ({"rate_hz": float("nan")}, "rate nan Hz"),
    ({"latency_ms": 3000.0}, "latency 3000.000 ms above 2000.0 ms"),
])
def test_slow_or_late_is_warn_with_the_reason(change, message):
    status = _status({**HEALTHY, **change})
    assert status.level == DiagnosticStatus.WARN
    assert message in status.message


def test_error_key_is_error_and_thresholds_are_configurable():
    status = _status({**HEALTHY, "rate_hz": 0.1, "error": "model failed to load: out of memory"})
    assert status.level == DiagnosticStatus.ERROR
    assert status.message.startswith("model failed to load: out of memory; rate")
    relaxed = DiagnosticThresholds(min_rate_hz=0.05, max_latency_ms=5000)
    assert _status({**HEALTHY, "rate_hz": 0.1, "latency_ms": 4000}, thresholds=relaxed).level == DiagnosticStatus.OK

"""The node's health as a diagnostic_msgs/DiagnosticArray for `/diagnostics` (rqt_runtime_monitor).

Input is a flat stats dict, e.g.
    {"rate_hz": 1.9, "latency_ms": 420.0, "frames_received": 812, "dropped_frames": 3,
     "parse_failures": 0, "bad_images": 0}
Known keys set the level (below); every key becomes a KeyValue, so new counters show up without
a change here.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from pydantic import BaseModel, ConfigDict, Field
from std_msgs.msg import Header

from .headers import copy_header


class DiagnosticThresholds(BaseModel):
    """When the status turns WARN. A stats key `error` (a non-empty string) always means ERROR."""

    model_config = ConfigDict(frozen=True)

    min_rate_hz: float = Field(default=0.5, ge=0, description="WARN below this processed-window rate")
    max_latency_ms: float = Field(default=2000.0, gt=0, description="WARN above this end-to-end latency")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def stats_to_diagnostics(
    stats: Mapping[str, Any],
    header: Header,
    name: str = "molmo_edge: tracker",
    hardware_id: str = "",
    thresholds: DiagnosticThresholds = DiagnosticThresholds(),
) -> DiagnosticArray:
    """One DiagnosticStatus: OK, WARN (slow, late) or ERROR (`stats["error"]` set), with a message
    that says why, and every stat as a key/value."""
    problems: list[str] = []
    level = DiagnosticStatus.OK
    error = stats.get("error")
    if error:
        level = DiagnosticStatus.ERROR
        problems.append(str(error))
    rate_hz = stats.get("rate_hz")
    if rate_hz is not None and (math.isnan(rate_hz) or rate_hz < thresholds.min_rate_hz):
        problems.append(f"rate {_format(float(rate_hz))} Hz below {thresholds.min_rate_hz} Hz")
    latency_ms = stats.get("latency_ms")
    if latency_ms is not None and latency_ms > thresholds.max_latency_ms:
        problems.append(f"latency {_format(float(latency_ms))} ms above {thresholds.max_latency_ms} ms")
    if problems and level == DiagnosticStatus.OK:
        level = DiagnosticStatus.WARN

    status = DiagnosticStatus()
    status.level = level
    status.name = name
    status.hardware_id = hardware_id
    status.message = "; ".join(problems) if problems else "running"
    status.values = [KeyValue(key=str(key), value=_format(value)) for key, value in stats.items()]
    return DiagnosticArray(header=copy_header(header), status=[status])

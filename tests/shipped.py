"""What the shipped model measured on the large held-out set (its eval.json), for tests that
check point quality end to end.

The ROS node test always asserts that the shipped model's published points fall inside the
queried objects far more often than chance, and that most of them do (75 %) only when the shipped
model localises well (pointing F1 >= LOCALISES_F1 in its own eval.json); the current model's
numbers are in MODEL_CARD.md. tests/test_shipped_model.py checks accuracy floors for any
shipped model.
"""
from __future__ import annotations

import json

LOCALISES_F1 = 0.5


def shipped_eval() -> dict | None:
    """The shipped model's eval.json, or None when no model is shipped."""
    import molmo_edge

    try:
        folder = molmo_edge.default_model_path()
    except molmo_edge.ModelNotFoundError:
        return None
    path = folder / "eval.json"
    return json.loads(path.read_text()) if path.is_file() else None


def shipped_model_localises() -> bool:
    report = shipped_eval()
    return bool(report) and float(report.get("pointing_f1", 0.0)) >= LOCALISES_F1

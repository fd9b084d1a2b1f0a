"""What the shipped model measured on the large held-out set (its eval.json), for tests that
check point quality end to end.

The ROS node test asserts that most published points fall inside the queried object only when
the shipped model localises well (pointing F1 >= LOCALISES_F1 in its own eval.json); with a model
below that, its numbers are in MODEL_CARD.md and the rest of that test (transport, stamps, depth,
message layout) runs either way. tests/test_shipped_model.py checks accuracy floors for any
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

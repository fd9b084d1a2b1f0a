"""What the shipped model measured on the large held-out set (its eval.json), for tests that
check point quality end to end (ROS node, shipped-model accuracy).

Those tests assert "points fall inside the queried objects" only when the shipped model is one
that localises (pointing F1 >= LOCALISES_F1 in its own eval.json). A model that measured below
that cannot meet an in-mask threshold, and its numbers are reported in MODEL_CARD.md instead;
the rest of those tests (transport, stamps, depth, message layout) runs either way.
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

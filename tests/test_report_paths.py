"""Reports that may be committed record paths that mean something on another machine."""
from __future__ import annotations

import tempfile
from pathlib import Path

import molmo_edge
from molmo_edge.report_paths import portable_path


def test_package_working_directory_temporary_and_other_paths(tmp_path, monkeypatch):
    shipped = Path(molmo_edge.__file__).resolve().parent / "assets" / "tiny-synthetic"
    monkeypatch.chdir(tmp_path)
    assert portable_path(shipped) == "molmo_edge/assets/tiny-synthetic"
    (tmp_path / "runs" / "a").mkdir(parents=True)
    assert portable_path(tmp_path / "runs" / "a") == "runs/a"
    assert portable_path("runs/a") == "runs/a"
    with tempfile.TemporaryDirectory(prefix="molmo-bench-bundle-") as scratch:
        monkeypatch.chdir(Path(__file__).parent)  # the temporary folder is not under cwd now
        assert portable_path(Path(scratch) / "bundle") == "<temporary>/bundle"
    assert portable_path("/opt/models/molmo2-4b") == "/opt/models/molmo2-4b"
    assert portable_path(None) is None


def test_committed_reports_carry_no_absolute_paths():
    root = Path(__file__).resolve().parent.parent
    reports = [root / "molmo_edge" / "assets" / "tiny-synthetic" / "eval.json",
               *sorted((root / "docs" / "bench-results").glob("*.json"))]
    for report in reports:
        if report.is_file():
            text = report.read_text()
            # A JSON string that starts at one of the usual top-level folders of a machine.
            for marker in (f'"/{top}/' for top in ("work", "home", "tmp", "root", "Users")):
                assert marker not in text, f"{report.name} records a machine-specific path ({marker})"

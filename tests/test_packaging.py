"""The distribution's shape: every source folder is packaged, the README and CI agree."""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    tool = _pyproject()["tool"]["setuptools"]
    package_dir: dict[str, str] = tool["package-dir"]
    listed = set(tool["packages"])
    found = set()
    for name, folder in package_dir.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            dotted = ".".join([name, *rel.parts]) if rel.parts else name
            # a sub-folder mapped separately (e.g. molmo_edge.export) is found from its own entry
            if any(dotted.startswith(other + ".") or dotted == other
                   for other in package_dir if other != name and other.startswith(name + ".")):
                continue
            found.add(dotted)
    assert found == listed, f"packages in pyproject.toml differ from folders: missing {found - listed}, extra {listed - found}"


def test_nothing_installs_as_a_top_level_export_or_training_module():
    import molmo_edge.export
    import molmo_edge.training

    assert "molmo_edge" in molmo_edge.export.__name__
    for bad in ("export", "training", "calibration"):
        assert bad not in _pyproject()["tool"]["setuptools"]["packages"]
        mod = sys.modules.get(bad)
        assert mod is None or "molmo_edge" not in str(getattr(mod, "__file__", ""))


def test_readme_first_lines_give_demo_and_test_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    head = "\n".join(readme[:8])
    assert "molmo-edge demo" in head
    test_cmd = next(line for line in readme[:8] if "pytest" in line)
    test_cmd = test_cmd.split("#")[0].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci, f"CI does not run the README's test command {test_cmd!r}"
    assert re.search(r"pip install torch==2\.13\.0", ci), "CI must install the CPU torch wheel first"


def test_transformers_is_not_a_runtime_dependency():
    deps = _pyproject()["project"]["dependencies"]
    assert not any(d.startswith("transformers") for d in deps)


def test_core_imports_no_middleware():
    """The core (model, processing, grounding, engine) and stream never import rclpy or zmq."""
    pattern = re.compile(r"^\s*(import|from)\s+(rclpy|zmq)\b", re.M)
    for folder in ("model", "processing", "engine", "stream"):
        for path in (ROOT / "molmo_edge" / folder).rglob("*.py"):
            assert not pattern.search(path.read_text()), f"{path} imports middleware"
    grounding = ROOT / "molmo_edge" / "grounding.py"
    paths = [grounding] if grounding.exists() else list((ROOT / "molmo_edge" / "grounding").rglob("*.py"))
    for path in paths:
        assert not pattern.search(path.read_text())


def test_dependencies_point_one_way():
    """core <- stream <- adapters; tools (training, export, calibration) are never imported by the core."""
    adapters = re.compile(r"^\s*(import|from)\s+molmo_edge\.(publish|ros|commands|cli)\b", re.M)
    tools = re.compile(r"^\s*(import|from)\s+molmo_edge\.(training|export)\b", re.M)
    stream = re.compile(r"^\s*(import|from)\s+molmo_edge\.stream\b", re.M)
    core = ["model", "processing", "grounding", "engine"]
    for folder in core + ["stream"]:
        for path in (ROOT / "molmo_edge" / folder).rglob("*.py"):
            text = path.read_text()
            assert not adapters.search(text), f"{path} imports an adapter"
            if folder in core:
                assert not stream.search(text), f"{path} (core) imports the stream"
            if folder in core and folder != "engine":
                assert not tools.search(text), f"{path} (core) imports training/export"


def test_cli_lists_every_verb(capsys):
    from molmo_edge.cli import VERBS, main

    for verb, (module, _) in VERBS.items():
        assert (ROOT / "molmo_edge" / "commands" / f"{module}.py").exists(), f"verb {verb} has no module"

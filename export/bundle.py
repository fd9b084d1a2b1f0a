"""Write and open bundle folders: manifest.json + tokenizer + ONNX graphs (+ TensorRT engines).

`write_manifest` hashes every file of the folder into the manifest; `open_bundle` refuses a
folder that does not match it (missing, changed or extra graph/engine files, graphs whose inputs
and outputs differ from what the manifest promises), so a backend never runs a half-copied or
tampered export. Every refusal is a `BundleError` naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from molmo_edge.errors import BundleError
from molmo_edge.export.atomic import atomic_write_text
from molmo_edge.export.manifest import (
    BUNDLE_FORMAT,
    SUPPORTED_MANIFEST_VERSION,
    BundleManifest,
    EngineSpec,
    FileEntry,
    GraphSpec,
)

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
# Graph weights and engines are several GB: hash them in 8 MiB pieces, never whole in memory.
HASH_CHUNK_BYTES = 8 << 20
# Files that a backend would execute or load weights from. An unlisted one is refused: it may be a
# leftover of another export that a careless copy put next to this one, or a swapped-in file.
GRAPH_OR_ENGINE_SUFFIXES = (".onnx", ".data", ".onnx_data", ".onnx.data", ".engine", ".plan", ".trt")


def hash_file(path: str | Path, chunk_bytes: int = HASH_CHUNK_BYTES) -> FileEntry:
    """sha256 and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(sha256=digest.hexdigest(), bytes=size)


def _bundle_files(bundle_dir: Path) -> list[str]:
    """Every regular file under the folder as a POSIX path relative to it, manifest excluded."""
    names = []
    for path in sorted(bundle_dir.rglob("*")):
        if path.is_file():
            rel = path.relative_to(bundle_dir).as_posix()
            # The manifest itself and its in-flight temporary copy (see atomic.py) are not content.
            if rel != MANIFEST_NAME and not rel.startswith(f".{MANIFEST_NAME}."):
                names.append(rel)
    return names


def _is_graph_or_engine(name: str) -> bool:
    return name.lower().endswith(GRAPH_OR_ENGINE_SUFFIXES)


@dataclass(frozen=True)
class Bundle:
    """An opened, checked bundle folder."""

    path: Path
    manifest: BundleManifest

    def file(self, name: str) -> Path:
        if name not in self.manifest.files:
            raise BundleError(f"{self.path}: the bundle has no file {name!r}")
        return self.path / name

    def graph(self, name: str) -> GraphSpec:
        try:
            return self.manifest.graphs[name]
        except KeyError:
            raise BundleError(
                f"{self.path}: the bundle has no graph {name!r} (it has {sorted(self.manifest.graphs)})"
            ) from None

    def graph_path(self, name: str) -> Path:
        return self.path / self.graph(name).file

    def engine(self, name: str) -> EngineSpec:
        try:
            return self.manifest.engines[name]
        except KeyError:
            raise BundleError(
                f"{self.path}: the bundle has no TensorRT engine {name!r} (it has {sorted(self.manifest.engines)}); "
                "build one with `molmo-edge export --tensorrt`"
            ) from None

    def engine_path(self, name: str) -> Path:
        return self.path / self.engine(name).file

    def engine_for_graph(self, graph_name: str) -> EngineSpec | None:
        """The engine built from a graph, if any."""
        for engine in self.manifest.engines.values():
            if engine.graph == graph_name:
                return engine
        return None

    @property
    def tokenizer_path(self) -> Path:
        return self.file("tokenizer.json")


def is_bundle(path: str | Path) -> bool:
    """Whether `path` looks like a bundle folder (a manifest.json of our format). Never raises."""
    manifest_path = Path(path) / MANIFEST_NAME
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("format") == BUNDLE_FORMAT


def read_manifest(manifest_path: str | Path) -> BundleManifest:
    """Parse and validate a manifest.json file, refusing newer format versions."""
    manifest_path = Path(manifest_path)
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(
            f"{manifest_path.parent}: no {MANIFEST_NAME}, so this is not a molmo-edge bundle "
            "(create one with `molmo-edge export`, or pass a checkpoint folder instead)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: cannot read the manifest ({exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{manifest_path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "the bundle is damaged, re-export it"
        ) from None
    if not isinstance(raw, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object, found {type(raw).__name__}")
    if raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{manifest_path}: format is {raw.get('format')!r}, expected {BUNDLE_FORMAT!r}; not a molmo-edge bundle"
        )
    version = raw.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SUPPORTED_MANIFEST_VERSION:
        raise BundleError(
            f"{manifest_path}: manifest version {version} was written by a newer molmo-edge; this one reads "
            f"versions up to {SUPPORTED_MANIFEST_VERSION}. Upgrade molmo-edge (pip install -U molmo-edge)."
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise BundleError(f"{manifest_path}: invalid manifest: {problems}{more}") from None


def _check_listed_files(bundle_dir: Path, manifest: BundleManifest, verify_hashes: bool) -> None:
    for name, entry in manifest.files.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(
                f"{bundle_dir}: {name} is listed in the manifest but missing; re-copy or re-export the bundle"
            )
        size = path.stat().st_size
        if size != entry.bytes:
            raise BundleError(
                f"{bundle_dir}: {name} has {size} bytes but the manifest says {entry.bytes} "
                "(truncated or replaced); re-copy or re-export the bundle"
            )
        if verify_hashes:
            actual = hash_file(path).sha256
            if actual != entry.sha256:
                raise BundleError(
                    f"{bundle_dir}: {name} does not match its sha256 in the manifest (file changed after export: "
                    f"{actual[:12]}… vs {entry.sha256[:12]}…); re-copy or re-export the bundle"
                )
    for name in _bundle_files(bundle_dir):
        if name not in manifest.files:
            if _is_graph_or_engine(name):
                raise BundleError(
                    f"{bundle_dir}: {name} is a graph/engine file that the manifest does not list; "
                    "remove it, or re-export so that the manifest covers it"
                )
            log.warning("%s: ignoring %s, which the manifest does not list", bundle_dir, name)


def _describe_mismatch(kind: str, declared, actual) -> str | None:
    declared_sig = [(t.name, t.dtype, len(t.shape)) for t in declared]
    actual_sig = [(t.name, t.dtype, len(t.shape)) for t in actual]
    if declared_sig == actual_sig:
        return None

    def fmt(signature) -> str:
        return ", ".join(f"{n}:{d}[rank {r}]" for n, d, r in signature) or "(none)"

    return f"{kind} in the file are {fmt(actual_sig)} but the manifest lists {fmt(declared_sig)}"


def _check_graphs_and_engines(bundle_dir: Path, manifest: BundleManifest, inspect_graphs: bool) -> None:
    from molmo_edge.export.onnx_io import describe_model, external_data_locations, load_onnx_structure

    for name, graph in manifest.graphs.items():
        if graph.file not in manifest.files:
            raise BundleError(f"{bundle_dir}: graph {name!r} file {graph.file} is not listed in the manifest's files")
        if not inspect_graphs:
            continue
        model = load_onnx_structure(bundle_dir / graph.file)
        actual = describe_model(model, graph.file)
        for kind, declared, found in (("inputs", graph.inputs, actual.inputs),
                                      ("outputs", graph.outputs, actual.outputs)):
            problem = _describe_mismatch(kind, declared, found)
            if problem:
                raise BundleError(f"{bundle_dir}: graph {name!r} ({graph.file}): {problem}; re-export the bundle")
        # Weights stored beside the graph must be bundle files too, or the hash check proves nothing.
        graph_folder = Path(graph.file).parent
        for location in external_data_locations(model):
            rel = (graph_folder / location).as_posix()
            if ".." in Path(rel).parts or Path(location).is_absolute() or rel not in manifest.files:
                raise BundleError(
                    f"{bundle_dir}: graph {name!r} ({graph.file}) keeps weights in {location!r}, "
                    "which is not a file listed in the manifest; re-export the bundle"
                )
    for name, engine in manifest.engines.items():
        if engine.file not in manifest.files:
            raise BundleError(f"{bundle_dir}: engine {name!r} file {engine.file} is not listed in the manifest's files")


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle folder and check it against its manifest.

    With `verify=True` every file's sha256 is recomputed and each graph's inputs/outputs are read
    from the ONNX file and compared with the manifest. With `verify=False` only the cheap checks run
    (manifest valid, files present with the right sizes, no unlisted graph/engine files).
    """
    bundle_dir = Path(path)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle folder not found")
    manifest = read_manifest(bundle_dir / MANIFEST_NAME)
    _check_listed_files(bundle_dir, manifest, verify_hashes=verify)
    _check_graphs_and_engines(bundle_dir, manifest, inspect_graphs=verify)
    return Bundle(path=bundle_dir, manifest=manifest)


def write_manifest(bundle_dir: str | Path, manifest: BundleManifest) -> BundleManifest:
    """Hash every file in `bundle_dir` into `manifest.files`, check it, and write manifest.json.

    Returns the manifest as written. The graphs' inputs/outputs are checked against the ONNX
    files first, so an exporter bug is caught here rather than when a user opens the bundle.
    The file is written to a temporary name and renamed, so a crash never leaves half a manifest.
    """
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle folder not found")
    files = {name: hash_file(bundle_dir / name) for name in _bundle_files(bundle_dir)}
    data = manifest.model_dump()
    data["files"] = files
    try:
        complete = BundleManifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{bundle_dir}: cannot write an invalid manifest: {exc}") from None
    _check_graphs_and_engines(bundle_dir, complete, inspect_graphs=True)
    atomic_write_text(bundle_dir / MANIFEST_NAME, complete.to_json())
    return complete

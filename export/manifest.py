"""`manifest.json`: the versioned description of an exported bundle.

A bundle folder holds ONNX graphs (and, where built, TensorRT engines) plus the tokenizer and the
settings needed to run them. The manifest says what every file is and pins its sha256, so a
backend can refuse a bundle that was edited, truncated or mixed with files from another export.

Schema rules (docs/internals.md, "Bundles"): the schema only grows. A field is never re-used or
re-typed; adding fields bumps `version`, and a reader refuses manifests newer than it knows
(`SUPPORTED_MANIFEST_VERSION`). Unknown fields are rejected, so a typo in a hand-edited manifest
is an error instead of a silently ignored setting.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

BUNDLE_FORMAT = "molmo-edge-bundle"
# The newest manifest version this code reads and writes.
SUPPORTED_MANIFEST_VERSION = 1

Precision = Literal["fp32", "fp16", "int8", "mixed"]
EnginePrecision = Literal["fp32", "fp16", "int8"]

# Tensor element types as they appear in manifests: numpy-style names, plus bfloat16, which
# numpy lacks. Kept as strings so the manifest stays readable and independent of onnx/torch.
DTYPE_NAMES = (
    "float32", "float16", "bfloat16", "float64",
    "int8", "uint8", "int16", "int32", "int64", "bool",
    "float8e4m3fn", "int4", "uint4",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_relative_path(value: str) -> str:
    """A bundle file name: relative, POSIX separators, never leaving the bundle folder."""
    if not value or value.startswith("/") or "\\" in value or ":" in value:
        raise ValueError(f"{value!r} is not a relative POSIX path inside the bundle")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{value!r} must not contain empty, '.' or '..' parts")
    return value


# A file name inside the bundle folder (validated: relative, no "..").
BundlePath = Annotated[str, AfterValidator(check_relative_path)]


class TensorSpec(_Strict):
    """One graph input or output: name, element type and shape.

    `shape` mixes static sizes (ints) and symbolic dimension names (strings such as "n_crops" or
    "past_seq"); the same symbolic name in two tensors of one graph means the same size.
    """

    name: str = Field(min_length=1)
    dtype: str
    shape: list[int | str]

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype {value!r}; expected one of {', '.join(DTYPE_NAMES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _dims_valid(cls, shape: list[int | str]) -> list[int | str]:
        for dim in shape:
            if isinstance(dim, int) and dim < 0:
                raise ValueError(f"negative dimension {dim} in shape {shape}")
            if isinstance(dim, str) and not dim:
                raise ValueError(f"empty symbolic dimension name in shape {shape}")
        return shape


class GraphSpec(_Strict):
    """One ONNX graph of the bundle (e.g. `vit`, `connector`, `decoder_prefill`, `decoder_step`)."""

    file: BundlePath
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int = Field(ge=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "GraphSpec":
        names = [t.name for t in self.inputs] + [t.name for t in self.outputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tensor names used twice in graph {self.file}: {duplicates}")
        return self


class ShapeRange(_Strict):
    """The shapes one engine input accepts within one optimisation profile: min <= opt <= max."""

    min: list[int]
    opt: list[int]
    max: list[int]

    @model_validator(mode="after")
    def _ordered(self) -> "ShapeRange":
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(f"min/opt/max have different ranks: {self.min}, {self.opt}, {self.max}")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if lo < 0 or not (lo <= mid <= hi):
                raise ValueError(f"need 0 <= min <= opt <= max per dimension, got {self.min}, {self.opt}, {self.max}")
        return self

    def contains(self, shape: tuple[int, ...] | list[int]) -> bool:
        """Whether a concrete input shape lies inside this range."""
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max)
        )


class EngineProfile(_Strict):
    """One TensorRT optimisation profile: a shape range for every dynamic input."""

    shapes: dict[str, ShapeRange]


class EngineSpec(_Strict):
    """A serialized TensorRT engine. It runs only with the TensorRT version and GPU it was built for."""

    file: BundlePath
    graph: str = Field(description="name of the graph (a key of `graphs`) the engine was built from")
    precision: EnginePrecision
    profiles: list[EngineProfile] = Field(default_factory=list)
    tensorrt_version: str
    device_name: str
    compute_capability: str = Field(pattern=r"^\d+\.\d+$", description='e.g. "8.7" (Orin), "9.0" (H100)')


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class BundleManifest(_Strict):
    """The contents of `manifest.json`.

    `config` is the model's Hugging Face config dict (config.json), `processing` the image/video
    preprocessing settings, `token_ids` the special-token ids the runtime needs. `files` lists
    every file of the bundle except manifest.json itself; `write_manifest` fills it in.
    """

    format: Literal["molmo-edge-bundle"] = BUNDLE_FORMAT
    version: int = Field(default=SUPPORTED_MANIFEST_VERSION, ge=1)
    created_utc: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    config: dict[str, Any] = Field(default_factory=dict)
    processing: dict[str, Any] = Field(default_factory=dict)
    token_ids: dict[str, int] = Field(default_factory=dict)
    precision: Precision = "fp32"
    graphs: dict[str, GraphSpec] = Field(default_factory=dict)
    engines: dict[str, EngineSpec] = Field(default_factory=dict)
    files: dict[BundlePath, FileEntry] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _manifest_not_listed(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if "manifest.json" in files:
            raise ValueError("manifest.json cannot list itself in files")
        return files

    @field_validator("created_utc")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # A naive timestamp is ambiguous once bundles move between machines; store UTC only.
        if value.tzinfo is None:
            raise ValueError("created_utc must carry a timezone (UTC)")
        return value.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _engines_point_at_graphs(self) -> "BundleManifest":
        for name, engine in self.engines.items():
            if engine.graph not in self.graphs:
                raise ValueError(f"engine {name!r} names graph {engine.graph!r}, which is not in graphs")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def tool_versions() -> dict[str, str]:
    """Versions of the tools that matter for reproducing an export; absent tools are left out."""
    from importlib import metadata

    versions: dict[str, str] = {}
    for dist, key in (
        ("molmo-edge", "molmo-edge"),
        ("torch", "torch"),
        ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime"),
        ("onnxruntime-gpu", "onnxruntime"),
        ("tensorrt", "tensorrt"),
    ):
        try:
            versions.setdefault(key, metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
    return versions

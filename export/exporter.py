"""From a checkpoint folder to a bundle folder: what `molmo-edge export` runs.

    result = export_bundle("ckpt/", "bundle/", ExportOptions(precision="int8", calib="synthetic:0:32"))
    print(result.summary())

Steps: load the checkpoint in float32 on the CPU -> trace the three graphs (`onnx_export`) ->
reduce precision (`quantize`) -> check every graph against the TensorRT parser table (`trt_ops`)
-> optionally build TensorRT engines (`trt_engines`) -> copy tokenizer.json, config.json and
processor_config.json -> write manifest.json with the sha256 of every file (`bundle`).

Precisions:
- fp32: the traced graphs as they are; the reference for the others.
- fp16: `quantize.to_fp16` on all three graphs, inputs and outputs kept float32 (callers feed the
  same arrays), norm statistics kept in fp32.
- int8: static INT8 (Q/DQ, symmetric: TensorRT takes the same graph) for the vit and connector,
  with activation ranges measured on calibration frames (`--calib`: a video file, an image folder,
  or `synthetic:SEED[:N]`); dynamic INT8 weights for the decoder. The decoder's activations are
  outlier-heavy (a few channels of the residual stream run hundreds of times larger than the rest),
  so one static scale per tensor either clips them or wastes the int8 range on them; quantising
  the weights statically and the activations per call at run time keeps that error away, and the
  decoder's weights are where the bytes are.

Everything is written to a staging folder beside `out_dir` and moved into place at the end, so a
failed export never leaves a half-written bundle.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from molmo_edge.engine import graph_io as io
from molmo_edge.errors import BackendUnavailableError, ConfigError
from molmo_edge.export.manifest import BundleManifest, EngineSpec, GraphSpec, tool_versions
from molmo_edge.export.onnx_export import DEFAULT_OPSET, check_opset, export_graphs
from molmo_edge.export.trt_engines import EngineLimits

log = logging.getLogger(__name__)

ExportPrecision = Literal["fp32", "fp16", "int8"]
DEFAULT_CALIBRATION = "synthetic:0"  # calib_max_frames frames of seeded synthetic scenes
# Files of a bundle besides the graphs (their names are part of the bundle contract).
TOKENIZER_FILE, CONFIG_FILE, PROCESSOR_FILE = "tokenizer.json", "config.json", "processor_config.json"
_TOKEN_ID_FIELDS = ("image_start_token_id", "image_end_token_id", "image_patch_id", "image_col_id",
                    "low_res_image_start_token_id", "frame_start_token_id", "frame_end_token_id",
                    "bos_token_id", "pad_token_id")


class ExportOptions(BaseModel):
    """Everything `molmo-edge export` can be told (the CLI flags map one to one)."""

    model_config = ConfigDict(extra="forbid")

    precision: ExportPrecision = "fp32"
    opset: int = DEFAULT_OPSET
    calib: str | None = Field(None, description="int8 calibration frames: a video file, an image folder or "
                                                f"synthetic:SEED[:N]; None = {DEFAULT_CALIBRATION}")
    calib_max_frames: int = Field(32, ge=1, description="most calibration frames taken from --calib")
    tensorrt: bool = Field(False, description="also build TensorRT engines (needs TensorRT and a CUDA GPU)")
    tensorrt_int8: Literal["qdq", "calibrator"] = "qdq"
    engine_limits: EngineLimits = Field(default_factory=EngineLimits)
    timing_cache: Path | None = Field(None, description="TensorRT timing cache; None = "
                                                        "~/.cache/molmo-edge/tensorrt/timing.cache")
    external_data: bool | None = Field(None, description="weights in <graph>.onnx.data; None = only above ~1.8 GB")
    overwrite: bool = False

    @field_validator("opset")
    @classmethod
    def _opset(cls, value: int) -> int:
        return check_opset(value)


@dataclass
class ExportResult:
    """What was written: the bundle folder, its manifest, the TensorRT parser check per graph, the time taken."""

    bundle_dir: Path
    manifest: BundleManifest
    trt_checks: dict[str, object] = field(default_factory=dict)  # graph -> trt_ops.Report
    seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.manifest.files.values())

    def graph_bytes(self, name: str) -> int:
        """Bytes of a graph including its external weights file."""
        graph = self.manifest.graphs[name].file
        return sum(e.bytes for f, e in self.manifest.files.items() if f == graph or f == f"{graph}.data")

    def summary(self) -> str:
        lines = [f"bundle {self.bundle_dir} ({self.manifest.precision}, opset "
                 f"{next(iter(self.manifest.graphs.values())).opset}): {self.total_bytes / 1e6:.1f} MB in "
                 f"{len(self.manifest.files)} files, {self.seconds:.1f} s"]
        for name in self.manifest.graphs:
            check = self.trt_checks.get(name)
            verdict = ""
            if check is not None:
                unsupported = ", ".join(check.unsupported_op_types) or "restrictions"
                verdict = " TensorRT parser: OK" if check.ok else f" TensorRT parser: NOT SUPPORTED ({unsupported})"
            lines.append(f"  {name + '.onnx':<16} {self.graph_bytes(name) / 1e6:9.2f} MB{verdict}")
        for name, engine in self.manifest.engines.items():
            lines.append(f"  {engine.file:<16} {self.manifest.files[engine.file].bytes / 1e6:9.2f} MB "
                         f"TensorRT {engine.tensorrt_version} {engine.precision} ({engine.device_name})")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- calibration
def calibration_set(spec: str | None, max_frames: int):
    """`--calib` -> a CalibrationSet: a video file, an image folder, or synthetic:SEED[:N] (N defaults to
    max_frames, which also caps video and folder sources)."""
    from molmo_edge.calibration.int8 import CalibrationSet

    spec = spec or DEFAULT_CALIBRATION
    if spec.startswith("synthetic"):
        parts = spec.split(":")
        try:
            seed = int(parts[1]) if len(parts) > 1 and parts[1] else 0
            count = int(parts[2]) if len(parts) > 2 else max_frames
        except ValueError:
            raise ConfigError(f"--calib {spec!r}: write synthetic, synthetic:SEED or synthetic:SEED:N") from None
        if len(parts) > 3 or count < 1:
            raise ConfigError(f"--calib {spec!r}: write synthetic, synthetic:SEED or synthetic:SEED:N (N >= 1)")
        return CalibrationSet.synthetic(max_frames=count, seed=seed)
    path = Path(spec).expanduser()
    if path.is_dir():
        return CalibrationSet.from_images(path, max_frames=max_frames)
    if path.is_file():
        return CalibrationSet.from_video(path, max_frames=max_frames)
    raise ConfigError(f"--calib {spec!r} is neither a video file, an image folder nor synthetic:SEED[:N]")


class _Chain:
    """Re-iterable concatenation of re-iterables (image-style and video-style calibration samples)."""

    def __init__(self, *parts: Iterable[dict[str, np.ndarray]]) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for part in self.parts:
            yield from part


def calibration_inputs(model, processor, frames: list[np.ndarray]) -> dict[str, Iterable[dict[str, np.ndarray]]]:
    """Per graph, the input dicts to measure activation ranges on.

    vit: the crops of each frame preprocessed as an image (global crop + tiles: every scale the ViT
    sees). connector: the same, with the fp32 ViT's features, plus each frame as a video frame, so
    both the 2×2 image and the 3×3 video pooling windows are calibrated.
    """
    from molmo_edge.calibration.int8 import CalibrationInputs

    def image_pixels(frame):
        return {"pixel_values": processor.preprocess_image(frame).pixel_values.numpy()}

    @torch.no_grad()
    def connector_sample(inputs):
        return {"features": model.vision(inputs.pixel_values).numpy(), "pooling": inputs.token_pooling.numpy()}

    vit = CalibrationInputs(frames, image_pixels, description="calibrating vit")
    connector = _Chain(
        CalibrationInputs(frames, lambda f: connector_sample(processor.preprocess_image(f)),
                          description="calibrating connector (images)"),
        CalibrationInputs(frames, lambda f: connector_sample(processor.preprocess_frame(f)),
                          description="calibrating connector (video)"))
    return {io.VIT: vit, io.CONNECTOR: connector}


# ----------------------------------------------------------------------------- the export
def _resolve_checkpoint(model_path: str | Path | None) -> Path:
    from molmo_edge.engine.loading import resolve_model_path

    folder, kind = resolve_model_path(model_path)
    if kind != "checkpoint":
        raise ConfigError(f"{folder} is already an exported bundle; export from the checkpoint folder it came from")
    return folder


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a folder for the bundle")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out_dir} exists and is not empty; choose another folder or pass --overwrite")


def _token_ids(config) -> dict[str, int]:
    ids = {name: getattr(config, name) for name in _TOKEN_ID_FIELDS if getattr(config, name) is not None}
    stops = config.stop_token_ids
    if stops:
        ids["eos_token_id"] = stops[0]  # all of them are in the config
    return ids


def _check_tensorrt_ready() -> None:
    """Fail before minutes of export when engines were asked for but cannot be built here."""
    from molmo_edge.export.tensorrt import current_device, import_tensorrt

    try:
        import_tensorrt()
        current_device()
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"--trt builds TensorRT engines, which needs TensorRT and a CUDA GPU on this machine: {exc}. Export "
            "without --trt here (ONNX Runtime runs the bundle), and run `molmo-edge export --trt` on the target "
            "device to build engines there") from None


def export_bundle(model_path: str | Path | None, out_dir: str | Path, options: ExportOptions | None = None,
                  progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export the checkpoint at `model_path` (None = the shipped model) into the bundle folder `out_dir`."""
    options = options or ExportOptions()
    started = time.perf_counter()
    say = progress or log.info
    # everything that can be refused cheaply is refused before the model is loaded
    source = _resolve_checkpoint(model_path)
    out_dir = Path(out_dir).expanduser()
    _prepare_output(out_dir, options.overwrite)
    if options.tensorrt:
        _check_tensorrt_ready()
    calib = calibration_set(options.calib, options.calib_max_frames) if options.precision == "int8" else None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the bundle is meant to be shared and copied
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.work-", dir=out_dir.parent))
    try:
        manifest, trt_checks = _export_into(staging, work, source, options, calib, say)
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(bundle_dir=out_dir, manifest=manifest, trt_checks=trt_checks,
                        seconds=time.perf_counter() - started)


def _export_into(staging: Path, work: Path, source: Path, options: ExportOptions, calib,
                 say) -> tuple[BundleManifest, dict[str, object]]:
    """Write the whole bundle into `staging` (fp32 intermediates of reduced precisions go to `work`)."""
    from molmo_edge.export.bundle import write_manifest
    from molmo_edge.model.checkpoint import load_checkpoint
    from molmo_edge.processing.processor import Processor

    say(f"loading {source} (float32, CPU)")
    model = load_checkpoint(source, dtype=torch.float32, device="cpu").eval()
    processor = Processor.from_pretrained(source)
    fp32_dir = staging if options.precision == "fp32" else work / "fp32"
    specs = export_graphs(model, fp32_dir, options.opset, options.external_data, progress=say)
    samples = None
    if options.precision == "fp16":
        specs = _to_fp16(fp32_dir, staging, options, say)
    elif options.precision == "int8":
        say(f"reading calibration frames ({options.calib or DEFAULT_CALIBRATION})")
        samples = calibration_inputs(model, processor, list(calib))
        specs = _to_int8(fp32_dir, staging, samples, options, say)
    trt_checks = _check_graphs(staging, specs, say)
    engines: dict[str, EngineSpec] = {}
    if options.tensorrt:
        engines = _build_engines(fp32_dir, staging, specs, model.config, processor, samples, options, say)

    say("writing tokenizer, configs and manifest")
    processor.tokenizer.save(staging / TOKENIZER_FILE)
    config_dict = model.config.to_hf_dict()
    (staging / CONFIG_FILE).write_text(_json(config_dict), encoding="utf-8")
    processor.cfg.save_pretrained(staging)
    tools = {**tool_versions(), "onnx_opset": str(options.opset), "exporter": "torch.onnx (TorchScript)"}
    manifest = BundleManifest(config=config_dict, processing=processor.cfg.model_dump(mode="json"),
                              token_ids=_token_ids(model.config), precision=options.precision,
                              graphs=specs, engines=engines, tools=tools)
    manifest = write_manifest(staging, manifest)
    return manifest, trt_checks


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _to_fp16(fp32_dir: Path, staging: Path, options: ExportOptions, say) -> dict[str, GraphSpec]:
    from molmo_edge.export.onnx_io import describe_graph
    from molmo_edge.export.quantize import to_fp16

    specs = {}
    for name in io.GRAPH_NAMES:
        say(f"converting {name}.onnx to fp16")
        path = to_fp16(fp32_dir / f"{name}.onnx", staging / f"{name}.onnx", keep_io_types=True,
                       external_data=options.external_data)
        specs[name] = describe_graph(path)
    return specs


class _DropPreprocessHint(logging.Filter):
    """onnxruntime.quantization logs a "consider pre-processing" hint per call on the root logger;
    the exporter's graphs need none (shapes are declared, constants folded)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def _to_int8(fp32_dir: Path, staging: Path, samples, options: ExportOptions, say) -> dict[str, GraphSpec]:
    hint_filter = _DropPreprocessHint()
    logging.getLogger().addFilter(hint_filter)
    try:
        return _quantize_int8(fp32_dir, staging, samples, options, say)
    finally:
        logging.getLogger().removeFilter(hint_filter)


def _quantize_int8(fp32_dir: Path, staging: Path, samples, options: ExportOptions, say) -> dict[str, GraphSpec]:
    from molmo_edge.calibration.int8 import OnnxCalibrationReader
    from molmo_edge.export.onnx_io import describe_graph
    from molmo_edge.export.quantize import quantize_dynamic_int8, quantize_static_int8

    specs = {}
    for name in (io.VIT, io.CONNECTOR):
        say(f"quantising {name}.onnx: static int8 (Q/DQ), ranges from calibration")
        inputs = io.VIT_INPUTS if name == io.VIT else io.CONNECTOR_INPUTS
        reader = OnnxCalibrationReader(samples[name], input_names=inputs)
        path = quantize_static_int8(fp32_dir / f"{name}.onnx", staging / f"{name}.onnx", reader, for_tensorrt=True,
                                    external_data=options.external_data)
        specs[name] = describe_graph(path)
    say("quantising decoder.onnx: dynamic int8 weights")
    path = quantize_dynamic_int8(fp32_dir / "decoder.onnx", staging / "decoder.onnx", per_channel=True,
                                 external_data=options.external_data)
    specs[io.DECODER] = describe_graph(path)
    return specs


def _check_graphs(folder: Path, specs: dict[str, GraphSpec], say) -> dict[str, object]:
    """onnx.checker and the TensorRT parser table on every graph that goes into the bundle."""
    import onnx

    from molmo_edge.export.trt_ops import check_trt_support

    checks = {}
    for name, spec in specs.items():
        path = folder / spec.file
        onnx.checker.check_model(str(path))
        report = check_trt_support(path)
        checks[name] = report
        if not report.ok:
            say(f"note: {spec.file} will not build with TensorRT {report.tensorrt_version} "
                f"({', '.join(report.unsupported_op_types) or 'restrictions'}); ONNX Runtime runs it")
    return checks


def _build_engines(fp32_dir: Path, staging: Path, specs: dict[str, GraphSpec], config, processor, samples,
                   options: ExportOptions, say) -> dict[str, EngineSpec]:
    from molmo_edge.export.trt_engines import build_bundle_engines, crops_per_call, fixed_size_batches

    precision = options.precision
    sources = {name: (staging / f"{name}.onnx", precision) for name in io.GRAPH_NAMES}
    calibration = None
    if precision == "int8":
        # the dynamic-int8 decoder is ONNX Runtime only: TensorRT gets the fp32 graph, built fp16
        sources[io.DECODER] = (fp32_dir / "decoder.onnx", "fp16")
        if options.tensorrt_int8 == "calibrator":
            sources[io.VIT] = (fp32_dir / "vit.onnx", "int8")
            opt_crops = min(processor.cfg.max_crops + 1, crops_per_call(processor.cfg, options.engine_limits))
            calibration = {io.VIT: fixed_size_batches(samples[io.VIT], "pixel_values", opt_crops)}
    timing_cache = options.timing_cache or Path.home() / ".cache" / "molmo-edge" / "tensorrt" / "timing.cache"
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    return build_bundle_engines(sources, staging, specs, config, processor.cfg, options.engine_limits,
                                calibration=calibration, timing_cache=timing_cache, progress=say)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Replace out_dir's content with the staged bundle (out_dir may exist, empty or with --overwrite)."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
        try:
            staging.rename(out_dir)
        except OSError:
            old.rename(out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out_dir)


__all__ = ["DEFAULT_CALIBRATION", "ExportOptions", "ExportPrecision", "ExportResult", "calibration_inputs",
           "calibration_set", "export_bundle"]

"""TensorRT engines for a bundle: the shape profiles of each graph, and building them.

What TensorRT needs beyond the ONNX graph is the range of every dynamic axis (an optimisation
profile, min / opt / max). Those ranges follow from the model and processor settings:

- vit / connector: up to `max_crops + 1` crops per call for an image (global crop + tiles), and
  `video_frames_per_call` frames for video (the TensorRT backend encodes longer clips in chunks);
  up to one visual token per 2×2 patches of every crop; a pooling window of 4 (images) to 9 (video).
- decoder: two profiles in one engine, so prefill and decode steps each get their own kernels:
  prefill (seq 1..max_context, no past) and decode step (seq 1, past 1..max_context-1).

Which graph each engine is built from, by bundle precision:
  fp32  fp32 graphs, fp32 engines
  fp16  the fp16 graphs, strongly typed (their fp32 norm statistics stay fp32)
  int8  vit / connector: int8 from the Q/DQ graphs (explicit quantisation: the same scales ONNX
        Runtime uses). With `int8_mode="calibrator"` the vit is built instead from its fp32 graph
        with TensorRT's entropy calibrator and a calibration cache (TensorRT 10 only; calibration
        runs at the profile's opt shape, so the crops are regrouped into batches of exactly that
        size by `fixed_size_batches`). decoder: fp16 from the fp32 graph, because the bundle's
        dynamic-int8 decoder (MatMulInteger) is not in the TensorRT parser.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.engine import graph_io as io
from molmo_edge.export.manifest import EngineProfile, EngineSpec, GraphSpec
from molmo_edge.model.config import Molmo2Config
from molmo_edge.processing.config import ProcessorConfig

log = logging.getLogger(__name__)


class EngineLimits(BaseModel):
    """The largest inputs the engines accept (bigger engines take longer to build, not to run)."""

    model_config = ConfigDict(extra="forbid")

    max_context_tokens: int = Field(4096, ge=16, description="prompt + generated tokens per sequence")
    video_frames_per_call: int = Field(16, ge=1, description="frames per ViT call; longer clips run in chunks")
    opt_prompt_tokens: int = Field(1024, ge=1, description="prompt length the prefill kernels are tuned for")


def crops_per_call(processing: ProcessorConfig, limits: EngineLimits) -> int:
    return max(processing.max_crops + 1, limits.video_frames_per_call)


def engine_profiles(graph: str, config: Molmo2Config, processing: ProcessorConfig,
                    limits: EngineLimits | None = None) -> list[dict[str, tuple[int, int, int]]]:
    """(min, opt, max) of every symbolic dimension of `graph`, one dict per optimisation profile."""
    limits = limits or EngineLimits()
    max_crops = crops_per_call(processing, limits)
    image_crops = min(processing.max_crops + 1, max_crops)
    if graph == io.VIT:
        return [{io.DIM_CROPS: (1, image_crops, max_crops)}]
    if graph == io.CONNECTOR:
        side = config.vision.grid_size
        smallest_window = min(processing.image_pooling[0] * processing.image_pooling[1],
                              processing.video_pooling[0] * processing.video_pooling[1])
        pooling_side = min(processing.image_pooling + processing.video_pooling)
        tokens_per_crop = math.ceil(side[0] / pooling_side) * math.ceil(side[1] / pooling_side)
        largest_window = max(processing.image_pooling[0] * processing.image_pooling[1],
                             processing.video_pooling[0] * processing.video_pooling[1])
        return [{io.DIM_CROPS: (1, image_crops, max_crops),
                 io.DIM_TOKENS: (1, image_crops * tokens_per_crop, max_crops * tokens_per_crop),
                 io.DIM_WINDOW: (smallest_window, smallest_window, largest_window)}]
    if graph == io.DECODER:
        context = min(limits.max_context_tokens, config.text.max_position_embeddings)
        opt = min(limits.opt_prompt_tokens, context)
        prefill = {io.DIM_SEQ: (1, opt, context), io.DIM_VISUAL: (1, opt, context), io.DIM_PAST: (0, 0, 0),
                   io.DIM_TOTAL: (1, opt, context)}
        past_opt = min(opt, context - 1)
        step = {io.DIM_SEQ: (1, 1, 1), io.DIM_VISUAL: (1, 1, 1), io.DIM_PAST: (1, past_opt, context - 1),
                io.DIM_TOTAL: (2, past_opt + 1, context)}
        return [prefill, step]
    raise KeyError(f"no engine profiles for graph {graph!r}")


def graph_profiles(graph: str, spec: GraphSpec, config: Molmo2Config, processing: ProcessorConfig,
                   limits: EngineLimits | None = None) -> list[EngineProfile]:
    """The EngineProfiles (per input tensor) of one graph, checked against its declared inputs."""
    from molmo_edge.export.tensorrt import check_profiles, profile_from_dims

    profiles = [profile_from_dims(spec.inputs, dims) for dims in engine_profiles(graph, config, processing, limits)]
    check_profiles(spec, profiles)
    return profiles


def fixed_size_batches(samples: Iterable[dict[str, np.ndarray]], name: str, batch: int) -> list[dict[str, np.ndarray]]:
    """Regroup samples along axis 0 of input `name` into batches of exactly `batch` rows (the rest is
    dropped): TensorRT calibrates at one shape, the calibration profile's opt shape."""
    rows = [sample[name] for sample in samples]
    if not rows:
        return []
    stacked = np.concatenate(rows, axis=0)
    return [{name: np.ascontiguousarray(stacked[i:i + batch])} for i in range(0, len(stacked) - batch + 1, batch)]


def engine_max_context(profiles: list[EngineProfile]) -> int | None:
    """The longest sequence a decoder engine holds: the largest `total_seq` of its attention mask."""
    sizes = [p.shapes["attention_mask"].max[3] for p in profiles if "attention_mask" in p.shapes]
    return max(sizes) if sizes else None


def build_bundle_engines(sources: dict[str, tuple[Path, str]], bundle_dir: Path, specs: dict[str, GraphSpec],
                         config: Molmo2Config, processing: ProcessorConfig, limits: EngineLimits | None = None,
                         calibration: dict[str, Iterable[dict[str, np.ndarray]]] | None = None,
                         timing_cache: Path | None = None, progress=None) -> dict[str, EngineSpec]:
    """Build `<graph>.engine` in `bundle_dir` for each graph.

    sources: graph name -> (ONNX file to build from, engine precision). calibration: graph name ->
    input dicts for the entropy calibrator (only for graphs built int8 from a graph without Q/DQ);
    its table is cached next to the engine as `<graph>.calib` (reused while the graph is unchanged).
    """
    from molmo_edge.export.bundle import hash_file
    from molmo_edge.export.tensorrt import build_engine
    from molmo_edge.export.tensorrt_calibrator import CalibrationCache, make_entropy_calibrator

    engines: dict[str, EngineSpec] = {}
    for name, (onnx_path, precision) in sources.items():
        profiles = graph_profiles(name, specs[name], config, processing, limits)
        calibrator = None
        if calibration and name in calibration:
            cache = CalibrationCache(bundle_dir / f"{name}.calib", graph_sha256=hash_file(onnx_path).sha256)
            calibrator = make_entropy_calibrator(calibration[name], cache=cache)
        if progress is not None:
            progress(f"building TensorRT {precision} engine {name}.engine (minutes)")
        engines[name] = build_engine(onnx_path, bundle_dir / f"{name}.engine", precision=precision, profiles=profiles,
                                     calibrator=calibrator, timing_cache_path=timing_cache, graph_name=name)
    return engines


__all__ = ["EngineLimits", "build_bundle_engines", "crops_per_call", "engine_max_context", "engine_profiles",
           "fixed_size_batches", "graph_profiles"]

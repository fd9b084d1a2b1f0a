"""Backends side by side, and transformers' `generate` on the same weights: what `molmo-edge bench` measures.

    inputs = window_inputs(backend.processor, frames, timestamps_s, "Track all circles.")
    subjects = [BackendSubject(torch_backend), BackendSubject(onnx_backend),
                TransformersSubject.from_checkpoint("ckpt/")]
    report = run_benchmark(subjects, inputs, BenchSettings(repeats=5, new_tokens=64))
    json.dumps(report.to_dict())

Every subject gets the SAME processor tensors: a window of N video frames and its prompt, as the
stream builds it. Preprocessing (uint8 frames -> patches) is shared, so it is timed once
(`preprocess_ms`) and kept out of every subject's numbers. One repeat measures, per subject:

  vit_ms_per_frame  the ViT on the N frames in one call, divided by N
  connector_ms      pooling those features into the window's visual tokens
  prefill_ms        the prompt from ready visual tokens (KV cache built, last position's logits)
  window_ms         end to end: ViT + connector + prefill + M new tokens, greedy
  decode_tok_s      decode steps per second inside that window (M-1 steps: the first token comes
                    from the prefill)

EOS is ignored by default so that every subject generates exactly M tokens (`stop_at_eos=True`
gives the model's own answer length instead). Repeats are interleaved: repeat r runs every subject
before repeat r+1 starts, in an order rotated every repeat, so a slow spell of a shared machine
hits all subjects alike; the first `warmup` repeats are dropped. Each number is reported as
median, p90, mean, min, max over the repeats. Memory: each subject's first window runs with the
RSS sampled every millisecond (`peak_rss_delta_mb`, the working memory a window adds: arenas, KV
cache, activations; `peak_cuda_mb` on CUDA); loading costs are measured by `measure_load`. Every
subject's tokens are compared with the reference's (transformers when present): identical weights
and inputs must give the same greedy answer in float32 (up to the model's first EOS; past an EOS
that was ignored, near-ties can make rounding-level differences visible).

Decode speed is also put against the memory-bandwidth limit: each decode step reads every decoder
weight and the KV cache once, so tokens/s x bytes per token / bandwidth is the fraction of the
hardware's limit reached (`decode_bandwidth`; bandwidth from `KNOWN_GPU_BANDWIDTH_GB_S` or measured
with a copy kernel).

Modules: this one (settings, inputs, the interleaved loop, the report), `bench_subjects` (what is
measured: backends and transformers), `bench_machine` (machine description, RSS, bandwidth).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.engine.bench_machine import (KNOWN_GPU_BANDWIDTH_GB_S, RssSampler, decode_bandwidth,
                                             describe_machine, known_gpu_bandwidth, measure_copy_bandwidth,
                                             measure_load, release_freed_memory, rss_bytes)
from molmo_edge.engine.bench_subjects import (BackendSubject, Subject, TransformersSubject, WindowRun,
                                              import_transformers_molmo2)
from molmo_edge.errors import ConfigError, MolmoEdgeError

if TYPE_CHECKING:  # pragma: no cover
    from molmo_edge.processing.processor import ModelInputs, Processor

METRICS = ("window_ms", "decode_tok_s", "vit_ms_per_frame", "connector_ms", "prefill_ms")


class BenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    new_tokens: int = Field(64, ge=2, description="M: tokens generated per window (>= 2: one decode step at least)")
    repeats: int = Field(5, ge=1, description="measured repeats per subject")
    warmup: int = Field(1, ge=0, description="repeats run first and dropped")
    stop_at_eos: bool = Field(False, description="stop at the model's EOS (answer length) instead of exactly M")
    measure_memory: bool = Field(True, description="sample RSS (and CUDA memory) during each subject's first window")
    bandwidth_gb_s: float | None = Field(None, gt=0, description="memory bandwidth for decode_bandwidth; "
                                                                  "None = table of GPUs, else measured")


# ----------------------------------------------------------------------------- inputs
@dataclass
class WindowInputs:
    """One window as every subject sees it: the processor's tensors (CPU) and what they hold."""

    model_inputs: "ModelInputs"  # input_ids, mm_token_type_ids, pixel_values_videos, video_token_pooling, video_grids
    n_frames: int
    frame_size_px: tuple[int, int]  # (width, height) of the frames as given
    prompt: str
    preprocess_ms: float

    @property
    def pixel_values(self) -> torch.Tensor:
        return self.model_inputs["pixel_values_videos"]  # [N, P, ps²·3]

    @property
    def pooling(self) -> torch.Tensor:
        return self.model_inputs["video_token_pooling"]  # [T, 9]

    @property
    def prompt_tokens(self) -> int:
        return int(self.model_inputs["input_ids"].shape[1])

    @property
    def visual_tokens(self) -> int:
        return int((self.pooling >= 0).any(-1).sum())


def window_inputs(processor: "Processor", frames: Sequence[np.ndarray], timestamps_s: Sequence[float],
                  prompt: str) -> WindowInputs:
    """The processor tensors of a video window of `frames` (RGB uint8 [H, W, 3]) at `timestamps_s`."""
    if not frames:
        raise ConfigError("a benchmark window needs at least one frame")
    start = time.perf_counter()
    inputs = processor(prompt, video=(list(frames), list(timestamps_s)))
    preprocess_ms = (time.perf_counter() - start) * 1e3
    height, width = frames[0].shape[:2]
    return WindowInputs(inputs, len(frames), (int(width), int(height)), prompt, preprocess_ms)


def synthetic_frames(n_frames: int, width_px: int = 256, height_px: int = 256, seed: int = 0) -> list[np.ndarray]:
    """n RGB uint8 frames of a few coloured squares drifting over noise (no dependency on the scene generator)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, (height_px, width_px, 3), dtype=np.uint8)
    side = max(4, min(width_px, height_px) // 8)
    starts = rng.integers(0, [max(1, width_px - side), max(1, height_px - side)], size=(4, 2))
    colours = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    frames = []
    for i in range(n_frames):
        frame = background.copy()
        for (x0, y0), colour in zip(starts, colours):
            x = (x0 + 3 * i) % max(1, width_px - side)
            y = (y0 + 2 * i) % max(1, height_px - side)
            frame[y:y + side, x:x + side] = colour
        frames.append(frame)
    return frames


# ----------------------------------------------------------------------------- measuring
def summarize(values: Sequence[float]) -> dict[str, float] | None:
    """median, p90 (linear interpolation), mean, min, max, n of the values; None when there are none."""
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if data.size == 0:
        return None
    return {"median": float(np.median(data)), "p90": float(np.percentile(data, 90)), "mean": float(data.mean()),
            "min": float(data.min()), "max": float(data.max()), "n": int(data.size)}


@dataclass
class SubjectResult:
    name: str
    kind: str
    device: str
    precision: str
    samples: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    token_ids: list[int] = field(default_factory=list)
    decode_steps: int = 0
    peak_rss_delta_mb: float | None = None
    peak_cuda_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # load time/RSS, threads, bandwidth, ...

    def median(self, metric: str) -> float | None:
        stats = summarize(self.samples[metric])
        return None if stats is None else stats["median"]


def _timed_ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1e3, out


def _measure_once(subject: Subject, result: SubjectResult, n_frames: int, settings: BenchSettings,
                  keep: bool) -> None:
    vit_ms, _ = _timed_ms(subject.run_vit)
    connector_ms, _ = _timed_ms(subject.run_connector)
    prefill_ms, _ = _timed_ms(subject.run_prefill)
    window_ms, run = _timed_ms(subject.run_window)
    if not settings.stop_at_eos and len(run.token_ids) != settings.new_tokens:
        raise MolmoEdgeError(f"{subject.name} generated {len(run.token_ids)} tokens where every subject must generate "
                             f"exactly {settings.new_tokens}; its window time would not be comparable")
    if not keep:
        return
    has_connector = getattr(subject, "has_connector_stage", True)
    result.samples["vit_ms_per_frame"].append(vit_ms / n_frames)
    result.samples["connector_ms"].append(connector_ms if has_connector else None)
    result.samples["prefill_ms"].append(prefill_ms)
    result.samples["window_ms"].append(window_ms)
    result.samples["decode_tok_s"].append(run.decode_tok_s)
    result.token_ids, result.decode_steps = run.token_ids, run.decode_steps


def _first_window_memory(subject: Subject, result: SubjectResult) -> None:
    """The subject's first window ever, with RSS sampled: arenas, KV cache and activations get allocated here."""
    release_freed_memory()
    cuda = subject.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(subject.device)
        torch.cuda.reset_peak_memory_stats(subject.device)
        before = torch.cuda.memory_allocated(subject.device)
    with RssSampler() as sampler:
        subject.run_window()
    result.peak_rss_delta_mb = sampler.peak_delta_bytes / 2**20
    if cuda:
        result.peak_cuda_mb = (torch.cuda.max_memory_allocated(subject.device) - before) / 2**20


def run_benchmark(subjects: Sequence[Subject], inputs: WindowInputs, settings: BenchSettings | None = None,
                  progress: Callable[[str], None] | None = None) -> "BenchReport":
    """Measure every subject on `inputs`, interleaved (see the module docstring)."""
    settings = settings or BenchSettings()
    if not subjects:
        raise ConfigError("nothing to benchmark: give at least one backend")
    names = [s.name for s in subjects]
    if len(set(names)) != len(names):
        raise ConfigError(f"subject names must differ, got {names}")
    say = progress or (lambda message: None)
    results = {s.name: SubjectResult(s.name, s.kind, str(s.device), s.precision, extra=dict(getattr(s, "extra", {})))
               for s in subjects}
    for subject in subjects:
        say(f"preparing {subject.name}")
        subject.prepare(inputs, settings)
        if settings.measure_memory:
            _first_window_memory(subject, results[subject.name])
    total = settings.warmup + settings.repeats
    for repeat in range(total):
        keep = repeat >= settings.warmup
        shift = repeat % len(subjects)
        for subject in list(subjects[shift:]) + list(subjects[:shift]):  # rotate the order every repeat
            _measure_once(subject, results[subject.name], inputs.n_frames, settings, keep)
        say(f"repeat {repeat + 1}/{total}{'' if keep else ' (warm-up)'}: " + ", ".join(
            f"{n} {results[n].samples['window_ms'][-1]:.0f} ms" for n in names if keep and results[n].samples['window_ms']))
    bandwidth = _bandwidth_for(subjects, settings)
    for subject in subjects:
        result = results[subject.name]
        if bandwidth is not None and result.median("decode_tok_s"):
            context = inputs.prompt_tokens + settings.new_tokens / 2
            result.extra["decode_bandwidth"] = decode_bandwidth(
                subject.config, subject.weight_bytes_per_param, context, result.median("decode_tok_s"), *bandwidth)
    return BenchReport(settings=settings, inputs=inputs, results=[results[n] for n in names],
                       stop_token_ids=list(subjects[0].config.stop_token_ids))


def _bandwidth_for(subjects: Sequence[Subject], settings: BenchSettings) -> tuple[float, str] | None:
    if settings.bandwidth_gb_s is not None:
        return settings.bandwidth_gb_s, "given"
    device = subjects[0].device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        table = known_gpu_bandwidth(name)
        if table is not None:
            return table, f"data sheet ({name})"
        return measure_copy_bandwidth(device, 1 << 30), "measured copy kernel"
    return measure_copy_bandwidth("cpu"), "measured copy kernel (CPU, torch threads)"


# ----------------------------------------------------------------------------- the report
@dataclass
class BenchReport:
    settings: BenchSettings
    inputs: WindowInputs
    results: list[SubjectResult]
    stop_token_ids: list[int] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=describe_machine)

    def result(self, name: str) -> SubjectResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    @property
    def reference(self) -> SubjectResult:
        """transformers when it was measured, else the first subject: what tokens and speed-ups are put against."""
        return next((r for r in self.results if r.kind == "transformers"), self.results[0])

    def to_dict(self) -> dict[str, Any]:
        reference = self.reference
        has_transformers = reference.kind == "transformers"
        stop_ids = set(self.stop_token_ids)
        records = []
        for result in self.results:
            record: dict[str, Any] = {"name": result.name, "backend": result.kind, "device": result.device,
                                      "precision": result.precision}
            record.update({metric: result.median(metric) for metric in METRICS})
            if has_transformers and result is not reference:
                record["speedup_vs_transformers"] = _ratio(reference.median("window_ms"), result.median("window_ms"))
                record["stage_speedup_vs_transformers"] = {
                    "vit": _ratio(reference.median("vit_ms_per_frame"), result.median("vit_ms_per_frame")),
                    "connector": _ratio(reference.median("connector_ms"), result.median("connector_ms")),
                    "prefill": _ratio(reference.median("prefill_ms"), result.median("prefill_ms")),
                    "decode": _ratio(result.median("decode_tok_s"), reference.median("decode_tok_s"))}
            record["same_tokens_as_reference"] = result.token_ids == reference.token_ids
            record["first_token_difference"] = first_difference(result.token_ids, reference.token_ids)
            record["tokens_generated"] = len(result.token_ids)
            answer = answer_length(reference.token_ids, stop_ids)
            record["answer_tokens"] = answer
            record["same_answer_as_reference"] = result.token_ids[:answer] == reference.token_ids[:answer]
            record["token_ids"] = result.token_ids
            record["stats"] = {metric: summarize(result.samples[metric]) for metric in METRICS}
            record["peak_rss_delta_mb"] = result.peak_rss_delta_mb
            record["peak_cuda_mb"] = result.peak_cuda_mb
            record.update(result.extra)
            records.append(record)
        return {
            "kind": "molmo-edge-bench", "version": 1, "machine": self.machine,
            "settings": self.settings.model_dump(),
            "window": {"frames": self.inputs.n_frames, "frame_size_px": list(self.inputs.frame_size_px),
                       "prompt": self.inputs.prompt, "prompt_tokens": self.inputs.prompt_tokens,
                       "visual_tokens": self.inputs.visual_tokens, "preprocess_ms": self.inputs.preprocess_ms},
            "reference": reference.name, "records": records,
        }

    def table(self) -> str:
        """A plain-text table of the medians (p90 in brackets), one row per subject."""
        rows = self.to_dict()["records"]
        header = (f"{'subject':<16}{'window ms':>20}{'decode tok/s':>15}{'ViT ms/frame':>15}{'connector ms':>14}"
                  f"{'prefill ms':>12}{'vs transformers':>17}{'same answer':>13}")
        lines = [header, "-" * len(header)]
        for row in rows:
            stats = row["stats"]
            window = stats["window_ms"]
            speedup = row.get("speedup_vs_transformers")
            lines.append(
                f"{row['name']:<16}{window['median']:>11.1f} ({window['p90']:>6.1f}){_fmt(row['decode_tok_s']):>15}"
                f"{_fmt(row['vit_ms_per_frame']):>15}{_fmt(row['connector_ms']):>14}{_fmt(row['prefill_ms']):>12}"
                f"{(f'{speedup:.2f}x' if speedup else '-'):>17}{str(row['same_answer_as_reference']):>13}")
        return "\n".join(lines)


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where two token lists differ (a length difference counts); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def answer_length(tokens: Sequence[int], stop_ids: set[int]) -> int:
    """Tokens up to and including the model's first EOS (all of them when there is none): past an EOS
    that was ignored, greedy decoding continues on text the model never learned to write, where
    near-ties make a rounding-level difference between two runtimes visible."""
    return next((i + 1 for i, t in enumerate(tokens) if t in stop_ids), len(tokens))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


__all__ = [
    "BackendSubject", "BenchReport", "BenchSettings", "KNOWN_GPU_BANDWIDTH_GB_S", "METRICS", "RssSampler", "Subject",
    "SubjectResult", "TransformersSubject", "WindowInputs", "WindowRun", "answer_length", "decode_bandwidth",
    "describe_machine", "first_difference", "import_transformers_molmo2", "known_gpu_bandwidth",
    "measure_copy_bandwidth", "measure_load", "release_freed_memory", "rss_bytes", "run_benchmark", "summarize",
    "synthetic_frames", "window_inputs",
]

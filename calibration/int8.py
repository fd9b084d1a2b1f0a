"""INT8 calibration data: representative RGB frames, turned into graph inputs, fed to a quantiser.

Static INT8 needs activation ranges measured on real-looking inputs. This module supplies them:
1. frames (RGB uint8 [H, W, 3]) from a video file, an image folder or the synthetic scene
   generator, subsampled deterministically (evenly spaced, so a long video is covered end to end
   and two runs pick the same frames);
2. a hook `to_inputs(frame) -> {input name: numpy array}` that turns one frame into the inputs of
   the graph being calibrated (the exporter passes the Molmo2 processor here: frame -> patches);
3. readers over those input dicts: `OnnxCalibrationReader` for ONNX Runtime's `quantize_static`,
   and the same dicts go to TensorRT's entropy calibrator (`molmo_edge.export.tensorrt_calibrator`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from molmo_edge.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
InputDict = dict[str, np.ndarray]

try:  # ONNX Runtime is an optional dependency (the "onnx" extra); the reader duck-types without it.
    from onnxruntime.quantization import CalibrationDataReader as _ReaderBase
except ImportError:  # pragma: no cover - exercised only without onnxruntime
    _ReaderBase = object  # type: ignore[assignment,misc]


def evenly_spaced_indices(n_total: int, max_count: int) -> list[int]:
    """`min(n_total, max_count)` distinct indices spread evenly over `range(n_total)`, first and last included."""
    if n_total < 0 or max_count < 0:
        raise ValueError("n_total and max_count must be >= 0")
    if n_total == 0 or max_count == 0:
        return []
    if max_count >= n_total:
        return list(range(n_total))
    if max_count == 1:
        return [0]
    # Integer arithmetic (no float rounding): i * (n - 1) / (k - 1), floored; strictly increasing
    # because the step (n - 1) / (k - 1) is >= 1 when k <= n.
    return [i * (n_total - 1) // (max_count - 1) for i in range(max_count)]


def _count_video_frames(path: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise SourceError(f"cannot open calibration video {path} (unsupported codec or damaged file)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count > 0:
            return count
        # Some containers store no frame count: count by grabbing, on a capture of its own so the
        # reading pass starts cleanly at frame 0 (seeking back is unreliable in several backends).
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def frames_from_video(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB frames of a video file, `max_frames` of them evenly spaced over its whole length."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"calibration video {path} not found")
    n_total = _count_video_frames(path)
    capture = cv2.VideoCapture(str(path))
    try:
        wanted = evenly_spaced_indices(n_total, n_total if max_frames is None else max_frames)
        wanted_set = set(wanted)
        index = 0
        while wanted_set and index <= wanted[-1]:
            if not capture.grab():
                log.warning("%s: stream ended at frame %d of %d", path, index, n_total)
                break
            if index in wanted_set:
                ok, bgr = capture.retrieve()
                if ok:
                    yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                else:
                    log.warning("%s: could not decode frame %d, skipped", path, index)
            index += 1
    finally:
        capture.release()


def frames_from_images(folder: str | Path, max_frames: int | None = None,
                       extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Iterator[np.ndarray]:
    """RGB images of a folder (sorted by name, subfolders included), `max_frames` evenly spaced."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"calibration image folder {folder} not found")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not paths:
        raise SourceError(f"no images ({', '.join(extensions)}) in calibration folder {folder}")
    for i in evenly_spaced_indices(len(paths), len(paths) if max_frames is None else max_frames):
        bgr = cv2.imread(str(paths[i]), cv2.IMREAD_COLOR)
        if bgr is None:
            log.warning("skipping unreadable calibration image %s", paths[i])
            continue
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def frames_from_synthetic(n_frames: int, seed: int = 0, width: int = 384, height: int = 384,
                          frames_per_scene: int = 4, fps: float = 2.0) -> Iterator[np.ndarray]:
    """Frames of procedurally generated scenes (the task the shipped model is trained on).

    Scene i uses seed `seed + i`; each scene contributes `frames_per_scene` frames sampled at
    `fps`, so moving objects appear at several positions.
    """
    try:
        from molmo_edge.training.scenes import SceneSimulator
    except ImportError as exc:
        raise ConfigError(
            f"the synthetic calibration source needs molmo_edge.training.scenes ({exc}); "
            "use a video or an image folder instead"
        ) from None
    produced = 0
    scene = 0
    while produced < n_frames:
        simulator = SceneSimulator(seed=seed + scene, width=width, height=height)
        for k in range(frames_per_scene):
            if produced >= n_frames:
                break
            yield np.ascontiguousarray(simulator.frame_at(k / fps).rgb)
            produced += 1
        scene += 1


class CalibrationSetConfig(BaseModel):
    """Where calibration frames come from, and how many (the same settings from CLI, YAML or Python)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["video", "images", "synthetic"] = "synthetic"
    path: Path | None = None
    max_frames: int = Field(default=128, ge=1)
    seed: int = 0
    width: int = Field(default=384, ge=16, description="synthetic frames only")
    height: int = Field(default=384, ge=16, description="synthetic frames only")
    frames_per_scene: int = Field(default=4, ge=1, description="synthetic frames only")

    @model_validator(mode="after")
    def _path_when_needed(self) -> "CalibrationSetConfig":
        if self.source in ("video", "images") and self.path is None:
            raise ValueError(f"a {self.source} calibration source needs a path")
        return self


class CalibrationSet:
    """A deterministic, re-iterable set of calibration frames (each pass yields the same frames)."""

    def __init__(self, config: CalibrationSetConfig):
        # Fail here, not at the first frame of a pass that may start minutes later.
        if config.source == "video" and not config.path.is_file():
            raise SourceError(f"calibration video {config.path} not found")
        if config.source == "images" and not config.path.is_dir():
            raise SourceError(f"calibration image folder {config.path} not found")
        self.config = config

    @classmethod
    def from_video(cls, path: str | Path, max_frames: int = 128) -> "CalibrationSet":
        return cls(CalibrationSetConfig(source="video", path=Path(path), max_frames=max_frames))

    @classmethod
    def from_images(cls, folder: str | Path, max_frames: int = 128) -> "CalibrationSet":
        return cls(CalibrationSetConfig(source="images", path=Path(folder), max_frames=max_frames))

    @classmethod
    def synthetic(cls, max_frames: int = 128, seed: int = 0, width: int = 384, height: int = 384) -> "CalibrationSet":
        return cls(CalibrationSetConfig(source="synthetic", max_frames=max_frames, seed=seed,
                                        width=width, height=height))

    def __iter__(self) -> Iterator[np.ndarray]:
        c = self.config
        if c.source == "video":
            return frames_from_video(c.path, c.max_frames)
        if c.source == "images":
            return frames_from_images(c.path, c.max_frames)
        return frames_from_synthetic(c.max_frames, seed=c.seed, width=c.width, height=c.height,
                                     frames_per_scene=c.frames_per_scene)


class CalibrationInputs:
    """Graph inputs made from calibration frames: a re-iterable of `{input name: array}` dicts.

    `to_inputs(frame)` maps one RGB frame to one input dict; the same names must come back for
    every frame. At most `max_samples` dicts are produced. A progress bar shows the pass (calibration
    runs the model once per sample and takes a while on big graphs).
    """

    def __init__(self, frames: Iterable[np.ndarray], to_inputs: Callable[[np.ndarray], InputDict],
                 max_samples: int | None = None, progress: bool = True, description: str = "calibration"):
        if max_samples is not None and max_samples < 1:
            raise ConfigError(f"max_samples must be >= 1, got {max_samples}")
        self.frames = frames
        self.to_inputs = to_inputs
        self.max_samples = max_samples
        self.progress = progress
        self.description = description

    def _total(self) -> int | None:
        config = getattr(self.frames, "config", None)
        known = [n for n in (self.max_samples, getattr(config, "max_frames", None)) if n is not None]
        if hasattr(self.frames, "__len__"):
            known.append(len(self.frames))  # type: ignore[arg-type]
        return min(known) if known else None

    def __iter__(self) -> Iterator[InputDict]:
        from tqdm.auto import tqdm

        names: tuple[str, ...] | None = None
        produced = 0
        bar = tqdm(total=self._total(), desc=self.description, unit="sample", disable=not self.progress)
        try:
            for frame in self.frames:
                if self.max_samples is not None and produced >= self.max_samples:
                    break
                sample = self.to_inputs(frame)
                if not isinstance(sample, dict) or not sample:
                    raise ConfigError(f"to_inputs must return a non-empty dict of input name -> numpy array, "
                                      f"got {type(sample).__name__}")
                sample = {str(k): np.ascontiguousarray(v) for k, v in sample.items()}
                if names is None:
                    names = tuple(sorted(sample))
                elif tuple(sorted(sample)) != names:
                    raise ConfigError(f"to_inputs returned inputs {sorted(sample)} after {list(names)}; "
                                      "every sample must have the same input names")
                produced += 1
                bar.update(1)
                yield sample
        finally:
            bar.close()
        if produced == 0:
            raise ConfigError("the calibration set produced no samples; check its source")

    def materialize(self) -> list[InputDict]:
        """All samples in a list (for small sets, so the frames are decoded only once)."""
        return list(self)


class OnnxCalibrationReader(_ReaderBase):
    """ONNX Runtime `CalibrationDataReader` over input dicts (e.g. a `CalibrationInputs`).

    `input_names`, when given, are checked against every sample (a wrong name would otherwise
    surface as an opaque ONNX Runtime error halfway through calibration). `rewind()` restarts from
    the beginning for calibrators that take several passes.
    """

    def __init__(self, inputs: Iterable[InputDict], input_names: Iterable[str] | None = None):
        self.inputs = inputs
        self.input_names = None if input_names is None else set(input_names)
        self._iterator: Iterator[InputDict] | None = None
        self.samples_read = 0

    def get_next(self) -> InputDict | None:
        if self._iterator is None:
            self._iterator = iter(self.inputs)
        sample = next(self._iterator, None)
        if sample is None:
            return None
        if self.input_names is not None and set(sample) != self.input_names:
            raise ConfigError(
                f"calibration sample has inputs {sorted(sample)}, the graph expects {sorted(self.input_names)}"
            )
        self.samples_read += 1
        return sample

    def rewind(self) -> None:
        self._iterator = None
        self.samples_read = 0

"""Write synthetic scenes to disk as real media files plus a versioned `ground_truth.json`.

Layout of a dataset folder:

    ground_truth.json           GroundTruth (version 1), written last: a folder without it is
                                an unfinished run
    images/000000.png           one PNG per image item, or
    videos/000000.mp4           one video per video item (mp4v; MJPG .avi where mp4v is missing)
    masks/000000/0000.png       per item and frame, the label map as an 8-bit PNG: 0 background,
                                k = object k; lossless and small (flat regions compress well)

Each item stores the seed of its scene, so `SceneSimulator(item.seed, item.width, item.height,
config=gt.scene_config)` re-creates it exactly (evaluation can render on the fly instead of
decoding lossy video).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from molmo_edge.errors import ConfigError, MolmoEdgeError
from molmo_edge.training.scenes import Frame, SceneConfig, SceneSimulator

GROUND_TRUTH_VERSION = 1
GROUND_TRUTH_FILE = "ground_truth.json"


class GroundTruthError(MolmoEdgeError, ValueError):
    """A dataset folder whose ground truth is missing, unreadable or from a newer molmo-edge."""


class ObjectTruth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object_id: int
    shape: str
    color: str
    center_px: tuple[float, float]  # (x, y), may lie outside the frame
    size_px: float
    visible_fraction: float
    depth_m: float


class FrameTruth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int  # 0-based frame number in the media file
    t_s: float  # seconds from the item's start
    mask_file: str  # label-map PNG, relative to the dataset folder
    objects: list[ObjectTruth]


class ItemTruth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str  # media file, relative to the dataset folder
    kind: Literal["image", "video"]
    width: int
    height: int
    fps: float | None  # None for images
    seed: int  # scene seed: SceneSimulator(seed, width, height, config=...) re-creates it
    frames: list[FrameTruth]


class GroundTruth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = GROUND_TRUTH_VERSION
    seed: int
    scene_config: SceneConfig
    items: list[ItemTruth] = Field(default_factory=list)


def scene_seed(dataset_seed: int, index: int) -> int:
    """A well-mixed, reproducible seed for item `index` of a dataset (no overlap between datasets
    whose seeds differ by small numbers, unlike `seed + index`)."""
    state = np.random.SeedSequence(entropy=int(dataset_seed), spawn_key=(int(index),)).generate_state(2)
    return (int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1)  # fits a signed 64-bit JSON reader


def parse_size(text: str) -> tuple[int, int]:
    """'320x240' -> (320, 240)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 256x256") from None
    if w < 16 or h < 16:
        raise ConfigError(f"size {text!r} is too small; use at least 16x16")
    return w, h


def _object_truths(frame: Frame) -> list[ObjectTruth]:
    return [ObjectTruth(object_id=o.object_id, shape=o.shape, color=o.color, center_px=o.center_px,
                        size_px=o.size_px, visible_fraction=o.visible_fraction, depth_m=o.depth_m)
            for o in frame.objects]


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise MolmoEdgeError(f"could not write {path}; is the disk full or the folder read-only?")


def _open_video_writer(stem: Path, fps: float, width: int, height: int) -> tuple[cv2.VideoWriter, Path]:
    # mp4v is in every opencv-python(-headless) wheel on Linux and reads back through the same
    # FFmpeg; MJPG/.avi is the fallback for builds without it.
    for fourcc, suffix in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        path = stem.with_suffix(suffix)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
        if writer.isOpened():
            return writer, path
        writer.release()
        path.unlink(missing_ok=True)
    raise MolmoEdgeError("OpenCV can write neither mp4v nor MJPG video here; use --image instead")


def write_synthetic_dataset(out_dir: str | Path, n: int, seed: int = 0, video: bool = False,
                            n_frames: int = 8, fps: float = 2.0, width: int = 256, height: int = 256,
                            config: SceneConfig | None = None, overwrite: bool = False,
                            progress: bool = True) -> GroundTruth:
    """Render `n` scenes (images, or videos of `n_frames` frames at `fps`) into `out_dir`."""
    out = Path(out_dir)
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if video and (n_frames < 1 or fps <= 0):
        raise ConfigError(f"a video needs --frames >= 1 and --fps > 0, got {n_frames} and {fps}")
    if (out / GROUND_TRUTH_FILE).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a dataset; choose another --out or pass --overwrite")
    config = config or SceneConfig()
    media_dir = out / ("videos" if video else "images")
    try:
        media_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror}; choose another --out") from None
    gt = GroundTruth(seed=int(seed), scene_config=config)
    for index in tqdm(range(n), desc="synth", unit="video" if video else "image", disable=not progress):
        item_seed = scene_seed(seed, index)
        sim = SceneSimulator(item_seed, width, height, config=config)
        mask_dir = out / "masks" / f"{index:06d}"
        mask_dir.mkdir(parents=True, exist_ok=True)
        times_s = [k / fps for k in range(n_frames)] if video else [0.0]
        frames: list[FrameTruth] = []
        writer = None
        if video:
            writer, media_path = _open_video_writer(media_dir / f"{index:06d}", fps, width, height)
        else:
            media_path = media_dir / f"{index:06d}.png"
        try:
            for k, t_s in enumerate(times_s):
                frame = sim.frame_at(t_s)
                bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
                if writer is not None:
                    writer.write(bgr)
                else:
                    _write_png(media_path, bgr)
                mask_path = mask_dir / f"{k:04d}.png"
                _write_png(mask_path, frame.label_map)
                frames.append(FrameTruth(index=k, t_s=round(t_s, 6), mask_file=mask_path.relative_to(out).as_posix(),
                                         objects=_object_truths(frame)))
        finally:
            if writer is not None:
                writer.release()
        gt.items.append(ItemTruth(file=media_path.relative_to(out).as_posix(), kind="video" if video else "image",
                                  width=width, height=height, fps=float(fps) if video else None,
                                  seed=item_seed, frames=frames))
    # written last and atomically: an interrupted run leaves no file that claims to be complete
    tmp = out / (GROUND_TRUTH_FILE + ".tmp")
    tmp.write_text(gt.model_dump_json())
    os.replace(tmp, out / GROUND_TRUTH_FILE)
    return gt


def load_ground_truth(folder: str | Path) -> GroundTruth:
    """Read and validate `folder/ground_truth.json`."""
    path = Path(folder) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise GroundTruthError(f"{path} not found; create a dataset with `molmo-edge synth --out {folder}`")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GroundTruthError(f"{path} is not readable JSON ({exc}); re-create the dataset") from None
    version = raw.get("version") if isinstance(raw, dict) else None
    if not isinstance(version, int) or version > GROUND_TRUTH_VERSION:
        raise GroundTruthError(f"{path} has version {version!r}; this molmo-edge reads up to "
                               f"{GROUND_TRUTH_VERSION}; upgrade molmo-edge")
    try:
        return GroundTruth.model_validate(raw)
    except ValidationError as exc:
        raise GroundTruthError(f"{path} does not match the ground-truth schema: {exc.errors()[0]}") from None


def load_label_map(folder: str | Path, frame: FrameTruth) -> np.ndarray:
    """The label map of one frame. -> uint8 [H, W] (0 background, k = object k)."""
    path = Path(folder) / frame.mask_file
    label_map = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label_map is None or label_map.ndim != 2:
        raise GroundTruthError(f"mask {path} is missing or not a single-channel PNG")
    return label_map


def read_media(folder: str | Path, item: ItemTruth) -> list[np.ndarray]:
    """Decode an item's media file. -> list of uint8 [H, W, 3] RGB frames."""
    path = Path(folder) / item.file
    if item.kind == "image":
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise GroundTruthError(f"image {path} is missing or unreadable")
        return [cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)]
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise GroundTruthError(f"video {path} is missing or unreadable")
    return frames

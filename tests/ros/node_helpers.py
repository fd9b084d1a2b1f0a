"""Shared by the node tests and the helper processes: a synthetic camera (colour, depth, CameraInfo
from `training.scenes.SceneSimulator`) and the independent geometry the tests check the node with."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from molmo_edge.ros.headers import make_header
from molmo_edge.ros.image_conversion import numpy_to_image
from molmo_edge.training.scenes import SceneSimulator

# A pinhole camera without distortion for the synthetic scenes (focal length of a ~65° lens).
FOCAL_PX = 200.0
FRAME_ID = "synthetic_camera_optical"


def camera_info(width_px: int, height_px: int, stamp_ns: int, frame_id: str = FRAME_ID) -> CameraInfo:
    cx, cy = (width_px - 1) / 2.0, (height_px - 1) / 2.0
    msg = CameraInfo(header=make_header(stamp_ns, frame_id), width=width_px, height=height_px,
                     distortion_model="plumb_bob")
    msg.d = [0.0] * 5
    msg.k = [FOCAL_PX, 0.0, cx, 0.0, FOCAL_PX, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [FOCAL_PX, 0.0, cx, 0.0, 0.0, FOCAL_PX, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def depth_message(depth_m: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = FRAME_ID) -> Image:
    """float32 metres [H, W] → 32FC1 (metres) or 16UC1 (millimetres) Image."""
    if encoding == "32FC1":
        return numpy_to_image(depth_m.astype(np.float32), encoding, make_header(stamp_ns, frame_id))
    return numpy_to_image(np.round(depth_m * 1000.0).astype(np.uint16), encoding, make_header(stamp_ns, frame_id))


@dataclass
class SyntheticCamera:
    """`SceneSimulator(seed)` as a camera: frame k is the scene at t = k / fps, stamped start + t."""

    seed: int
    fps: float = 4.0
    width_px: int = 256
    height_px: int = 256
    start_ns: int = 0
    depth_encoding: str = "32FC1"

    def __post_init__(self) -> None:
        self.scene = SceneSimulator(self.seed, self.width_px, self.height_px)
        if not self.start_ns:
            self.start_ns = time.time_ns()

    def stamp_ns(self, k: int) -> int:
        return self.start_ns + int(round(k / self.fps * 1e9))

    def t_s(self, stamp_ns: int) -> float:
        """Scene time of a stamp this camera gave (outputs copy the stamp: this finds the frame)."""
        return round((stamp_ns - self.start_ns) / 1e9 * self.fps) / self.fps

    def messages(self, k: int) -> tuple[Image, Image, CameraInfo]:
        """(colour rgb8, depth, camera_info) of frame k, all with the same stamp."""
        t_s, stamp = k / self.fps, self.stamp_ns(k)
        rgb = self.scene.frame_at(t_s).rgb
        return (numpy_to_image(rgb, "rgb8", make_header(stamp, FRAME_ID)),
                depth_message(self.scene.depth_at(t_s), self.depth_encoding, stamp),
                camera_info(self.width_px, self.height_px, stamp))


def median_depth_m(depth_m: np.ndarray, u_px: float, v_px: float, window_px: int = 5) -> float:
    """The reference for the node's z: median of the valid depths in a window around the pixel."""
    col, row, half = int(round(u_px)), int(round(v_px)), window_px // 2
    patch = depth_m[max(row - half, 0): row + half + 1, max(col - half, 0): col + half + 1].ravel()
    patch = patch[np.isfinite(patch) & (patch > 0)]
    return float(np.median(patch)) if patch.size else float("nan")


def expected_xyz_m(u_px: float, v_px: float, z_m: float, width_px: int, height_px: int) -> tuple[float, float, float]:
    """Pinhole deprojection with the synthetic camera's K (no distortion)."""
    cx, cy = (width_px - 1) / 2.0, (height_px - 1) / 2.0
    return ((u_px - cx) * z_m / FOCAL_PX, (v_px - cy) * z_m / FOCAL_PX, z_m)


def object_under(scene: SceneSimulator, t_s: float, u_px: float, v_px: float, grow_px: int = 0) -> int:
    """Scene object id whose visible mask holds the pixel (0: background), masks grown by grow_px."""
    label_map = scene.frame_at(t_s).label_map
    col, row = int(round(u_px)), int(round(v_px))
    h, w = label_map.shape
    if not (0 <= col < w and 0 <= row < h):
        return 0
    patch = label_map[max(row - grow_px, 0): row + grow_px + 1, max(col - grow_px, 0): col + grow_px + 1]
    ids = patch[patch > 0]
    return int(np.bincount(ids).argmax()) if ids.size else 0


def shape_area_fraction(scene: SceneSimulator, t_s: float, shape: str, grow_px: int = 0) -> float:
    """Chance level for `object_under(..., grow_px)` landing on a `shape`: the fraction of the
    image within grow_px of a visible `shape` pixel (an upper bound: object_under takes the
    majority label of the window, this counts any `shape` pixel in it)."""
    frame = scene.frame_at(t_s)
    ids = [o.object_id for o in frame.objects if o.shape == shape]
    mask = np.isin(frame.label_map, ids).astype(np.uint8)  # [H, W] 1 on a visible `shape` pixel
    if grow_px:
        mask = cv2.dilate(mask, np.ones((2 * grow_px + 1, 2 * grow_px + 1), np.uint8))
    return float(mask.mean())


def chance_tail_probability(hits: int, chances: list[float]) -> float:
    """P(at least `hits` successes) for independent trials with these success probabilities
    (Poisson binomial, exact by dynamic programming): how likely points thrown uniformly at
    random would land on the objects as often as the model's did."""
    dist = np.zeros(len(chances) + 1)
    dist[0] = 1.0  # dist[k]: P(k successes so far)
    for p in chances:
        dist[1:] = dist[1:] * (1.0 - p) + dist[:-1] * p
        dist[0] *= 1.0 - p
    return float(dist[hits:].sum())


def visible_shape_query(scene: SceneSimulator, start_s: float = 0.0, end_s: float = 40.0) -> tuple[str, str]:
    """(shape, 'Track all <shape>s.') for the shape that stays in view longest: the one whose best
    visible object is most visible at its worst moment between start_s and end_s (sampled every
    0.5 s). A node's first window comes seconds after the camera starts (the model loads), so the
    query has to hold for the whole run, not only at t = 0."""
    worst = {o.shape: 1.0 for o in scene.objects}  # in the scene's order: ties break the same way every run
    for t_s in np.arange(start_s, end_s + 1e-9, 0.5):
        best_now: dict[str, float] = {}
        for o in scene.frame_at(float(t_s)).objects:
            best_now[o.shape] = max(best_now.get(o.shape, 0.0), o.visible_fraction)
        for shape in worst:
            worst[shape] = min(worst[shape], best_now.get(shape, 0.0))
    shape = max(worst, key=worst.get, default=None)
    if shape is None or worst[shape] < 0.5:
        raise ValueError(f"scene {scene.seed} keeps no shape well in view from {start_s} to {end_s} s")
    return shape, f"Track all {shape}s."


def wait_for(predicate: Callable[[], bool], timeout_s: float, spin: Callable[[], None]) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        spin()
    return predicate()


def call_service(client, request, spin: Callable[[], None], timeout_s: float = 60.0, retry_after_s: float = 0.0):
    """The reply to `request`, or None after `timeout_s`. With `retry_after_s`, the request is sent
    again when no reply came in that time: a reply is lost while the server has not discovered the
    client's reply reader yet (`service_is_ready` covers only the request direction). Retry only
    requests that can be repeated (GetState, not ChangeState)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        future = client.call_async(request)
        wait_s = retry_after_s or timeout_s
        if wait_for(future.done, min(wait_s, deadline - time.monotonic()), spin):
            return future.result()
        client.remove_pending_request(future)
        if not retry_after_s:
            break
    return None

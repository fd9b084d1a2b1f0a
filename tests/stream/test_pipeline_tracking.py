"""Track ids across windows, scored against the synthetic scene's ground truth.

The model here is `SceneOracleBackend` (oracle_model.py): a deterministic Backend that answers
every window the way the training data does. What is under test is window -> parse -> tracker ->
events: whether the pipeline turns correct window-local answers into persistent, correct tracks.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from molmo_edge.engine.engine import Engine
from molmo_edge.grounding import GroundedPoint
from molmo_edge.stream.pipeline import Pipeline, latest_objects
from molmo_edge.stream.sampler import FrameSampler
from molmo_edge.training.metrics import score_tracks
from molmo_edge.training.tasks import Media, Query, TaskConfig, build_example
from tests.stream.oracle_model import SceneOracleBackend

SEED, W_PX, H_PX = 7, 160, 120  # three stars (and a square) moving through the frame
SOURCE_FPS, DURATION_S = 5.0, 12.0


@pytest.fixture(scope="module")
def oracle(tiny_checkpoint_dir: Path) -> SceneOracleBackend:
    return SceneOracleBackend(tiny_checkpoint_dir, SEED, W_PX, H_PX, SOURCE_FPS, DURATION_S)


def run(oracle: SceneOracleBackend, queries, **settings):
    pipeline = Pipeline(Engine(oracle), source=f"synthetic:{SEED}:{W_PX}x{H_PX}", queries=queries,
                        source_options={"realtime": False, "fps": SOURCE_FPS, "duration_s": DURATION_S},
                        **{"window": 8, "stride": 2, "max_new_tokens": 512, **settings})
    return list(pipeline), pipeline


def scene_object_under(oracle: SceneOracleBackend, obj) -> int:
    """The scene object whose visible mask holds the point (0 = background)."""
    label_map = oracle.scene.frame_at(obj.t_s).label_map
    row = min(int(obj.v_px), label_map.shape[0] - 1)
    col = min(int(obj.u_px), label_map.shape[1] - 1)
    return int(label_map[row, col])


def test_track_ids_stay_the_same_across_windows(oracle):
    events, pipeline = run(oracle, ["Track all stars."])
    assert len(events) >= 10 and all(not e.parse_errors for e in events)
    objects_of_track: dict[int, set[int]] = defaultdict(set)
    tracks_of_object: dict[int, set[int]] = defaultdict(set)
    window_ids_of_object: dict[int, set[int]] = defaultdict(set)
    for event in events:
        for obj in event.objects:
            scene_id = scene_object_under(oracle, obj)
            assert scene_id != 0, "the oracle points inside objects"
            objects_of_track[obj.track_id].add(scene_id)
            tracks_of_object[scene_id].add(obj.track_id)
            window_ids_of_object[scene_id].add(obj.window_object_id)
    stars = {o.object_id for o in oracle.scene.objects if o.shape == "star"}
    assert set(tracks_of_object) == stars  # every star was tracked
    assert all(len(ids) == 1 for ids in objects_of_track.values())  # a track never jumps to another star
    assert all(len(ids) == 1 for ids in tracks_of_object.values())  # a star keeps one id all along
    # ... although the model numbered the stars differently from window to window
    assert any(len(ids) > 1 for ids in window_ids_of_object.values())
    assert {o.state for e in events[1:] for o in e.objects} <= {"tracked", "new"}
    assert pipeline.stats.frames_encoded == pipeline.stats.frames_sampled == oracle.encode_calls


def test_published_tracks_score_perfect_hota_against_the_ground_truth(oracle):
    events, _ = run(oracle, ["Track all stars."])
    # The published stream, frame by frame: each frame's newest opinion (later windows replace it).
    newest: dict[float, list] = {}
    for event in events:
        for t_s in sorted({o.t_s for o in event.objects}):
            newest[t_s] = [o for o in event.objects if o.t_s == t_s]
    # Every frame the model saw (the sampler picks by timestamp, so it picks them again here),
    # whether or not anything was published for it: a missed star must cost HOTA.
    sampler = FrameSampler(target_fps=2.0)
    source_times = [k / SOURCE_FPS for k in range(int(DURATION_S * SOURCE_FPS) + 1)]
    frame_times = [t for t in source_times if sampler.offer(t) and t <= events[-1].window_t1_s]
    assert set(newest) <= set(frame_times)
    frames = [oracle.scene.frame_at(t) for t in frame_times]
    truth = build_example("track", Media(frames=tuple(f.rgb for f in frames), timestamps_s=tuple(frame_times)),
                          frames, Query("star", None), TaskConfig()).truth
    points = [GroundedPoint(o.track_id, o.x, o.y, t_s=t) for t in frame_times for o in newest.get(t, [])]
    stats = score_tracks(points, truth)
    assert stats.hota == pytest.approx(1.0, abs=1e-6)
    assert stats.id_switches == 0


def test_counting_and_pointing_queries_get_counts_and_ids_too(oracle):
    events, _ = run(oracle, ["How many red stars are there?", "Point to all stars"], window=4)
    counts = [e for e in events if e.query_index == 0]
    points = [e for e in events if e.query_index == 1]
    assert counts and points and all(not e.parse_errors for e in events)
    red_stars = [o.object_id for o in oracle.scene.objects if o.shape == "star" and o.color == "red"]
    for event in counts:
        assert event.count <= len(red_stars)
        assert {scene_object_under(oracle, o) for o in event.objects} <= set(red_stars)
    assert max(e.count for e in counts) == len(red_stars)
    # pointing marks each star once per window; the ids are still stitched into tracks
    ids_per_star: dict[int, set[int]] = defaultdict(set)
    for event in points:
        for obj in latest_objects(event):
            ids_per_star[scene_object_under(oracle, obj)].add(obj.track_id)
    assert ids_per_star and all(obj_id != 0 for obj_id in ids_per_star)


def test_three_d_points_from_depth_and_intrinsics(oracle):
    from molmo_edge.calibration.camera import CameraIntrinsics

    camera = CameraIntrinsics(width_px=W_PX, height_px=H_PX, fx_px=150.0, fy_px=150.0, cx_px=W_PX / 2, cy_px=H_PX / 2)
    pipeline = Pipeline(Engine(oracle), source=f"synthetic:{SEED}:{W_PX}x{H_PX}", queries=["Track all stars."],
                        source_options={"realtime": False, "fps": SOURCE_FPS, "duration_s": 4.0}, window=4,
                        max_new_tokens=512, intrinsics=camera, depth=lambda frame: oracle.scene.depth_at(frame.t_s))
    events = list(pipeline)
    depth_of = {o.object_id: o.depth_m for o in oracle.scene.objects}
    checked = 0
    for event in events:
        for obj in event.objects:
            assert obj.xyz_m is not None
            x_m, y_m, z_m = obj.xyz_m
            assert z_m == pytest.approx(depth_of[scene_object_under(oracle, obj)], rel=1e-3)
            assert x_m == pytest.approx((obj.u_px - camera.cx_px) * z_m / camera.fx_px, abs=0.02)
            checked += 1
    assert checked > 0


def test_a_cut_answer_keeps_its_complete_points_and_says_so(oracle):
    events, _ = run(oracle, ["Track all stars."], max_new_tokens=20)
    assert events
    for event in events:
        assert event.parse_errors and any("truncated" in p for p in event.parse_errors)
        assert event.objects  # the points written in full before the cut are kept
        assert all(scene_object_under(oracle, o) != 0 for o in event.objects)

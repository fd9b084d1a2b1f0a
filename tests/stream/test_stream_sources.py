"""Frame sources on real media: OpenCV-written videos, image folders, an HTTP MJPEG camera."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.stream.stream_media import W_PX, H_PX, damage_frame, frame_value, make_frame, write_mjpg_avi
from molmo_edge.errors import ConfigError, SourceError
from molmo_edge.stream.sources import (
    FrameTimeoutError,
    InOrderSource,
    LiveSource,
    ReconnectPolicy,
    StaleFrameError,
    open_source,
)


def _grey(frame) -> int:
    return int(round(float(frame.rgb.mean())))


def test_video_file_is_read_in_order_with_the_files_own_clock(avi_file: Path):
    with open_source(str(avi_file)) as source:
        assert isinstance(source, InOrderSource)
        frames = list(source)
        stats = source.stats
    assert [f.index for f in frames] == list(range(30))
    np.testing.assert_allclose([f.t_s for f in frames], np.arange(30) / 10.0, atol=1e-6)
    # content in order (JPEG keeps a flat grey within a few levels)
    assert all(abs(_grey(f) - frame_value(f.index)) <= 3 for f in frames)
    f0 = frames[0]
    assert f0.rgb.dtype == np.uint8 and f0.rgb.shape == (H_PX, W_PX, 3) and f0.rgb.flags.c_contiguous
    assert f0.source_id == "clip"
    # stamps: open time + media time, so spaced like the video
    assert frames[10].stamp_ns - frames[0].stamp_ns == pytest.approx(1e9, abs=1e3)
    assert stats.frames_read == 30 and stats.corrupt_frames == 0 and stats.ended


def test_a_slow_consumer_of_a_file_still_gets_every_frame(avi_file: Path):
    with open_source(avi_file) as source:
        got = []
        for frame in source:
            got.append(frame.index)
            time.sleep(0.01)
    assert got == list(range(30))


def test_corrupt_frame_in_a_video_is_counted_and_skipped(tmp_path: Path):
    path = write_mjpg_avi(tmp_path / "damaged.avi", n_frames=20, fps=10.0)
    damage_frame(path, 10)
    with open_source(path) as source:
        frames = list(source)
        stats = source.stats
    assert [f.index for f in frames] == [i for i in range(20) if i != 10]
    # the frames after the damaged one keep their own timestamps and content
    after = next(f for f in frames if f.index == 11)
    assert after.t_s == pytest.approx(1.1, abs=1e-6)
    assert abs(_grey(after) - frame_value(11)) <= 3
    assert stats.corrupt_frames == 1 and stats.reconnects == 0


def test_image_folder_skips_truncated_and_garbage_images_in_natural_order(tmp_path: Path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"f{i}.png"), make_frame(i))  # f2 must come before f10
    full = (folder / "f4.png").read_bytes()
    (folder / "f4.png").write_bytes(full[: len(full) // 2])  # truncated PNG
    (folder / "f7.png").write_bytes(b"\x89PNG not really" + bytes(range(256)))  # garbage
    (folder / "notes.txt").write_text("not an image, not counted")
    with open_source(folder, fps=4.0) as source:
        frames = list(source)
        stats = source.stats
    assert [f.index for f in frames] == [0, 1, 2, 3, 5, 6, 8, 9, 10, 11]
    assert [_grey(f) for f in frames] == [frame_value(i) for i in (0, 1, 2, 3, 5, 6, 8, 9, 10, 11)]
    assert frames[4].t_s == pytest.approx(5 / 4.0)
    assert stats.corrupt_frames == 2


def test_realtime_file_plays_at_its_own_rate_and_keeps_only_the_latest(avi_file: Path):
    start = time.monotonic()
    with open_source(avi_file, realtime=True) as source:
        assert isinstance(source, LiveSource)
        seen = []
        while (frame := source.read(timeout_s=2.0)) is not None:
            seen.append(frame.index)
            time.sleep(0.25)  # much slower than the 10 fps file: frames in between are dropped
        stats = source.stats
    elapsed = time.monotonic() - start
    assert 2.5 <= elapsed < 5.0  # 30 frames at 10 fps = 2.9 s of media
    assert seen == sorted(seen) and len(seen) < 20
    assert stats.frames_read == 30
    assert stats.frames_dropped == 30 - len(seen)


def test_read_latest_gives_the_newest_frame_and_none_after_the_end(tmp_path: Path):
    short = write_mjpg_avi(tmp_path / "short.avi", n_frames=6, fps=20.0)
    with open_source(short, realtime=True) as source:
        first = source.read(timeout_s=2.0)
        time.sleep(0.12)  # two more frames arrive meanwhile; read_latest skips to the newest
        latest = source.read_latest(max_age_ms=500)
        assert latest.index > first.index and latest.age_ms() < 500
        assert source.read_latest().index >= latest.index  # the same frame again is allowed
        while source.read(timeout_s=2.0) is not None:
            pass
        assert source.read_latest() is None  # ended
        assert source.stats.ended and source.stats.frames_read == 6


def test_stale_frame_error_on_a_stalled_camera(mjpeg_server_factory):
    server = mjpeg_server_factory(fps=30.0)
    with open_source(server.url) as source:
        assert source.read(timeout_s=5.0) is not None
        server.stopped.set()  # the camera freezes (connection stays, no frames)
        time.sleep(0.4)
        with pytest.raises(StaleFrameError, match="ms old"):
            source.read_latest(max_age_ms=200)


def test_network_stream_that_drops_reconnects_with_backoff(mjpeg_server_factory):
    server = mjpeg_server_factory(fps=30.0, drop_after=10)
    policy = ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.2)
    with open_source(server.url, reconnect=policy) as source:
        assert isinstance(source, LiveSource)
        frames = []
        deadline = time.monotonic() + 20
        while len(frames) < 25 and time.monotonic() < deadline:
            frames.append(source.read(timeout_s=10.0))
        stats = source.stats
    assert len(frames) == 25
    assert stats.failures == 1 and stats.reconnects == 1
    assert server.connections == 2
    assert all(frame.rgb.shape == (H_PX, W_PX, 3) for frame in frames)
    # live t_s: seconds since open, increasing across the reconnect
    assert all(b.t_s > a.t_s for a, b in zip(frames, frames[1:]))


def test_source_that_never_comes_back_fails_with_a_clear_error(mjpeg_server_factory):
    server = mjpeg_server_factory(fps=30.0, drop_after=3)
    policy = ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.1, max_attempts=2)
    source = open_source(server.url, reconnect=policy, open_timeout_s=1.0, read_timeout_s=1.0)
    try:
        server.stop()  # the camera is gone for good
        with pytest.raises(SourceError, match="could not be reopened after 2 attempts"):
            while source.read(timeout_s=15.0) is not None:
                pass
        assert source.stats.failures == 1 and source.stats.reconnects == 0
    finally:
        source.close()


def test_read_times_out_without_killing_the_source(mjpeg_server_factory):
    server = mjpeg_server_factory(fps=2.0)
    with open_source(server.url) as source:
        assert source.read(timeout_s=5.0) is not None
        timeouts = 0
        deadline = time.monotonic() + 5.0
        while timeouts == 0 and time.monotonic() < deadline:
            try:
                source.read(timeout_s=0.05)  # FFmpeg may hand over a few buffered frames at once
            except FrameTimeoutError:
                timeouts += 1
        assert timeouts == 1
        assert source.read(timeout_s=5.0) is not None  # still serving


def test_backoff_delays_grow_and_are_capped():
    policy = ReconnectPolicy(initial_delay_s=0.1, factor=2.0, max_delay_s=1.0)
    assert [policy.delay_s(i) for i in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_synthetic_source_renders_scenes_live_and_in_order():
    pytest.importorskip("molmo_edge.training.scenes",
                        reason="molmo_edge.training.scenes (SceneSimulator) is not available yet")
    with open_source("synthetic:3:96x64", realtime=False, fps=5.0, duration_s=1.0) as source:
        frames = list(source)
    assert [f.t_s for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert frames[0].rgb.shape == (64, 96, 3) and frames[0].source_id == "synthetic3"
    from molmo_edge.training.scenes import SceneSimulator

    np.testing.assert_array_equal(frames[3].rgb, SceneSimulator(3, 96, 64).frame_at(0.6).rgb)
    with open_source("synthetic:3:96x64", fps=20.0) as live:
        assert isinstance(live, LiveSource)
        first = live.read(timeout_s=2.0)
        second = live.read(timeout_s=2.0)
        assert second.t_s > first.t_s and second.rgb.shape == (64, 96, 3)


@pytest.mark.parametrize("spec, error", [
    ("/no/such/clip.mp4", SourceError),
    ("synthetic:abc", ConfigError),
    ("", ConfigError),
])
def test_unusable_sources_are_refused_with_clear_errors(spec, error):
    with pytest.raises(error):
        open_source(spec)


def test_bad_settings_are_config_errors(avi_file: Path):
    with pytest.raises(ConfigError, match="bad source settings"):
        open_source(avi_file, fps=-1)
    with pytest.raises(ConfigError, match="bad source settings"):
        open_source(avi_file, no_such_setting=1)


def test_a_file_that_is_not_a_video_is_refused(tmp_path: Path):
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match="cannot decode"):
        open_source(bogus)


def test_empty_folder_and_single_image_are_refused(tmp_path: Path):
    with pytest.raises(SourceError, match="holds no images"):
        open_source(tmp_path)
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), make_frame(0))
    with pytest.raises(ConfigError, match="single image"):
        open_source(image)


def test_unopened_source_says_so(avi_file: Path):
    from molmo_edge.stream.sources import make_source

    source = make_source(avi_file)
    with pytest.raises(SourceError, match="not open"):
        source.read()


def test_malformed_pictures_are_recognised():
    from molmo_edge.stream.frame import rgb_problem
    from molmo_edge.stream.readers import CorruptFrameError, _to_rgb

    assert rgb_problem(np.zeros((4, 5, 3), np.uint8)) is None
    assert "no image" in rgb_problem(None)
    assert "dtype" in rgb_problem(np.zeros((4, 5, 3), np.float32))
    assert "shape" in rgb_problem(np.zeros((4, 5), np.uint8))
    assert "empty" in rgb_problem(np.zeros((0, 5, 3), np.uint8))
    assert "numpy array" in rgb_problem([[1, 2, 3]])
    # readers convert what OpenCV hands back: grey and BGRA become RGB; BGR is swapped
    assert _to_rgb(np.full((2, 2), 7, np.uint8), "grey").shape == (2, 2, 3)
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    assert _to_rgb(bgr, "bgr")[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(CorruptFrameError, match="dtype"):
        _to_rgb(np.zeros((2, 2, 3), np.uint16), "16-bit")


def test_missing_camera_and_missing_gstreamer_are_clear_errors():
    from molmo_edge.stream.readers import opencv_has_gstreamer

    with pytest.raises(SourceError, match="cannot open camera 99"):
        open_source(99)
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer; the no-GStreamer message cannot be shown")
    with pytest.raises(SourceError, match="no GStreamer support"):
        open_source("videotestsrc ! videoconvert ! appsink")

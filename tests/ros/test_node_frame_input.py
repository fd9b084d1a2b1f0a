"""The node's camera input on real sensor_msgs messages: latest-frame slot, bad images counted and
refused, frame size changes, depth pairing by stamp, media time."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy")
from sensor_msgs.msg import CompressedImage  # noqa: E402

from molmo_edge.ros.frame_input import (  # noqa: E402
    FrameInput,
    FrameSizeChangeError,
    FrameSizeGuard,
    LatestSlot,
    MediaClock,
)
from molmo_edge.ros.headers import make_header  # noqa: E402
from molmo_edge.ros.image_conversion import (  # noqa: E402
    ImageDataSizeError,
    ImageDecodeError,
    UnsupportedEncodingError,
    numpy_to_image,
    rgb_to_compressed,
)

pytestmark = pytest.mark.ros

T0_NS = 1_700_000_000_000_000_000


def rgb_image(stamp_ns: int, width: int = 32, height: int = 24, value: int = 0, encoding: str = "rgb8"):
    rgb = np.full((height, width, 3), value, np.uint8)
    rgb[0, 0] = (10, 20, 30)  # tells rgb from bgr
    if encoding == "bgr8":
        rgb = rgb[:, :, ::-1].copy()
    return numpy_to_image(rgb, encoding, make_header(stamp_ns, "cam"))


def depth_image(stamp_ns: int, depth_m: np.ndarray, encoding: str = "32FC1"):
    data = depth_m.astype(np.float32) if encoding == "32FC1" else np.round(depth_m * 1000).astype(np.uint16)
    return numpy_to_image(data, encoding, make_header(stamp_ns, "cam"))


def test_only_the_newest_image_is_kept_and_overwritten_ones_count_as_dropped():
    frames = FrameInput()
    for k in range(5):
        frames.offer_image(rgb_image(T0_NS + k, value=k))
    taken = frames.take(timeout_s=0)
    assert taken.stamp_ns == T0_NS + 4 and taken.rgb[5, 5, 0] == 4
    assert frames.take(timeout_s=0) is None
    stats = frames.stats()
    assert (stats["frames_received"], stats["dropped_frames"], stats["frames_taken"]) == (5, 4, 1)


def test_take_returns_rgb_with_a_copy_of_the_source_header():
    frames = FrameInput()
    msg = rgb_image(T0_NS, encoding="bgr8")
    frames.offer_image(msg)
    taken = frames.take(timeout_s=0)
    assert taken.rgb.shape == (24, 32, 3) and taken.rgb.dtype == np.uint8
    assert tuple(taken.rgb[0, 0]) == (10, 20, 30)
    assert taken.header.frame_id == "cam" and taken.header is not msg.header
    assert taken.depth_m is None and not taken.size_changed


def test_slot_take_waits_for_a_put_from_another_thread():
    slot: LatestSlot[int] = LatestSlot()
    threading.Timer(0.05, slot.put, args=(7,)).start()
    assert slot.take(timeout_s=5.0) == 7
    assert slot.take(timeout_s=0.01) is None


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1", "yuv422"])
def test_non_colour_encodings_are_refused_and_counted(encoding):
    frames = FrameInput()
    msg = rgb_image(T0_NS)
    msg.encoding = encoding
    with pytest.raises(UnsupportedEncodingError, match=encoding):
        frames.offer_image(msg)
    stats = frames.stats()
    assert stats["bad_images"] == stats["bad_encoding"] == 1 and not frames.pending


@pytest.mark.parametrize("change", ["short_data", "long_data", "short_step", "zero_height"])
def test_data_size_mismatches_are_refused_and_counted(change):
    frames = FrameInput()
    msg = rgb_image(T0_NS)
    if change == "short_data":
        msg.data = bytes(msg.data)[:-1]
    elif change == "long_data":
        msg.data = bytes(msg.data) + b"\0" * 7
    elif change == "short_step":
        msg.step = msg.width * 3 - 1
    else:
        msg.height = 0
    with pytest.raises(ImageDataSizeError):
        frames.offer_image(msg)
    assert frames.stats()["bad_data_size"] == 1 and not frames.pending


def test_undecodable_compressed_image_is_counted_when_taken_and_the_next_one_works():
    frames = FrameInput()
    bad = CompressedImage(header=make_header(T0_NS, "cam"), format="jpeg", data=b"not a jpeg at all")
    frames.offer_compressed(bad)
    with pytest.raises(ImageDecodeError):
        frames.take(timeout_s=0)
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :16] = (200, 30, 40)
    frames.offer_compressed(rgb_to_compressed(rgb, "png", make_header(T0_NS + 1, "cam")))
    taken = frames.take(timeout_s=0)
    assert np.array_equal(taken.rgb, rgb)  # PNG is lossless
    assert frames.stats()["undecodable"] == 1 and frames.stats()["frames_taken"] == 1


def test_compressed_copies_are_ignored_while_raw_images_arrive():
    frames = FrameInput()
    frames.offer_image(rgb_image(T0_NS))
    frames.offer_compressed(rgb_to_compressed(np.zeros((24, 32, 3), np.uint8), "jpeg", make_header(T0_NS, "cam")))
    assert frames.stats()["compressed_ignored"] == 1
    assert frames.take(timeout_s=0).stamp_ns == T0_NS


def test_one_odd_frame_size_is_refused_and_the_stream_goes_on():
    frames = FrameInput()
    frames.offer_image(rgb_image(T0_NS, 32, 24))
    assert frames.take(timeout_s=0).rgb.shape[:2] == (24, 32)
    frames.offer_image(rgb_image(T0_NS + 1, 16, 12))
    with pytest.raises(FrameSizeChangeError, match="16x12"):
        frames.take(timeout_s=0)
    frames.offer_image(rgb_image(T0_NS + 2, 32, 24))
    assert frames.take(timeout_s=0).stamp_ns == T0_NS + 2
    stats = frames.stats()
    assert stats["frame_size_changes"] == 1 and stats["bad_images"] == 1 and stats["frames_taken"] == 2


def test_a_new_frame_size_that_persists_is_adopted():
    frames = FrameInput(adopt_size_after=3)
    frames.offer_image(rgb_image(T0_NS, 32, 24))
    frames.take(timeout_s=0)
    for k in range(2):
        frames.offer_image(rgb_image(T0_NS + 1 + k, 16, 12))
        with pytest.raises(FrameSizeChangeError):
            frames.take(timeout_s=0)
    frames.offer_image(rgb_image(T0_NS + 3, 16, 12))
    taken = frames.take(timeout_s=0)
    assert taken.size_changed and taken.rgb.shape[:2] == (12, 16)
    frames.offer_image(rgb_image(T0_NS + 4, 16, 12))
    assert not frames.take(timeout_s=0).size_changed
    assert frames.stats()["frame_size_adopted"] == 1


@given(sizes=st.lists(st.sampled_from([(32, 24), (16, 12), (64, 48)]), min_size=1, max_size=40),
       adopt_after=st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_size_guard_only_adopts_a_size_seen_adopt_after_times_in_a_row(sizes, adopt_after):
    guard = FrameSizeGuard(adopt_after)
    pinned, run_size, run = None, None, 0
    for size in sizes:
        run = run + 1 if size == run_size else 1
        run_size = size
        expected_ok = pinned is None or size == pinned or run >= adopt_after
        try:
            guard.check(*size)
            ok = True
        except FrameSizeChangeError:
            ok = False
        assert ok == expected_ok
        if ok:
            if size != pinned:
                run = 0  # a new pinned size: the count of a candidate starts again
            pinned = size
        assert guard.size == pinned


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_depth_is_paired_by_nearest_stamp_and_converted_to_metres(encoding):
    frames = FrameInput(max_depth_offset_ms=50)
    near = np.full((24, 32), 1.25, np.float32)
    near[3, 4] = 0.0  # no measurement
    far = np.full((24, 32), 3.0, np.float32)
    frames.offer_depth(depth_image(T0_NS - 200_000_000, far, encoding))
    frames.offer_depth(depth_image(T0_NS + 10_000_000, near, encoding))
    frames.offer_depth(depth_image(T0_NS + 60_000_000, far, encoding))
    frames.offer_image(rgb_image(T0_NS))
    taken = frames.take(timeout_s=0)
    assert taken.depth_m.dtype == np.float32 and taken.depth_m.shape == (24, 32)
    assert np.isnan(taken.depth_m[3, 4])
    assert np.allclose(taken.depth_m[np.isfinite(taken.depth_m)], 1.25)
    assert taken.depth_offset_ms == pytest.approx(10.0)


def test_a_depth_image_still_in_flight_is_waited_for_briefly():
    frames = FrameInput(max_depth_offset_ms=150, depth_wait_ms=500)
    old, new = np.full((24, 32), 3.0, np.float32), np.full((24, 32), 1.25, np.float32)
    frames.offer_depth(depth_image(T0_NS - 100_000_000, old))      # the previous frame's depth
    frames.offer_image(rgb_image(T0_NS))                            # this frame, its depth not yet here
    late = threading.Timer(0.05, lambda: frames.offer_depth(depth_image(T0_NS, new)))
    late.start()
    taken = frames.take(timeout_s=0)
    late.join()
    assert np.allclose(taken.depth_m, 1.25) and taken.depth_offset_ms == 0.0  # its own depth, not the old one


def test_no_wait_without_a_depth_stream_or_once_the_wait_has_passed():
    frames = FrameInput(depth_wait_ms=0)
    frames.offer_depth(depth_image(T0_NS - 50_000_000, np.ones((24, 32))))
    frames.offer_image(rgb_image(T0_NS))
    assert np.allclose(frames.take(timeout_s=0).depth_m, 1.0)      # wait off: the nearest one at once
    no_depth = FrameInput(depth_wait_ms=10_000)
    no_depth.offer_image(rgb_image(T0_NS))
    assert no_depth.take(timeout_s=0).depth_m is None               # no depth stream: nothing to wait for


def test_depth_too_far_in_time_or_of_another_size_is_not_used_and_says_why():
    frames = FrameInput(max_depth_offset_ms=50)
    frames.offer_depth(depth_image(T0_NS - 80_000_000, np.ones((24, 32))))
    frames.offer_image(rgb_image(T0_NS))
    taken = frames.take(timeout_s=0)
    assert taken.depth_m is None and "80 ms" in taken.depth_problem
    frames.offer_depth(depth_image(T0_NS + 1, np.ones((12, 16))))
    frames.offer_image(rgb_image(T0_NS + 2))
    taken = frames.take(timeout_s=0)
    assert taken.depth_m is None and "16x12" in taken.depth_problem
    stats = frames.stats()
    assert stats["depth_unmatched"] == 1 and stats["depth_size_mismatch"] == 1


def test_bad_depth_encoding_is_refused_and_counted():
    frames = FrameInput()
    with pytest.raises(UnsupportedEncodingError):
        frames.offer_depth(rgb_image(T0_NS))
    assert frames.stats()["bad_depth"] == 1 and not frames.has_depth


def test_stale_images_are_dropped_when_taken():
    frames = FrameInput()
    frames.offer_image(rgb_image(T0_NS), received_monotonic_ns=0)  # received "long ago"
    assert frames.take(timeout_s=0, max_age_ms=500) is None
    assert frames.stats()["stale_frames"] == 1


def test_unstamped_images_get_the_receive_time():
    frames = FrameInput()
    frames.offer_image(rgb_image(0))
    assert frames.take(timeout_s=0).stamp_ns > T0_NS
    assert frames.stats()["unstamped_images"] == 1


@given(steps_ms=st.lists(st.integers(-3000, 3000), min_size=1, max_size=30))
@settings(max_examples=80, deadline=None)
def test_media_time_follows_stamps_and_restarts_when_they_go_back(steps_ms):
    clock = MediaClock(backwards_tolerance_s=1.0)
    stamp = T0_NS
    last_t = clock.t_s(stamp)
    assert last_t == 0.0
    for step in steps_ms:
        stamp += step * 1_000_000
        t = clock.t_s(stamp)
        if step < -1000:
            assert t == 0.0  # restarted: the pipeline sees time go back and starts a fresh window
        else:
            assert t == pytest.approx(last_t + step / 1000.0, abs=1e-9)
        last_t = t


def test_jpeg_round_trip_keeps_the_picture():
    frames = FrameInput()
    rgb = np.zeros((48, 64, 3), np.uint8)
    cv2.circle(rgb, (32, 24), 10, (255, 0, 0), -1)
    frames.offer_compressed(rgb_to_compressed(rgb, "jpeg", make_header(T0_NS, "cam")))
    taken = frames.take(timeout_s=0)
    assert taken.rgb.shape == rgb.shape and np.abs(taken.rgb.astype(int) - rgb).mean() < 3

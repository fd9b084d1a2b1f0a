"""What `--source` strings mean."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from molmo_edge.errors import ConfigError, SourceError
from molmo_edge.stream.source_spec import parse_source_spec


@given(st.integers(min_value=0, max_value=10_000))
def test_digits_and_ints_are_camera_indices(index: int):
    for spec in (index, str(index), f" {index} "):
        parsed = parse_source_spec(spec)
        assert parsed.kind == "camera" and parsed.target == index and parsed.live


@pytest.mark.parametrize("url", ["rtsp://cam.local:554/stream", "RTSP://10.0.0.2/live", "http://127.0.0.1:8080/video.mjpg",
                                 "https://x/y.m3u8", "rtmp://a/b", "udp://@:5000", "srt://h:9000"])
def test_urls(url: str):
    parsed = parse_source_spec(url)
    assert parsed.kind == "url" and parsed.target == url and parsed.live


def test_url_passwords_never_reach_the_stream_id():
    parsed = parse_source_spec("rtsp://admin:hunter2@cam.local:554/stream")
    assert "hunter2" not in parsed.default_id and "admin:***@" in parsed.default_id


def test_gstreamer_pipelines_and_device_paths():
    assert parse_source_spec("v4l2src device=/dev/video0 ! videoconvert ! appsink").kind == "gstreamer"
    parsed = parse_source_spec("/dev/video2")
    assert parsed.kind == "camera" and parsed.target == "/dev/video2"


@given(st.integers(min_value=0, max_value=2**31), st.integers(1, 4096), st.integers(1, 4096))
def test_synthetic_specs(seed: int, width: int, height: int):
    parsed = parse_source_spec(f"synthetic:{seed}:{width}x{height}")
    assert (parsed.kind, parsed.target, parsed.width_px, parsed.height_px) == ("synthetic", seed, width, height)
    assert not parsed.live
    assert parse_source_spec(f"synthetic:{seed}").width_px is None


@pytest.mark.parametrize("bad", ["synthetic:", "synthetic:x", "synthetic:1:20", "synthetic:1:0x5", "synthetic:-1"])
def test_bad_synthetic_specs_say_the_expected_form(bad: str):
    with pytest.raises(ConfigError, match="synthetic:SEED"):
        parse_source_spec(bad)


def test_paths(tmp_path: Path):
    clip = tmp_path / "clip.mkv"
    clip.write_bytes(b"x")
    assert parse_source_spec(str(clip)).kind == "file"
    assert parse_source_spec(clip).default_id == "clip"
    assert parse_source_spec(tmp_path).kind == "folder"
    with pytest.raises(SourceError, match="not a camera index"):
        parse_source_spec(str(tmp_path / "missing.mp4"))
    with pytest.raises(ConfigError):
        parse_source_spec(-1)
    with pytest.raises(ConfigError):
        parse_source_spec(True)

"""Fixtures for the stream tests (helpers live in stream_media.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.stream.stream_media import MjpegServer, write_mjpg_avi


@pytest.fixture
def avi_file(tmp_path: Path) -> Path:
    return write_mjpg_avi(tmp_path / "clip.avi", n_frames=30, fps=10.0)


@pytest.fixture
def mjpeg_server_factory():
    servers = []

    def make(**kwargs) -> MjpegServer:
        servers.append(MjpegServer(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()

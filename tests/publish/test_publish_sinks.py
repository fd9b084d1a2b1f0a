"""JSONL and callback sinks: every event out, and a broken output never breaks the stream."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from molmo_edge.errors import ConfigError
from molmo_edge.publish.callbacks import CallbackSink
from molmo_edge.publish.jsonl import JsonlSink
from molmo_edge.publish.sink import EventSink, MultiSink
from molmo_edge.stream.events import Event
from tests.publish.publish_helpers import make_event


def test_jsonl_writes_one_flushed_event_per_line(tmp_path: Path):
    path = tmp_path / "out" / "events.jsonl"  # the folder is created
    sink = JsonlSink(path)
    for seq in range(3):
        assert sink.write(make_event(seq)) is True
        # flushed per line: another reader sees the line right away, before close
        assert len(path.read_text().splitlines()) == seq + 1
    sink.close()
    events = [Event.from_dict(json.loads(line)) for line in path.read_text().splitlines()]
    assert events == [make_event(seq) for seq in range(3)]
    with JsonlSink(path) as again:  # appends by default
        again.write(make_event(3))
    assert len(path.read_text().splitlines()) == 4


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux /dev/full to simulate a full disk")
def test_a_full_disk_is_counted_and_never_raised():
    sink = JsonlSink("/dev/full")
    results = [sink.write(make_event(seq)) for seq in range(5)]
    assert results == [False] * 5
    assert sink.stats.errors == 5 and sink.stats.written == 0
    assert "No space left" in sink.stats.last_error
    sink.close()


def test_an_event_that_is_not_json_is_counted(tmp_path: Path):
    with JsonlSink(tmp_path / "e.jsonl") as sink:
        assert sink.write({"v": 1, "x": float("nan")}) is False
        assert sink.write(make_event(0)) is True
        assert sink.stats.errors == 1 and sink.stats.written == 1
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 1


def test_an_unwritable_path_is_a_clear_error_at_start(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot open"):
        JsonlSink(tmp_path / "file" / "events.jsonl")


def test_callback_errors_are_counted_and_the_stream_goes_on():
    got = []

    def flaky(event):
        if event.seq % 2:
            raise RuntimeError("user code failed")
        got.append(event.seq)

    sink = CallbackSink(flaky)
    assert [sink.write(make_event(seq)) for seq in range(4)] == [True, False, True, False]
    assert got == [0, 2] and sink.stats.errors == 2 and "user code failed" in sink.stats.last_error
    as_dict = []
    CallbackSink(as_dict.append, as_dict=True).write(make_event(7))
    assert as_dict[0]["seq"] == 7 and isinstance(as_dict[0], dict)


def test_multi_sink_writes_to_every_sink(tmp_path: Path):
    got = []
    jsonl = JsonlSink(tmp_path / "e.jsonl")
    multi = MultiSink([CallbackSink(lambda e: 1 / 0), CallbackSink(got.append), jsonl])
    assert all(isinstance(s, EventSink) for s in multi.sinks)
    assert multi.write(make_event(0)) is False  # one sink failed ...
    assert len(got) == 1 and jsonl.stats.written == 1  # ... the others still got the event
    multi.close()

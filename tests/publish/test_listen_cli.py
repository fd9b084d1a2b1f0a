"""`molmo-edge listen`: its output line, its exit codes, its argument checks."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from molmo_edge.cli import main
from molmo_edge.commands.listen import format_event
from tests.publish.publish_helpers import make_event

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=10)


def test_human_line_has_the_essentials():
    line = format_event(make_event(12, query_index=1, n_objects=2).to_dict())
    assert line.startswith('cam0 seq=12 q1 "Point to the red circle #1" [6.00,9.50]s count=2 latency=6ms')
    assert "#1(0.000,0.500@9.50s tracked)" in line and "#2(0.100,0.500@9.50s tracked)" in line


@given(st.dictionaries(st.sampled_from(["stream_id", "seq", "query", "objects", "latency_ms", "window_t0_s",
                                        "parse_errors", "count", "other"]), json_values))
def test_odd_or_newer_messages_never_crash_the_printer(event):
    assert isinstance(format_event(event), str)


def test_timeout_before_count_exits_1(capsys):
    assert main(["listen", "tcp://127.0.0.1:1", "--count", "1", "--timeout", "0.2"]) == 1
    assert "timed out after 0.2 s with 0 of 1 events" in capsys.readouterr().err


def test_timeout_without_count_exits_0():
    assert main(["listen", "127.0.0.1:1", "--timeout", "0.1"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--curve-server-key", "server.key"], "needs both"),
    (["--count", "0"], "--count must be at least 1"),
    (["--timeout", "-1"], "--timeout must be positive"),
])
def test_bad_arguments_are_one_line_errors(capsys, args, message):
    assert main(["listen", "5999", *args]) == 2
    assert message in capsys.readouterr().err


def test_bad_address_is_a_one_line_error(capsys):
    assert main(["listen", "no address here"]) == 2
    assert "is not a ZeroMQ address" in capsys.readouterr().err

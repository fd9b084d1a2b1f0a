"""The control socket on real ZeroMQ sockets: bad requests are answered, the server keeps serving."""
from __future__ import annotations

import json
import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.errors import ConfigError
from molmo_edge.publish.control import ControlHandler, ControlServer, parse_request
from molmo_edge.publish.control_client import ControlClient, ControlTimeoutError
from tests.publish.publish_helpers import QueryBook

pytestmark = pytest.mark.timeout(120)  # a ZeroMQ hang fails fast instead of eating the CI budget

ANY_PORT = "tcp://127.0.0.1:*"


@pytest.fixture
def served():
    book = QueryBook()
    with ControlServer(book, endpoint=ANY_PORT) as server, ControlClient(server.endpoint, timeout_s=5.0) as client:
        yield book, server, client


def test_the_handler_satisfies_the_protocol():
    assert isinstance(QueryBook(), ControlHandler)


def test_every_command(served):
    book, _, client = served
    assert client.request({"cmd": "add_query", "query": "Track all stars."}) == {"ok": True, "index": 1}
    assert client.request({"cmd": "list_queries"}) == {"ok": True, "queries": ["Point to the red circle", "Track all stars."]}
    assert client.request({"cmd": "pause"}) == {"ok": True}
    assert client.request({"cmd": "status"}) == {"ok": True, "paused": True, "queries": 2}
    assert client.request({"cmd": "resume"})["ok"] and not book.paused
    assert client.request({"cmd": "remove_query", "index": 0}) == {"ok": True, "queries": ["Track all stars."]}
    assert client.request({"cmd": "set_query", "query": "How many blue squares are there?"})["queries"] == [
        "How many blue squares are there?"]


GARBAGE = [
    b"not json",
    b"\xff\xfe\x00\x01binary garbage",
    b"",
    b"null",
    b"[1, 2, 3]",
    b'"status"',
    b'{"cmd": "explode_everything"}',
    b'{"cmd": null}',
    b'{"command": "status"}',
    b'{"cmd": "set_query"}',
    b'{"cmd": "set_query", "query": 5}',
    b'{"cmd": "set_query", "query": ""}',
    b'{"cmd": "remove_query", "index": "1"}',
    b'{"cmd": "remove_query", "index": -1}',
    b'{"cmd": "remove_query", "index": true}',
    b'{"cmd": "pause", "extra": 1}',
    b'{"cmd": "set_query", "query": "' + b"a" * 70_000 + b'"}',  # oversize
    b"[" * 50_000,  # nesting deep enough to break a recursive parser
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
def test_bad_requests_are_answered_and_the_server_keeps_serving(served, garbage):
    book, server, client = served
    reply = client.request(garbage)
    assert reply["ok"] is False and isinstance(reply["error"], str) and reply["error"]
    assert client.request({"cmd": "status"})["ok"] is True
    assert server.stats.bad_requests == 1
    assert book.calls == []  # nothing bad reached the handler


def test_multipart_junk_is_answered(served):
    _, server, client = served
    reply = client.request([b'{"cmd": "status"}', b"trailing junk"])
    assert reply == {"ok": False, "error": "expected one frame holding a JSON object, got 2 frames"}
    assert client.request({"cmd": "status"})["ok"]


def test_error_messages_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown cmd 'fly'; one of: set_query"):
        parse_request(b'{"cmd": "fly"}')
    with pytest.raises(ValueError, match="bad remove_query request: index"):
        parse_request(b'{"cmd": "remove_query", "index": "x"}')
    with pytest.raises(ValueError, match="larger than the 100-byte limit"):
        parse_request(b"{" + b" " * 200 + b"}", max_request_bytes=100)


def test_handler_refusals_and_failures_are_replies(served):
    _, server, client = served
    assert client.request({"cmd": "remove_query", "index": 7}) == {
        "ok": False, "error": "remove_query: no query 7; there are 1"}
    reply = client.request({"cmd": "add_query", "query": "explode"})
    assert reply["ok"] is False and "internal error" in reply["error"] and "boom" in reply["error"]
    assert server.stats.handler_errors == 2
    assert client.request({"cmd": "list_queries"})["ok"]


def test_req_and_bare_dealer_clients_are_both_answered(served):
    _, server, _ = served
    context = zmq.Context.instance()
    req = context.socket(zmq.REQ)
    dealer = context.socket(zmq.DEALER)
    try:
        for socket in (req, dealer):
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(server.endpoint)
        req.send(b'{"cmd": "status"}')
        assert req.poll(5000) and json.loads(req.recv())["ok"] is True
        dealer.send(b'{"cmd": "list_queries"}')  # no empty delimiter frame
        assert dealer.poll(5000)
        frames = dealer.recv_multipart()
        assert len(frames) == 1 and json.loads(frames[0])["queries"] == ["Point to the red circle"]
    finally:
        req.close()
        dealer.close()


def test_a_client_that_vanishes_before_its_reply_does_not_hurt():
    book = QueryBook(status_delay_s=0.3)
    with ControlServer(book, endpoint=ANY_PORT) as server:
        context = zmq.Context.instance()
        for n in range(1, 4):
            ghost = context.socket(zmq.REQ)
            ghost.setsockopt(zmq.LINGER, 0)
            ghost.connect(server.endpoint)
            ghost.send(b'{"cmd": "status"}')
            deadline = time.monotonic() + 5.0
            while server.stats.requests < n and time.monotonic() < deadline:
                time.sleep(0.01)  # the request has reached the server ...
            ghost.close()  # ... and its sender is gone before the slow handler answers
        with ControlClient(server.endpoint, timeout_s=5.0) as client:
            assert client.request({"cmd": "list_queries"})["ok"] is True
        assert server.stats.requests == 4


@settings(max_examples=40, deadline=None)
@given(frames=st.lists(st.binary(max_size=300), min_size=1, max_size=3))
def test_random_bytes_always_get_an_answer(frames):
    with ControlServer(QueryBook(), endpoint=ANY_PORT) as server, \
            ControlClient(server.endpoint, timeout_s=5.0) as client:
        reply = client.request(frames)
        assert reply["ok"] is False or (len(frames) == 1 and frames[0].strip().startswith(b"{"))
        assert client.request({"cmd": "status"})["ok"] is True


def test_stop_is_prompt_and_frees_the_port():
    server = ControlServer(QueryBook(), endpoint=ANY_PORT).start()
    endpoint = server.endpoint
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 1.0
    again = ControlServer(QueryBook(), endpoint=endpoint).start()  # the same port binds again
    again.stop()


def test_a_busy_port_and_a_silent_server_are_clear_errors():
    with ControlServer(QueryBook(), endpoint=ANY_PORT) as server:
        with pytest.raises(ConfigError, match="cannot bind the control socket"):
            ControlServer(QueryBook(), endpoint=server.endpoint).start()
    with ControlClient(server.endpoint, timeout_s=0.2) as client:  # server gone
        with pytest.raises(ControlTimeoutError, match="no reply"):
            client.request({"cmd": "status"})

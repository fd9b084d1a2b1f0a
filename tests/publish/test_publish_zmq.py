"""ZeroMQ publishing on real sockets on 127.0.0.1, with subscribers in other processes."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import msgpack
import pytest
import zmq

from molmo_edge.errors import ConfigError
from molmo_edge.publish.endpoints import is_local_endpoint, normalize_endpoint
from molmo_edge.publish.schema import decode_payload, split_single_frame
from molmo_edge.publish.subscriber import EventSubscriber
from molmo_edge.publish.zmq_publisher import EventPublisher, PublisherConfig
from molmo_edge.stream.events import Event
from tests.publish.publish_helpers import make_event, publish_until

pytestmark = pytest.mark.timeout(120)  # a ZeroMQ hang fails fast instead of eating the CI budget

ANY_PORT = "tcp://127.0.0.1:*"


def _listen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "molmo_edge", "listen", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_listener_in_another_process_receives_events():
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=None) as publisher:
        listener = _listen(publisher.endpoint, "--json", "--count", "5", "--timeout", "60")
        sent = publish_until(lambda seq: publisher.publish(make_event(seq)), lambda: listener.poll() is not None,
                             timeout_s=60)
        out, err = listener.communicate(timeout=10)
    assert listener.returncode == 0, err
    events = [Event.from_dict(json.loads(line)) for line in out.splitlines()]
    assert len(events) == 5
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + 5))  # consecutive: nothing lost on the way
    assert events[0] == make_event(seqs[0])  # every field survives msgpack + the other process
    assert "received 5 events, missed 0" in err
    assert publisher.stats.sent == sent


def test_per_query_topics_filter_by_prefix():
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=None) as publisher:
        listener = _listen(publisher.endpoint, "--topic", "events/1/", "--count", "4", "--timeout", "60")

        def send(seq: int) -> None:
            for query_index in (0, 1, 10, 11):  # events/1 would also match 10 and 11
                publisher.publish(make_event(seq, query_index=query_index))

        publish_until(send, lambda: listener.poll() is not None, timeout_s=60)
        out, err = listener.communicate(timeout=10)
    assert listener.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and all(line.startswith("events/1/ cam0 seq=") and " q1 " in line for line in lines)


def test_a_subscriber_that_stops_reading_never_stalls_the_publisher():
    n_events = 20_000
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=None, send_hwm=10) as publisher, \
            EventSubscriber(publisher.endpoint, receive_hwm=10) as stalled:
        first = []
        warm_up = publish_until(lambda seq: publisher.publish(make_event(seq)),
                                lambda: bool(first.append(stalled.receive(0.0)) or first[-1]))
        start = time.monotonic()
        for seq in range(warm_up, warm_up + n_events):  # ~2 KB each: 40 MB, beyond HWMs and TCP buffers
            publisher.publish(make_event(seq, text_bytes=2000))
        elapsed = time.monotonic() - start
        received = [first[-1].event["seq"]]
        while (message := stalled.receive(timeout_s=0.5)) is not None:  # now it reads again
            received.append(message.event["seq"])
        stats = publisher.stats
    assert elapsed < 15.0, f"publishing {n_events} events took {elapsed:.1f} s: the publisher blocked"
    assert stats.sent + stats.dropped == warm_up + n_events
    # the stalled subscriber got a bounded number (HWMs + socket buffers) ...
    assert len(received) < n_events // 2
    assert received == sorted(received) and received[-1] < warm_up + n_events
    # ... and counted every event it missed from the gaps in seq
    assert stalled.stats.missed == (received[-1] - received[0] + 1) - len(received)
    assert stalled.stats.missed > 0


def test_conflating_subscriber_sees_only_the_latest_event():
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=ANY_PORT) as publisher, \
            EventSubscriber(publisher.latest_endpoint, conflate=True) as latest:
        publish_until(lambda seq: publisher.publish(make_event(seq)), lambda: latest.receive(0.0) is not None)
        for seq in range(1000, 1050):
            publisher.publish(make_event(seq))
        time.sleep(0.3)
        message = latest.receive(timeout_s=2.0)
        assert message is not None and message.event["seq"] == 1049
        assert message.topic == "events/0/"
        assert latest.receive(timeout_s=0.3) is None  # nothing older was kept
    assert publisher.stats.latest_sent == publisher.stats.sent


def test_single_frame_layout_is_topic_nul_msgpack():
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=ANY_PORT) as publisher:
        context = zmq.Context.instance()
        socket = context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SUBSCRIBE, b"events/3/")
        socket.connect(publisher.latest_endpoint)
        try:
            publish_until(lambda seq: publisher.publish(make_event(seq, query_index=3)),
                          lambda: socket.poll(0) != 0)
            raw = socket.recv()
        finally:
            socket.close()
    topic, payload = split_single_frame(raw)
    assert topic == b"events/3/"
    assert raw[: len(topic) + 1] == b"events/3/\x00"
    assert msgpack.unpackb(payload, raw=False)["query_index"] == 3


def test_an_event_that_cannot_be_serialised_is_counted_not_raised():
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=None) as publisher:
        assert publisher.publish({"query_index": 0, "seq": 1, "bad": object()}) is False
        assert publisher.publish({"seq": 1}) is False  # no query_index: no topic
        assert publisher.stats.encode_errors == 2
        assert publisher.publish(make_event(0)) is True


def test_binding_a_busy_port_is_a_clear_error():
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=None) as first:
        with pytest.raises(ConfigError, match="cannot bind"):
            EventPublisher(endpoint=first.endpoint, latest_endpoint=None).start()


def test_endpoint_helpers():
    assert normalize_endpoint("5560") == "tcp://127.0.0.1:5560"
    assert normalize_endpoint("robot.local:5560") == "tcp://robot.local:5560"
    assert normalize_endpoint("ipc:///tmp/x") == "ipc:///tmp/x"
    with pytest.raises(ConfigError):
        normalize_endpoint("not an address")
    for local in ("tcp://127.0.0.1:1", "tcp://localhost:2", "tcp://[::1]:3", "ipc:///tmp/s", "tcp://127.0.0.1:*"):
        assert is_local_endpoint(local)
    for exposed in ("tcp://*:5560", "tcp://0.0.0.0:5560", "tcp://192.168.1.4:5560", "tcp://eth0:5560"):
        assert not is_local_endpoint(exposed)


def test_binding_beyond_loopback_without_curve_warns(caplog):
    with EventPublisher(endpoint="tcp://0.0.0.0:*", latest_endpoint=None) as publisher:
        assert publisher.endpoint.startswith("tcp://0.0.0.0:")
    assert any("without CurveZMQ" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    caplog.clear()
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=None):
        pass
    assert not any("without CurveZMQ" in r.getMessage() for r in caplog.records)


def test_received_payloads_always_carry_the_version():
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=None) as publisher, \
            EventSubscriber(publisher.endpoint) as subscriber:
        got = []
        publish_until(lambda seq: publisher.publish(make_event(seq).to_dict()),
                      lambda: bool(got.append(subscriber.receive(0.0)) or got[-1]))
        message = got[-1]
    assert message.event["v"] == 1
    assert decode_payload(msgpack.packb(message.event))["seq"] == message.event["seq"]


def test_publisher_config_rejects_bad_topics():
    with pytest.raises(ValueError):
        PublisherConfig(topic="bad\x00topic")

"""The serve daemon with real sockets, real processes, real threads and real signals.

- `molmo-edge serve` as a subprocess: events reach `molmo-edge listen` (a third process) and an
  in-test subscriber; the control socket changes queries and refuses garbage while the daemon
  keeps serving; SIGTERM ends it with exit 0 after the window in progress is published.
- In-process daemons (a thread) for what needs a fast or special model: a subscriber that stops
  reading never stalls the pipeline (oracle model: hundreds of events a second), a source that
  fails mid-stream reconnects (an HTTP MJPEG camera that drops its connection).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from molmo_edge.engine.engine import Engine
from molmo_edge.errors import ConfigError
from molmo_edge.publish.control_client import ControlClient
from molmo_edge.publish.subscriber import EventSubscriber
from molmo_edge.publish.daemon import Daemon, DaemonConfig
from molmo_edge.stream.events import Event
from molmo_edge.stream.pipeline import PipelineConfig
from tests.stream.oracle_model import SceneOracleBackend
from tests.stream.stream_media import MjpegServer

REPO = Path(__file__).resolve().parents[2]


# -- helpers --------------------------------------------------------------------------------------
class LogReader:
    """Collects the JSON log records a daemon writes to stderr (in a thread)."""

    def __init__(self, stream) -> None:
        self.records: list[dict] = []
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._new:
                self.lines.append(line)
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if isinstance(record, dict):
                    self.records.append(record)
                self._new.notify_all()

    def wait_for(self, predicate, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        with self._new:
            while True:
                for record in self.records:
                    if predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("log record not seen; stderr was:\n" + "".join(self.lines[-40:]))
                self._new.wait(remaining)


class Collector:
    """An EventSubscriber that reads everything in a thread until stopped."""

    def __init__(self, endpoint: str) -> None:
        self.subscriber = EventSubscriber(endpoint).open()
        self.events: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            received = self.subscriber.receive(timeout_s=0.1)
            if received is not None:
                self.events.append(received.event)

    def wait_for(self, predicate, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in list(self.events):
                if predicate(event):
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no matching event among {len(self.events)} received")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.subscriber.close()


def status(control: ControlClient) -> dict:
    reply = control.request({"cmd": "status"})
    assert reply["ok"] is True, reply
    return reply


# -- the daemon as a process ---------------------------------------------------------------------------
def test_serve_subscribers_control_and_sigterm(tiny_checkpoint_dir, tmp_path):
    jsonl = tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "molmo_edge.cli", "serve", "--source", "synthetic:3:160x120", "--realtime", "no",
           "--source-fps", "4", "--query", "Track all squares.", "--model", str(tiny_checkpoint_dir),
           "--pub", "tcp://127.0.0.1:*", "--control", "tcp://127.0.0.1:*", "--max-new-tokens", "4",
           "--window", "4", "--jsonl", str(jsonl), "--log-json", "--status-interval", "1", "--max-seconds", "300"]
    daemon = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    logs = LogReader(daemon.stderr)
    collector = None
    try:
        serving = logs.wait_for(lambda r: r.get("msg") == "serving", timeout_s=120)
        pub, control_address = serving["pub"], serving["control"]
        collector = Collector(pub)

        # 1. a subscriber in another process (the `listen` verb) receives the events
        listen = subprocess.run([sys.executable, "-m", "molmo_edge.cli", "listen", pub, "--json", "--count", "2",
                                 "--timeout", "120"], cwd=REPO, capture_output=True, text=True, timeout=180)
        assert listen.returncode == 0, listen.stderr
        received = [Event.from_dict(json.loads(line)) for line in listen.stdout.splitlines()]
        assert len(received) == 2
        for event in received:
            assert event.v == 1 and event.query == "Track all squares." and event.query_index == 0
            assert event.window_t1_s > event.window_t0_s and event.latency_ms.total > 0
            assert NO_POINTS in " ".join(event.parse_errors)  # the random model's garbage, reported

        # 2. the control socket: change the query, refuse garbage, keep serving
        with ControlClient(control_address, timeout_s=30) as control:
            before = status(control)
            assert before["state"] == "running" and before["counters"]["windows"] >= 2
            reply = control.request({"cmd": "set_query", "query": "Track the red square."})
            assert reply["ok"] is True and reply["index"] == 0
            collector.wait_for(lambda e: e["query"] == "Track the red square.")
            garbage = [b"\x00\xff\xfe not even text", b"not json", b"[1, 2]", {"cmd": "explode"},
                       {"cmd": "set_query", "query": ""}, {"cmd": "set_query", "query": "Track\x00 the cup"},
                       {"cmd": "set_query", "query": 7}, {"cmd": "remove_query", "index": 7},
                       {"cmd": "add_query"}, [b"two", b"frames"]]
            for request in garbage:
                reply = control.request(request)
                assert reply["ok"] is False and reply["error"], (request, reply)
            reply = control.request({"cmd": "add_query", "query": "count: stars"})
            assert reply["ok"] is True and reply["index"] == 1
            collector.wait_for(lambda e: e["query_index"] == 1 and e["query"] == "count: stars")
            after = status(control)
            assert daemon.poll() is None and after["state"] == "running"
            assert after["counters"]["windows"] > before["counters"]["windows"]
            for name in ("frames_in", "frames_sampled", "frames_encoded", "windows", "events_published",
                         "events_dropped", "parse_failures", "reconnects", "corrupt_frames"):
                assert name in after["counters"]
            sampled, encoded = after["counters"]["frames_sampled"], after["counters"]["frames_encoded"]
            assert sampled - 1 <= encoded <= sampled  # one may be being encoded right now
        logs.wait_for(lambda r: r.get("msg") == "status" and r["status"]["counters"]["windows"] > 0)

        # 3. SIGTERM: the window in progress is finished and published, then a clean exit
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        signalled = logs.wait_for(lambda r: r.get("signal") == "SIGTERM")
        stopped = logs.wait_for(lambda r: r.get("msg") == "stopped")
        assert stopped["reason"] == "SIGTERM received"
        written = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert stopped["counters"]["events_published"] == len(written) >= signalled["events_published"]
        time.sleep(0.5)  # let the collector take what was in flight
        last = written[-1]
        assert any(e["seq"] == last["seq"] and e["query_index"] == last["query_index"] for e in collector.events), \
            "the last event was written but never reached the subscriber"
    finally:
        if collector is not None:
            collector.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


NO_POINTS = "no <points> or <tracks>"


# -- in-process daemons ----------------------------------------------------------------------------
def start_daemon(config: DaemonConfig, model) -> tuple[Daemon, threading.Thread, dict]:
    daemon = Daemon(config, model=model)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", daemon.run(install_signal_handlers=False)),
                              daemon=True)
    thread.start()
    return daemon, thread, result


def test_a_subscriber_that_stops_reading_never_stalls_the_pipeline(tiny_checkpoint_dir, tmp_path):
    seed, width, height, fps, duration_s = 7, 160, 120, 2.0, 60.0  # 121 frames, all sampled
    gate = threading.Event()  # the first frame waits until the subscribers are connected
    oracle = SceneOracleBackend(tiny_checkpoint_dir, seed, width, height, fps, duration_s, gate=gate)
    # ipc (a Unix socket) rather than tcp: its kernel buffers are fixed (~200 KB) where loopback TCP
    # grows to 4 MB, so a few hundred events are enough to fill them and make ZeroMQ drop
    endpoint = f"ipc://{tmp_path / 'events.sock'}"
    n_windows = 100
    config = DaemonConfig(source=f"synthetic:{seed}:{width}x{height}",
                          queries=["Track all stars.", "Track all squares."], pub=endpoint, control="tcp://127.0.0.1:*", send_hwm=20,
                          pipeline=PipelineConfig(window=6, stride=1, max_windows=n_windows, max_new_tokens=512),
                          source_options={"realtime": False, "fps": fps, "duration_s": duration_s},
                          shutdown_grace_s=0.5)
    daemon, thread, result = start_daemon(config, Engine(oracle))
    context = zmq.Context()
    stalled = context.socket(zmq.SUB)  # connects, then never reads: its queues fill up
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 1024)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    collector = None
    try:
        deadline = time.monotonic() + 30
        while daemon.publisher is None or daemon.publisher.endpoint is None:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        stalled.connect(endpoint)
        collector = Collector(endpoint)
        time.sleep(0.5)  # both connected (ipc connects in microseconds)
        gate.set()
        thread.join(timeout=240)
        assert not thread.is_alive(), "the pipeline stalled"
        assert result["rc"] == 0
        published = daemon.publisher.stats.sent
        assert published == 2 * n_windows  # every window was made and handed to ZeroMQ
        time.sleep(0.3)
        seqs = []
        while stalled.poll(500):
            frames = stalled.recv_multipart()
            seqs.append(msgpack.unpackb(frames[1])["seq"])
        # it got the first few, then fell behind: ZeroMQ dropped for it, the pipeline went on
        assert 0 < len(seqs) < published / 2
        # while a subscriber that reads got (nearly) everything
        assert len(collector.events) > max(len(seqs), 0.8 * published)
    finally:
        gate.set()
        if collector is not None:
            collector.close()
        stalled.close(linger=0)
        context.term()


def test_a_source_that_fails_mid_stream_reconnects(tiny_checkpoint_dir):
    server = MjpegServer(fps=20.0, drop_after=25)  # drops the first connection after ~1.2 s
    try:
        with Engine.from_pretrained(tiny_checkpoint_dir, device="cpu") as engine:
            config = DaemonConfig(source=server.url, queries=["Track all stars."], pub="tcp://127.0.0.1:*",
                                  control="tcp://127.0.0.1:*",
                                  pipeline=PipelineConfig(window=2, stride=1, max_new_tokens=4))
            daemon, thread, result = start_daemon(config, engine)
            try:
                deadline = time.monotonic() + 60
                while daemon.control_server is None or daemon.control_server.endpoint is None:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                with ControlClient(daemon.control_server.endpoint, timeout_s=30) as control:
                    reconnected_at = None
                    while time.monotonic() < deadline:
                        counters = status(control)["counters"]
                        if reconnected_at is None and counters["reconnects"] >= 1:
                            reconnected_at = counters["windows"]
                        if reconnected_at is not None and counters["windows"] >= reconnected_at + 2:
                            break
                        time.sleep(0.2)
                    else:
                        pytest.fail(f"no reconnect followed by new windows: {counters}")
                    assert server.connections >= 2
                    assert status(control)["source_connected"] is True
            finally:
                daemon.request_stop("test over")
                thread.join(timeout=60)
            assert result["rc"] == 0
    finally:
        server.stop()


def test_a_busy_port_fails_before_the_model_is_loaded(tmp_path):
    context = zmq.Context()
    busy = context.socket(zmq.PUB)
    port = busy.bind_to_random_port("tcp://127.0.0.1")
    try:
        config = DaemonConfig(source="synthetic:1", queries=["Track all stars."], pub=f"tcp://127.0.0.1:{port}",
                              control="tcp://127.0.0.1:*", model=str(tmp_path / "no-such-model"))
        started = time.monotonic()
        with pytest.raises(ConfigError, match="cannot bind"):
            Daemon(config).run(install_signal_handlers=False)
        assert time.monotonic() - started < 10
    finally:
        busy.close(linger=0)
        context.term()


def test_control_commands_without_a_process(tiny_checkpoint_dir):
    """pause / resume / list_queries / remove_query through the real control socket, in-process."""
    with Engine.from_pretrained(tiny_checkpoint_dir, device="cpu") as engine:
        config = DaemonConfig(source="synthetic:2:96x72", queries=["Track all stars.", "count: circles"],
                              pub="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*",
                              pipeline=PipelineConfig(window=2, stride=1, max_new_tokens=4),
                              source_options={"realtime": False, "fps": 4.0})
        daemon, thread, result = start_daemon(config, engine)
        try:
            deadline = time.monotonic() + 60
            while daemon.pipeline is None or daemon.control_server.endpoint is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with ControlClient(daemon.control_server.endpoint, timeout_s=30) as control:
                assert control.request({"cmd": "list_queries"})["queries"][1]["kind"] == "count"
                assert control.request({"cmd": "pause"}) == {"paused": True, "ok": True}
                time.sleep(0.3)
                paused_windows = status(control)["counters"]["windows"]
                time.sleep(0.5)
                assert status(control)["counters"]["windows"] == paused_windows
                assert status(control)["state"] == "paused"
                assert control.request({"cmd": "resume"})["ok"] is True
                removed = control.request({"cmd": "remove_query", "index": 0})
                assert removed["ok"] is True and [q["index"] for q in removed["queries"]] == [1]
                wait_until = time.monotonic() + 30
                while status(control)["counters"]["windows"] <= paused_windows + 1:
                    assert time.monotonic() < wait_until
                    time.sleep(0.1)
        finally:
            daemon.request_stop("test over")
            thread.join(timeout=60)
        assert result["rc"] == 0


def test_setup_errors_are_one_line_and_exit_2(tmp_path):
    for args, expected in ((["--source", str(tmp_path / "missing.mp4")], "cannot use"),
                           (["--source", "synthetic:1", "--window", "2", "--stride", "4"], "stride (4)")):
        run = subprocess.run([sys.executable, "-m", "molmo_edge.cli", "serve", *args, "--query", "Track all stars."],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2
        assert run.stderr.strip().splitlines()[-1].startswith("molmo-edge serve: error:")
        assert expected in run.stderr and "Traceback" not in run.stderr

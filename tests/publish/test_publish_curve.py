"""CurveZMQ: an allowed client receives, any other client receives nothing (and is logged)."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from molmo_edge.errors import ConfigError
from molmo_edge.publish.control import ControlServer
from molmo_edge.publish.control_client import ControlClient, ControlTimeoutError
from molmo_edge.publish.curve import CurveClientConfig, CurveServerConfig
from molmo_edge.publish.subscriber import EventSubscriber
from molmo_edge.publish.zmq_publisher import EventPublisher
from tests.publish.publish_helpers import QueryBook, make_event, publish_until

pytestmark = [pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CURVE support"),
              pytest.mark.timeout(120)]  # a ZeroMQ hang fails fast instead of eating the CI budget

ANY_PORT = "tcp://127.0.0.1:*"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    made = tmp_path / "made"
    made.mkdir()
    for name in ("server", "friend", "stranger"):
        zmq.auth.create_certificates(str(made), name)
    allowed = tmp_path / "allowed_clients"
    allowed.mkdir()
    shutil.copy(made / "friend.key", allowed / "friend.key")
    friend_dir = tmp_path / "friend_keys"
    friend_dir.mkdir()
    shutil.copy(made / "friend.key_secret", friend_dir / "friend.key_secret")
    return {"server_secret": made / "server.key_secret", "server_public": made / "server.key",
            "friend": made / "friend.key_secret", "friend_dir": friend_dir, "stranger": made / "stranger.key_secret",
            "allowed": allowed}


def _server(keys) -> CurveServerConfig:
    return CurveServerConfig(server_secret_key_file=keys["server_secret"], client_public_keys_dir=keys["allowed"])


def _client(keys, who: str) -> CurveClientConfig:
    return CurveClientConfig(client_secret_key_file=keys[who], server_public_key_file=keys["server_public"])


def test_allowed_listener_in_another_process_receives_and_a_stranger_gets_nothing(keys, caplog):
    caplog.set_level(logging.WARNING, logger="molmo_edge.publish.curve")
    with EventPublisher(endpoint=ANY_PORT, latest_endpoint=None, curve=_server(keys)) as publisher, \
            EventSubscriber(publisher.endpoint, curve=_client(keys, "stranger")) as stranger, \
            EventSubscriber(publisher.endpoint) as plaintext:
        listener = subprocess.Popen(
            [sys.executable, "-m", "molmo_edge", "listen", publisher.endpoint, "--json", "--count", "3",
             "--timeout", "60", "--curve-server-key", str(keys["server_public"]),
             "--curve-client-keys", str(keys["friend_dir"])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sent = publish_until(lambda seq: publisher.publish(make_event(seq)), lambda: listener.poll() is not None,
                             timeout_s=60)
        for seq in range(sent, sent + 20):  # more events while the others are connected
            publisher.publish(make_event(seq))
            time.sleep(0.02)
        out, err = listener.communicate(timeout=10)
        assert stranger.receive(timeout_s=0.5) is None
        assert plaintext.receive(timeout_s=0.1) is None
        denied = publisher.curve_denied
    assert listener.returncode == 0, err
    assert [json.loads(line)["v"] for line in out.splitlines()] == [1, 1, 1]
    assert denied >= 1
    assert any("refused a client" in r.getMessage() for r in caplog.records)


def test_control_socket_with_curve_answers_only_allowed_clients(keys):
    with ControlServer(QueryBook(), endpoint=ANY_PORT, curve=_server(keys)) as server:
        with ControlClient(server.endpoint, timeout_s=5.0, curve=_client(keys, "friend")) as friend:
            assert friend.request({"cmd": "status"})["ok"] is True
        with ControlClient(server.endpoint, timeout_s=0.5, curve=_client(keys, "stranger")) as stranger:
            with pytest.raises(ControlTimeoutError):
                stranger.request({"cmd": "pause"})
        assert server.curve_denied >= 1


def test_key_mistakes_are_clear_errors(keys, tmp_path):
    public_as_secret = CurveServerConfig(server_secret_key_file=keys["server_public"])
    with pytest.raises(ConfigError, match="no secret key"):
        EventPublisher(endpoint=ANY_PORT, latest_endpoint=None, curve=public_as_secret).start()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no client public keys"):
        EventPublisher(endpoint=ANY_PORT, latest_endpoint=None,
                       curve=CurveServerConfig(server_secret_key_file=keys["server_secret"],
                                               client_public_keys_dir=empty)).start()
    with pytest.raises(ConfigError, match="not found"):
        EventSubscriber("5560", curve=CurveClientConfig(client_secret_key_file=tmp_path / "nope",
                                                        server_public_key_file=keys["server_public"])).open()

"""`ControlClient`: send control requests to a running molmo-edge stream.

    with ControlClient("tcp://127.0.0.1:5562") as control:
        control.request({"cmd": "add_query", "query": "Track all stars."})   # {"ok": true, ...}

A DEALER socket rather than REQ: after a timeout a REQ socket refuses to send again; here the
socket is simply replaced, so a late reply to an abandoned request is never taken for the answer
to the next one.
"""
from __future__ import annotations

import json
from typing import Any

import zmq

from molmo_edge.errors import MolmoEdgeError
from molmo_edge.publish.curve import CurveClientConfig, make_client_socket_secure
from molmo_edge.publish.endpoints import normalize_endpoint


class ControlTimeoutError(MolmoEdgeError):
    """The control server did not answer in time (not running, wrong address or CURVE keys)."""


class ControlClient:
    def __init__(self, endpoint: str, timeout_s: float = 5.0, curve: CurveClientConfig | None = None) -> None:
        self.endpoint = normalize_endpoint(endpoint)
        self.timeout_s = timeout_s
        self.curve = curve
        self._context = zmq.Context()
        self._socket: zmq.Socket | None = None

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            if self.curve is not None:
                make_client_socket_secure(socket, self.curve)
            socket.connect(self.endpoint)
            self._socket = socket
        return self._socket

    def request(self, request: dict[str, Any] | bytes | list[bytes], timeout_s: float | None = None) -> dict[str, Any]:
        """Send a request (a dict is sent as JSON; bytes or a list of frames are sent as they are)
        and return the decoded reply."""
        socket = self._connect()
        if isinstance(request, dict):
            frames = [json.dumps(request).encode("utf-8")]
        elif isinstance(request, bytes):
            frames = [request]
        else:
            frames = list(request)
        socket.send_multipart([b"", *frames])  # the empty delimiter makes us look like REQ
        timeout_ms = int(1000 * (self.timeout_s if timeout_s is None else timeout_s))
        if not socket.poll(timeout_ms, zmq.POLLIN):
            self._reset()
            raise ControlTimeoutError(f"no reply from the control socket at {self.endpoint} within "
                                      f"{timeout_ms / 1000:g} s: is the stream running there?")
        reply = socket.recv_multipart()
        try:
            return json.loads(reply[-1].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MolmoEdgeError(f"the control socket at {self.endpoint} sent a non-JSON reply: {exc}") from exc

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def close(self) -> None:
        self._reset()
        self._context.destroy(linger=0)  # also closes any socket a failed setup left behind

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

"""The control channel: JSON requests on a ZeroMQ ROUTER socket, answered in JSON.

Requests (one JSON object in one frame; `cmd` picks the request type):
    {"cmd": "set_query", "query": "Point to the red circle"}   replace every query with this one
    {"cmd": "add_query", "query": "Track all stars."}          add a query, reply has its index
    {"cmd": "remove_query", "index": 1}
    {"cmd": "pause"}  {"cmd": "resume"}  {"cmd": "status"}  {"cmd": "list_queries"}
Replies: `{"ok": true, ...}` with what the handler returned, or `{"ok": false, "error": "..."}`
for anything wrong (not JSON, wrong types, unknown cmd, oversize, binary garbage, several frames,
a handler that failed). The server answers and keeps serving whatever it receives.

ROUTER rather than REP: a REP socket gets stuck when a client vanishes between request and reply;
ROUTER just drops the reply to a vanished client. Clients may be REQ (the empty delimiter frame is
mirrored back) or DEALER (with or without the delimiter).

The server calls a `ControlHandler` (the pipeline provides one) from its own thread, so the
handler's methods must be thread-safe.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol, Union, runtime_checkable

import zmq
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from molmo_edge.errors import MolmoEdgeError
from molmo_edge.publish.curve import (CurveAuthenticator, CurveServerConfig, make_server_socket_secure,
                                      start_authenticator)
from molmo_edge.publish.endpoints import DEFAULT_CONTROL_ENDPOINT, bind
from molmo_edge.publish.zmq_resources import close_zmq

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: "1" is not an index


class SetQuery(_Request):
    cmd: Literal["set_query"]
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)


class AddQuery(_Request):
    cmd: Literal["add_query"]
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)


class RemoveQuery(_Request):
    cmd: Literal["remove_query"]
    index: int = Field(ge=0)


class Pause(_Request):
    cmd: Literal["pause"]


class Resume(_Request):
    cmd: Literal["resume"]


class Status(_Request):
    cmd: Literal["status"]


class ListQueries(_Request):
    cmd: Literal["list_queries"]


ControlRequest = Annotated[
    Union[SetQuery, AddQuery, RemoveQuery, Pause, Resume, Status, ListQueries], Field(discriminator="cmd")
]
COMMANDS = ("set_query", "add_query", "remove_query", "pause", "resume", "status", "list_queries")
_REQUEST = TypeAdapter(ControlRequest)


@runtime_checkable
class ControlHandler(Protocol):
    """What the control server calls; each returns extra reply fields (or None). Raise
    MolmoEdgeError / ValueError / KeyError / IndexError with a message to refuse a request."""

    def set_query(self, query: str) -> Mapping[str, Any] | None: ...
    def add_query(self, query: str) -> Mapping[str, Any] | None: ...
    def remove_query(self, index: int) -> Mapping[str, Any] | None: ...
    def pause(self) -> Mapping[str, Any] | None: ...
    def resume(self) -> Mapping[str, Any] | None: ...
    def status(self) -> Mapping[str, Any] | None: ...
    def list_queries(self) -> Mapping[str, Any] | None: ...


class ControlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str = DEFAULT_CONTROL_ENDPOINT
    max_request_bytes: int = Field(64 * 1024, ge=64)
    curve: CurveServerConfig | None = None
    poll_interval_s: float = Field(0.05, gt=0)  # how quickly stop() is noticed


class ControlStats(BaseModel):
    requests: int = 0
    bad_requests: int = 0  # answered with ok=false before reaching the handler
    handler_errors: int = 0  # the handler refused or failed
    replies_dropped: int = 0  # the client was gone or not reading


def parse_request(body: bytes, max_request_bytes: int = 64 * 1024) -> SetQuery | AddQuery | RemoveQuery | Pause | Resume | Status | ListQueries:
    """Validate one request frame; raises ValueError with a message fit for the reply."""
    if len(body) > max_request_bytes:
        raise ValueError(f"request of {len(body)} bytes is larger than the {max_request_bytes}-byte limit")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("request is not UTF-8 text; send one JSON object such as {\"cmd\": \"status\"}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"request is not JSON ({exc.msg} at char {exc.pos}); "
                         "send one JSON object such as {\"cmd\": \"status\"}") from None
    except RecursionError:
        raise ValueError("request JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"request must be a JSON object, got a JSON {type(data).__name__}")
    cmd = data.get("cmd")
    if cmd is None:
        raise ValueError(f"request has no 'cmd'; one of: {', '.join(COMMANDS)}")
    if cmd not in COMMANDS:
        raise ValueError(f"unknown cmd {str(cmd)[:50]!r}; one of: {', '.join(COMMANDS)}")
    try:
        return _REQUEST.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"bad {cmd} request: {problems}") from None


class ControlServer:
    """Runs the control socket in its own thread: `start()` binds (errors raised here),
    `stop()` ends the thread and closes the socket."""

    def __init__(self, handler: ControlHandler, config: ControlConfig | None = None, **overrides) -> None:
        if overrides:
            config = ControlConfig.model_validate({**(config.model_dump() if config else {}), **overrides})
        self.handler = handler
        self.config = config or ControlConfig()
        self.stats = ControlStats()
        self.endpoint: str | None = None
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._auth: CurveAuthenticator | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ControlServer:
        if self._thread is not None:
            return self
        self._context = zmq.Context()
        try:
            self._auth = start_authenticator(self._context, self.config.curve)
            socket = self._context.socket(zmq.ROUTER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.RCVHWM, 100)  # a flood of requests queues at most this many
            socket.setsockopt(zmq.SNDHWM, 100)
            # Frames above this make ZeroMQ drop the peer's connection without a reply; below it,
            # oversize requests get an error reply.
            socket.setsockopt(zmq.MAXMSGSIZE, 16 * self.config.max_request_bytes)
            if self.config.curve is not None:
                make_server_socket_secure(socket, self.config.curve)
            self._socket = socket
            self.endpoint = bind(socket, self.config.endpoint, "control socket", self.config.curve is not None)
        except BaseException:
            self._close_zmq()
            raise
        self._stop.clear()
        # The socket was made in this thread and is used only by the server thread from here on
        # (thread start is a full memory barrier, which is what ZeroMQ asks for a hand-over).
        self._thread = threading.Thread(target=self._serve, name="molmo-edge-control", daemon=True)
        self._thread.start()
        log.info("control socket on %s", self.endpoint)
        return self

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(int(self.config.poll_interval_s * 1000)):
                    continue
                while not self._stop.is_set():
                    try:
                        frames = self._socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self._answer(frames)
                    except Exception:  # noqa: BLE001 - whatever happens, keep serving
                        log.exception("control server: unexpected error while answering; still serving")
        finally:
            self._socket.close(linger=0)
            self._socket = None

    def _answer(self, frames: list[bytes]) -> None:
        self.stats.requests += 1
        identity, rest = frames[0], frames[1:]
        # REQ clients put an empty delimiter frame before the body; mirror whatever they sent.
        envelope = [identity, b""] if rest and rest[0] == b"" else [identity]
        body_frames = rest[len(envelope) - 1:]
        try:
            if len(body_frames) != 1:
                reply = self._refuse(f"expected one frame holding a JSON object, got {len(body_frames)} frames")
            else:
                try:
                    request = parse_request(body_frames[0], self.config.max_request_bytes)
                except ValueError as exc:
                    reply = self._refuse(str(exc))
                else:
                    reply = self._call_handler(request)
        except Exception as exc:  # noqa: BLE001 - a request we failed to foresee still gets an answer
            log.exception("control server: unexpected error on a request")
            reply = self._refuse(f"could not handle the request ({type(exc).__name__})")
        self._reply(envelope, reply)

    def _refuse(self, error: str) -> dict[str, Any]:
        self.stats.bad_requests += 1
        return {"ok": False, "error": error}

    def _call_handler(self, request: BaseModel) -> dict[str, Any]:
        args = request.model_dump(exclude={"cmd"})
        try:
            result = getattr(self.handler, request.cmd)(**args)
            reply = {**dict(result or {}), "ok": True}
            json.dumps(reply)  # the handler's fields must be JSON; fail here, not half-sent
            return reply
        except (MolmoEdgeError, ValueError, KeyError, IndexError, TypeError) as exc:
            self.stats.handler_errors += 1
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            return {"ok": False, "error": f"{request.cmd}: {message}"}
        except Exception as exc:  # noqa: BLE001
            self.stats.handler_errors += 1
            log.exception("control handler failed on %s", request.cmd)
            return {"ok": False, "error": f"{request.cmd}: internal error ({type(exc).__name__}: {exc})"}

    def _reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        try:
            self._socket.send_multipart([*envelope, json.dumps(reply).encode("utf-8")], flags=zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError):
            self.stats.replies_dropped += 1

    @property
    def curve_denied(self) -> int:
        return self._auth.denied if self._auth is not None else 0

    def stop(self, join_timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(join_timeout_s)
            if not self._thread.is_alive():
                self._thread = None
        self._close_zmq()

    def _close_zmq(self) -> None:
        if self._thread is not None:
            log.error("control server thread did not stop; leaving its socket open")
            return
        close_zmq([self._socket], self._auth, self._context)
        self._socket, self._auth, self._context = None, None, None

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

"""ZeroMQ endpoint strings: shorthand expansion, loopback checks, binding with clear errors."""
from __future__ import annotations

import ipaddress
import logging
import re

import zmq

from molmo_edge.errors import ConfigError

log = logging.getLogger(__name__)

# Defaults bind to loopback only: exposing events or the control socket beyond this machine is
# the user's decision (and should come with CurveZMQ keys).
DEFAULT_EVENTS_ENDPOINT = "tcp://127.0.0.1:5560"
DEFAULT_LATEST_ENDPOINT = "tcp://127.0.0.1:5561"
DEFAULT_CONTROL_ENDPOINT = "tcp://127.0.0.1:5562"

_TCP_RE = re.compile(r"^tcp://(\[[^\]]+\]|[^:/]+):(\d+|\*)$")


def normalize_endpoint(address: str) -> str:
    """`5560` -> tcp://127.0.0.1:5560, `host:5560` -> tcp://host:5560; full endpoints unchanged."""
    address = address.strip()
    if "://" in address:
        return address
    if address.isdigit():
        return f"tcp://127.0.0.1:{address}"
    if re.fullmatch(r"[^:/\s]+:\d+|\[[^\]]+\]:\d+", address):
        return f"tcp://{address}"
    raise ConfigError(f"'{address}' is not a ZeroMQ address: use tcp://HOST:PORT, HOST:PORT, PORT or ipc://PATH")


def is_local_endpoint(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    match = _TCP_RE.match(endpoint)
    if match is None:
        return False
    host = match.group(1).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: reachable from outside


def bind(socket: zmq.Socket, endpoint: str, what: str, secured: bool) -> str:
    """Bind `socket`; return the endpoint actually bound (a `*` port resolved)."""
    if not is_local_endpoint(endpoint) and not secured:
        log.warning("%s is bound to %s without CurveZMQ: anyone who can reach this address can use it; "
                    "give CURVE keys or bind to 127.0.0.1", what, endpoint)
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(f"cannot bind the {what} to {endpoint}: {exc} (is another process using it? "
                          "pick another port, or a `*` port to let the system choose)") from exc
    return socket.getsockopt_string(zmq.LAST_ENDPOINT)

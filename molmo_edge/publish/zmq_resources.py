"""Tearing down what a ZeroMQ endpoint owns: its sockets, its CURVE authenticator, its context.

Publisher, subscriber and control server each own a private context, so shutting one down is
the same three steps in the same order; one function keeps that order in one place.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import zmq

if TYPE_CHECKING:  # curve.py imports zmq.auth; only the type is needed here
    from molmo_edge.publish.curve import CurveAuthenticator


def close_zmq(sockets: Iterable[zmq.Socket | None], auth: CurveAuthenticator | None,
              context: zmq.Context | None) -> None:
    """Close `sockets` (None entries skipped), stop `auth`, destroy `context`; never waits.

    Order matters: the sockets go first so the authenticator thread sees no more handshakes, and
    the context last, since destroying it also closes any socket a failed setup left behind.
    LINGER 0 everywhere: unsent messages are dropped rather than holding up shutdown.
    The caller sets its own references to None afterwards.
    """
    for socket in sockets:
        if socket is not None:
            socket.close(linger=0)
    if auth is not None:
        auth.stop()
    if context is not None:
        context.destroy(linger=0)

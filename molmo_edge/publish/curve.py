"""CurveZMQ: encryption and an allow-list of client keys for sockets exposed beyond localhost.

Key files are the ones `zmq.auth.create_certificates(folder, name)` writes: `name.key` (public)
and `name.key_secret` (public + secret). The server loads its `.key_secret`; each allowed client's
`.key` goes into one folder (the allow-list). A client loads its own `.key_secret` and the
server's `.key`.

A refused CURVE handshake is silent on the wire (the client just never receives anything), so the
authenticator here logs every refused key at WARNING and counts it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from pydantic import BaseModel, ConfigDict

from molmo_edge.errors import ConfigError

log = logging.getLogger(__name__)


class CurveServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server_secret_key_file: Path  # the server's `.key_secret`
    # Folder of allowed clients' public `.key` files. None: any client that knows the server's
    # public key may connect (traffic is still encrypted).
    client_public_keys_dir: Path | None = None


class CurveClientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_secret_key_file: Path  # this client's `.key_secret`
    server_public_key_file: Path  # the server's `.key`


def load_keypair(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a `.key_secret` file."""
    public, secret = _load(path)
    if not secret:
        raise ConfigError(f"{path} holds no secret key: pass the '.key_secret' file, not the public '.key'")
    return public, secret


def load_public_key(path: Path) -> bytes:
    public, _ = _load(path)
    return public


def _load(path: Path) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"CurveZMQ key file not found: {path} (create keys with zmq.auth.create_certificates)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a ZeroMQ certificate file: {exc}") from exc
    if not public:
        raise ConfigError(f"{path} holds no public key")
    return public, secret


def load_allowed_keys(folder: Path) -> set[bytes]:
    """z85 public keys of every `.key` file in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"client key folder not found: {folder}")
    keys = {load_public_key(p) for p in sorted(folder.glob("*.key"))}
    if not keys:
        raise ConfigError(f"{folder} holds no client public keys (*.key); no client could connect")
    return keys


def make_server_socket_secure(socket: zmq.Socket, config: CurveServerConfig) -> None:
    """Turn `socket` into a CURVE server (call before bind)."""
    public, secret = load_keypair(config.server_secret_key_file)
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    socket.curve_server = True


def make_client_socket_secure(socket: zmq.Socket, config: CurveClientConfig) -> None:
    """Turn `socket` into a CURVE client of the server whose public key is given (before connect)."""
    public, secret = load_keypair(config.client_secret_key_file)
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    socket.curve_serverkey = load_public_key(config.server_public_key_file)


class _AllowList:
    """ZAP credentials provider: allows keys in the set, logs and counts refusals."""

    def __init__(self, keys: set[bytes], where: str) -> None:
        self.keys, self.where = keys, where
        self.allowed = 0
        self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            self.allowed += 1
            return True
        self.denied += 1
        log.warning("CurveZMQ: refused a client with public key %s (not in %s)",
                    key.decode("ascii", "replace"), self.where)
        return False


class CurveAuthenticator:
    """One ZAP authenticator thread for a context (ZeroMQ allows one per context)."""

    def __init__(self, context: zmq.Context, config: CurveServerConfig) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(context, log=logging.getLogger("molmo_edge.publish.zap"))
        self._allow: _AllowList | None = None
        if config.client_public_keys_dir is not None:
            self._allow = _AllowList(load_allowed_keys(config.client_public_keys_dir),
                                     str(config.client_public_keys_dir))
        self._started = False

    def start(self) -> None:
        self._auth.start()
        self._started = True
        if self._allow is not None:
            self._auth.configure_curve_callback(domain="*", credentials_provider=self._allow)
        else:
            log.warning("CurveZMQ without a client allow-list: any client that knows the server's "
                        "public key can connect (traffic is encrypted)")
            self._auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)

    @property
    def denied(self) -> int:
        return self._allow.denied if self._allow is not None else 0

    def stop(self) -> None:
        if self._started:
            self._auth.stop()
            self._started = False


def start_authenticator(context: zmq.Context, config: CurveServerConfig | None) -> CurveAuthenticator | None:
    """The started ZAP authenticator of `context` for `config`, or None when the socket is not
    CURVE-secured. A failed start stops the thread it began, so the caller has nothing to clean."""
    if config is None:
        return None
    auth = CurveAuthenticator(context, config)
    try:
        auth.start()
    except BaseException:
        auth.stop()
        raise
    return auth

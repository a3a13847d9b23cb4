"""Who may talk to a pipeline's control, tap and metrics endpoints.

By default they listen on loopback only, where the machine's own users are the boundary.
Beyond loopback the topology refuses them unless they are protected:

- control and tap (ZeroMQ) with CURVE: encrypted, and only clients whose public key is in
  `KEYS/clients/` are let in (a ZAP authenticator checks each connection). `zstream keys KEYS`
  makes the server's key pair and one client key pair; give a client its `client.key_secret`
  and the server's `server.key`, and put its public key in `clients/`.
- metrics (HTTP) with a bearer token read from `security.metrics_token_file`, which Prometheus
  sends with `authorization: {credentials_file: ...}`.
"""

from __future__ import annotations

import hmac
import ipaddress
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from zstream.core.address import endpoint_host_port
from zstream.errors import ZStreamError

SERVER_KEY = "server.key"
CLIENT_KEY = "client.key"
CLIENTS_DIR = "clients"
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or "*": it may well resolve to a public interface


def endpoint_is_local(endpoint: str) -> bool:
    """ipc:// (a file, guarded by its permissions), or tcp:// on a loopback address."""
    if not endpoint or endpoint.startswith("ipc://"):
        return True
    host = (endpoint_host_port(endpoint) or ("", ""))[0]
    return is_loopback(host)


def make_keys(directory: Path) -> list[Path]:
    """Create the server and one client CURVE key pair in `directory`; the client's public key
    goes into `clients/` (the allowed list). Refuses to overwrite existing keys."""
    if (directory / SERVER_KEY).exists():
        raise ZStreamError(f"{directory} already holds keys; remove them first to make new ones")
    clients = directory / CLIENTS_DIR
    clients.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    zmq.auth.create_certificates(directory, "server")
    zmq.auth.create_certificates(directory, "client")
    shutil.copy(directory / CLIENT_KEY, clients / CLIENT_KEY)
    return sorted(directory.rglob("*.key*"))


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, private = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ZStreamError(f"cannot read the CURVE key {path}: {exc}") from exc
    if secret and private is None:
        raise ZStreamError(f"{path} holds no secret key")
    return public, private


class CurveServer:
    """CURVE for the sockets a process binds, with the allow-list checked by a ZAP thread."""

    def __init__(self, context: zmq.Context, keys: Path) -> None:
        self.public, self.secret = _load(keys / f"{SERVER_KEY}_secret", secret=True)
        self.auth = ThreadAuthenticator(context)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(keys / CLIENTS_DIR))

    def protect(self, socket: zmq.Socket) -> None:
        """Call before bind()."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def stop(self) -> None:
        self.auth.stop()


def curve_client(socket: zmq.Socket, keys: Path) -> None:
    """Make `socket` a CURVE client of the server whose public key is in `keys` (before connect)."""
    public, secret = _load(keys / f"{CLIENT_KEY}_secret", secret=True)
    server_public, _ = _load(keys / SERVER_KEY, secret=False)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def bearer_token_required(app: WsgiApp, token: str) -> WsgiApp:
    """`app`, answering 401 to any request without `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if hmac.compare_digest(given, expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")])
        return [b"a bearer token is required\n"]

    return guarded


def read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ZStreamError(f"security.metrics_token_file {path}: cannot read it: {exc.strerror}") from exc
    if len(token) < 16:
        raise ZStreamError(f"security.metrics_token_file {path}: the token must be at least 16 characters")
    return token

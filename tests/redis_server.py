"""Private `redis-server` processes for tests that must stop, restart or reconfigure Redis
(never the shared one at 6379, which other tests use)."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import redis

from tests.conftest import wait_until

TLS_PASSWORD = "tls-s3cret"


class PrivateRedis:
    """A `redis-server` subprocess on a free loopback port, without persistence; with `tls`,
    it speaks TLS only (with a self-signed certificate) and wants a password."""

    def __init__(self, directory: Path, tls: bool = False) -> None:
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.server_args = ["--port", str(self.port)]
        if tls:
            cert, key = self._self_signed()
            self.url = f"rediss://:{TLS_PASSWORD}@127.0.0.1:{self.port}/0?ssl_ca_certs={cert}"
            self.server_args = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert)]
            self.server_args += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
            self.server_args += ["--tls-auth-clients", "no", "--requirepass", TLS_PASSWORD]
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _self_signed(self) -> tuple[Path, Path]:
        cert, key = self.directory / "cert.pem", self.directory / "key.pem"
        request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        subprocess.run(
            [*request, *subject, "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return cert, key

    def start(self) -> None:
        self.starts += 1
        command = ["redis-server", *self.server_args, "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)]
        command += ["--logfile", str(self.directory / f"redis-{self.starts}.log")]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        client = self.client()
        try:
            wait_until(lambda: _pings(client), 10, message=f"redis-server on port {self.port}")
        finally:
            client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False

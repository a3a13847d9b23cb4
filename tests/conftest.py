"""Shared fixtures: the real Redis, and a real `zstream up` run on a test topology.

Redis is part of what is tested: when it is absent the tests fail with how to start it,
they never skip.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from zstream.core.ring import SHM_DIR

REDIS_URL = "redis://127.0.0.1:6379/0"
REPO = Path(__file__).resolve().parent.parent
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is required at {REDIS_URL} and is not answering ({exc}); start it with: {REDIS_START}"
        )
    yield client
    client.close()


@pytest.fixture
def streams(redis_client: redis.Redis) -> Iterator[tuple[str, str]]:
    """A fresh (batch stream, QC stream) pair, deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = (f"test:{tag}:frames", f"test:{tag}:qc")
    yield names
    if not os.environ.get("ZSTREAM_KEEP_STREAMS"):
        redis_client.delete(*names)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short run dir (Unix socket paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="zs-", dir="/tmp"))
    yield path / "run"
    shutil.rmtree(path, ignore_errors=True)


def topology_text(
    run_dir: Path, streams: tuple[str, str], cameras: list[dict[str, Any]], **sections: str
) -> str:
    """A topology TOML for tests: given cameras, every frame written out raw (yuv420p, unscaled),
    small batches."""
    parts = [
        f'run_dir = "{run_dir}"',
        f'[redis]\nurl = "{REDIS_URL}"\nstream = "{streams[0]}"\nqc_stream = "{streams[1]}"\nmaxlen = 100000',
        sections.get("capture", "[capture]\nworkers = 2\nring_slots = 16\nqueue_depth = 6"),
        # The clips tests make are noise-and-gradient patterns that the blur check rightly calls
        # soft; these tests are about transport, so sharpness does not gate them (quality is
        # proven on the labelled set in test_quality_labelled.py).
        sections.get("validation", "[validation]\nworkers = 2\n[validation.thresholds]\nmin_sharpness = 0.0"),
        sections.get(
            "batcher",
            '[batcher]\nbatch_size = 4\nbatch_timeout_ms = 100\nencoding = "raw"\n'
            "output_fps = 0\noutput_width = 0",
        ),
        sections.get(
            "supervisor", "[supervisor]\nstats_interval_s = 0.2\nrestart_initial_s = 0.2\nlog_interval_s = 2"
        ),
        # Ports the pipeline picks itself (it publishes them in RUN_DIR/endpoints.json): tests
        # never collide with each other or with a pipeline running on the machine.
        sections.get("control", '[control]\nendpoint = "tcp://127.0.0.1:*"'),
        sections.get("tap", '[tap]\nendpoint = "tcp://127.0.0.1:*"'),
        sections.get("metrics", '[metrics]\naddress = "127.0.0.1:0"'),
    ]
    for camera in cameras:
        lines = ["[[cameras]]"] + [f"{key} = {_toml(value)}" for key, value in camera.items()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


class Pipeline:
    """A `zstream up` subprocess with its output captured to a file."""

    def __init__(self, topology_file: Path, run_dir: Path, args: tuple[str, ...] = ()) -> None:
        self.topology_file = topology_file
        self.run_dir = run_dir
        self.log_path = topology_file.with_suffix(".log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zstream.cli", "up", str(topology_file), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        """The supervisor's status file; empty sections until it is first written."""
        try:
            return json.loads((self.run_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"cameras": {}, "workers": {}}

    def worker_pids(self) -> dict[str, int]:
        return {name: w["pid"] for name, w in self.status()["workers"].items() if w["pid"]}

    def camera(self, camera_id: str) -> dict[str, Any]:
        return self.status()["cameras"].get(camera_id, {"state": "", "detail": ""})

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgid(self.process.pid), signal.SIGKILL)
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code


@pytest.fixture
def pipeline(run_dir: Path, tmp_path: Path) -> Iterator[Callable[[str], Pipeline]]:
    started: list[Pipeline] = []

    def start(text: str) -> Pipeline:
        topology_file = tmp_path / "topology.toml"
        topology_file.write_text(text)
        running = Pipeline(topology_file, run_dir)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a directory; yields (directory, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.1, message: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message or condition}")


def shm_segments(run_id: str) -> list[Path]:
    return sorted(SHM_DIR.glob(f"zstream-{run_id}-*"))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    """A private `redis-server` (tests/redis_server.py), started; killed afterwards."""
    from tests.redis_server import PrivateRedis

    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory)
    server.start()
    yield server
    if server.process is not None:
        server.kill()

"""The Containerfile, built and run with podman: the default topology inside the image writes
batches to the host's Redis, as a non-root user, healthy; a too-small /dev/shm is refused
with the flag that fixes it.

No image registry is reachable here, so the base is a Debian bookworm (Python 3.11) made
with mmdebstrap and imported once (kept as BASE_IMAGE for later runs), and every Python
package comes from a wheelhouse built on the host (FIELD-NOTES: "Containers on this machine").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import REPO, wait_until

BASE_IMAGE = "localhost/zstream-test-base:bookworm"
CONF = REPO / "tests" / "container" / "containers.conf"
CONTEXT_FILES = (
    "zstream",
    "pyproject.toml",
    "README.md",
    "topology.toml",
    "Containerfile",
    ".containerignore",
)


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run scripts/setup --test")
    env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:3])}... failed: {result.stderr[-2000:]}")
    return result


def start_base(work: Path) -> subprocess.Popen[bytes] | None:
    """Start making the base image's root file system unless the image exists (it runs while
    the wheelhouse is built: one waits on Debian's mirror, the other on the CPU)."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return None
    include = "--include=python3,python3-venv,ca-certificates"
    command = ["mmdebstrap", "--quiet", "--variant=minbase", include, "bookworm", str(work / "base.tar")]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_base(work: Path, making: subprocess.Popen[bytes] | None) -> None:
    if making is None:
        return
    _, errors = making.communicate(timeout=600)
    assert making.returncode == 0, f"mmdebstrap failed: {errors.decode(errors='replace')[-2000:]}"
    podman("import", "-q", str(work / "base.tar"), BASE_IMAGE, timeout=300)
    (work / "base.tar").unlink()


def build_context(work: Path) -> Path:
    """The repository's files the image needs, and a wheelhouse of zstream and its dependencies
    (async-timeout too: redis needs it below Python 3.11.3, and bookworm has 3.11.2)."""
    context = work / "context"
    context.mkdir()
    for name in CONTEXT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, context / name)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", "wheelhouse"]
    subprocess.run(
        [*pip, ".", "async-timeout>=4.0.3"], cwd=context, check=True, capture_output=True, timeout=600
    )
    return context


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("container")
    making = start_base(work)
    try:
        context = build_context(work)
    finally:
        finish_base(work, making)
    tag = f"localhost/zstream-test:{uuid.uuid4().hex[:8]}"
    build = ["build", "-q", "--format", "docker", "--network", "host", "--build-arg", f"BASE={BASE_IMAGE}"]
    podman(*build, "-t", tag, "-f", "Containerfile", str(context), timeout=900)
    shutil.rmtree(context)
    yield tag
    podman("rmi", "-f", tag, check=False)


def test_image_runs_the_default_topology_against_the_host_redis(
    image: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    config = podman("image", "inspect", image, "--format", "{{.Config.User}} {{.Config.Healthcheck.Test}}")
    assert config.stdout.startswith("10001:10001 ") and "zstream health" in config.stdout
    stream = f"test:container:{uuid.uuid4().hex[:8]}"
    text = (REPO / "topology.toml").read_text()
    for old, new in (
        ('stream = "zstream:frames"', f'stream = "{stream}"'),
        ('qc_stream = "zstream:qc"', f'qc_stream = "{stream}:qc"'),
        ('run_dir = "/tmp/zstream"', 'run_dir = "/tmp/zstream"\n[control]\nendpoint = "tcp://127.0.0.1:*"'),
    ):
        assert old in text
        text = text.replace(old, new)
    # The host's network: its Redis at 127.0.0.1, and ports the pipeline picks itself.
    text += '\n[metrics]\naddress = "127.0.0.1:0"\n[tap]\nendpoint = "tcp://127.0.0.1:*"\n'
    topology = tmp_path / "topology.toml"
    topology.write_text(text)
    topology.chmod(0o644)
    name = f"zstream-test-{uuid.uuid4().hex[:8]}"
    mount = f"{topology}:/etc/zstream/topology.toml:ro"
    podman("run", "-d", "--name", name, "--network", "host", "--shm-size=256m", "-v", mount, image)
    try:
        cameras = {"junction-north", "junction-south", "ring-road-km4", "bridge-east"}
        wait_until(lambda: _cameras_in(redis_client, stream) >= cameras, 90, interval=0.5, message="batches")
        health = wait_until(
            lambda: (r := podman("exec", name, "zstream", "health", check=False)).returncode == 0 and r, 60
        )
        assert health.stdout.strip() == "healthy"
        uid = podman("exec", name, "sh", "-c", "grep ^Uid: /proc/1/status").stdout.split()[1]
        assert uid == "10001"  # `zstream up` itself runs as the image's user, not root
        started = time.monotonic()
        podman("stop", "-t", "30", name, timeout=60)
        assert time.monotonic() - started < 30  # drained on SIGTERM, not killed at the deadline
        assert podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
    finally:
        logs = podman("logs", name, check=False)
        podman("rm", "-f", name, check=False)
        redis_client.delete(stream, f"{stream}:qc")
    assert "pipeline up: 4 cameras" in logs.stderr, logs.stderr[-3000:]


def _cameras_in(client: redis.Redis, stream: str) -> set[str]:
    from zstream.core.wire import decode_batch_entry

    cameras = set()
    for _, fields in client.xrange(stream, count=200):
        _, frames = decode_batch_entry(fields)
        cameras |= {meta.camera for meta, _ in frames}
    return cameras


def test_default_shm_of_a_container_is_refused_with_the_flag(image: str, tmp_path: Path) -> None:
    text = (REPO / "topology.toml").read_text().replace("ring_slots = 8", "ring_slots = 64")
    topology = tmp_path / "topology.toml"
    topology.write_text(text)
    topology.chmod(0o644)
    mount = f"{topology}:/etc/zstream/topology.toml:ro"
    result = podman("run", "--rm", "--network", "none", "-v", mount, image, check=False, timeout=60)
    assert result.returncode == 1, result.stderr
    found = re.search(r"rings need ([\d.]+) MiB .* but /dev/shm has ([\d.]+) MiB free", result.stderr)
    assert found is not None and float(found[2]) <= 64 < float(found[1]), result.stderr
    flag = re.search(r"run the container with --shm-size=(\d+)m", result.stderr)
    assert flag is not None and float(found[1]) < int(flag[1])
    assert "Traceback" not in result.stderr

"""Checks that this machine can run a (valid) topology, made before any process starts.

Each check says what is wrong and what to change: a pipeline that starts and then dies
of SIGBUS on a full /dev/shm, or loops on an unreachable Redis, is worse than one that
refuses with a reason.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
from pathlib import Path

from redis.exceptions import RedisError

from zstream.core.address import endpoint_host_port, split_host_port, unbracket
from zstream.core.ring import SHM_DIR, shm_space
from zstream.envrefs import missing
from zstream.errors import PreflightError, mask_url
from zstream.redis_client import topology_client
from zstream.topology import Topology


def check_platform() -> None:
    """The rings' generation check relies on x86-64 memory ordering (see zstream.core.ring); on a
    weaker model (ARM) a reader could see a frame torn, so refuse rather than risk it."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        raise PreflightError(f"zstream's shared-memory rings need an x86-64 CPU; this machine is {machine}")


def readable_passwords(topology_file: str, topology: Topology) -> str | None:
    """A warning when the operator's topology file holds camera passwords and other local users
    can read it. zstream keeps every file it writes private; this one is the operator's."""
    mode = os.stat(topology_file).st_mode & 0o777
    with_password = [c.id for c in topology.cameras if mask_url(c.url) != c.url]
    if not with_password or not mode & 0o044:
        return None
    return (
        f"{topology_file} holds the passwords of cameras {', '.join(with_password)} and other users "
        f"can read it (mode {mode:o}): chmod 600 {topology_file}"
    )


def shared_memory_needed(topology: Topology) -> int:
    return sum(topology.ring_bytes(camera) for camera in topology.cameras)


def shared_memory_free() -> int:
    return shm_space()[1]


def check_shared_memory(topology: Topology) -> None:
    needed, free = shared_memory_needed(topology), shared_memory_free()
    if needed > free:
        raise PreflightError(
            f"the frame rings need {_mib(needed)} of shared memory ({len(topology.cameras)} cameras, "
            f"{_breakdown(topology)}) but {SHM_DIR} has {_mib(free)} free. Lower capture.ring_slots, "
            f"set cameras[].resize or capture.max_size, or enlarge {SHM_DIR}: {_shm_advice(needed)}"
        )


def _shm_advice(needed: int) -> str:
    """The exact setting that gives /dev/shm room for `needed` bytes, for where we run: a
    Kubernetes pod, a container (64 MB of /dev/shm by default), or a host."""
    size = SHM_HEADROOM_MIB + -(-needed // 2**20)  # MiB, rounded up, with room for cameras added live
    kubernetes = f"on Kubernetes mount an emptyDir with medium: Memory and sizeLimit: {size}Mi at {SHM_DIR}"
    container = f"run the container with --shm-size={size}m (docker run / podman run)"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kubernetes
    if Path("/run/.containerenv").exists() or Path("/.dockerenv").exists():
        return f"{container}; {kubernetes}"
    return f"`mount -o remount,size={size}m {SHM_DIR}`; in a container, {container}"


def check_environment(topology: Topology) -> None:
    """Every `${NAME}` of the URLs is set in this environment, all reported at once (the
    workers inherit it; see zstream.envrefs)."""
    urls = [("redis.url", topology.redis.url)]
    urls += [(f"cameras[{i}] ({camera.id}).url", camera.url) for i, camera in enumerate(topology.cameras)]
    problems = [
        f"{key}: environment variable {name} is not set" for key, url in urls for name in missing(url)
    ]
    if problems:
        raise PreflightError("; ".join(problems))


def check_redis(topology: Topology) -> None:
    settings = topology.redis
    try:
        client = topology_client(settings)
        with client:
            client.ping()
    except (RedisError, OSError, ValueError) as exc:
        raise PreflightError(f"cannot reach Redis at {mask_url(settings.url)}: {exc}") from exc


def _breakdown(topology: Topology) -> str:
    camera = max(topology.cameras, key=topology.ring_bytes)
    width, height = topology.frame_capacity(camera)
    return (
        f"largest: {camera.id} with {topology.ring_slots_for(camera)} slots of {width}x{height} "
        f"= {_mib(topology.ring_bytes(camera))}"
    )


def _mib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


SHM_HEADROOM_MIB = 64  # suggested beyond what the rings need now

# File descriptors a pipeline may hold: a base for the supervisor and each worker's sockets,
# plus per camera its ZeroMQ pipes, its network connection and FFmpeg's own.
FDS_BASE = 256
FDS_PER_CAMERA = 16


def check_open_files(topology: Topology) -> None:
    """Raise the soft limit of open files as far as needed (up to the hard limit, which only
    root can raise); refuse when even the hard limit is too low."""
    needed = FDS_BASE + FDS_PER_CAMERA * len(topology.cameras)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise PreflightError(
                f"{len(topology.cameras)} cameras need about {needed} open files, and this process may "
                f"open at most {hard} (hard limit): raise it (`ulimit -Hn {needed}` as root, LimitNOFILE= "
                f"in a systemd unit, or docker run --ulimit nofile={needed})"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))  # inherited by every worker


def check_endpoints(topology: Topology) -> None:
    """Every TCP port the pipeline will listen on is free, all reported at once."""
    wanted = [
        ("control.endpoint", _tcp_of_endpoint(topology.control.endpoint)),
        ("tap.endpoint", _tcp_of_endpoint(topology.tap.endpoint)),
        ("metrics.address", _tcp_of_address(topology.metrics.address)),
    ]
    problems = []
    for key, address in wanted:
        if address is not None and (why := _bind_problem(*address)) is not None:
            host, port = address
            problems.append(
                f"{key}: {host}:{port} is not free ({why}); stop what holds it or pick another port"
            )
    if problems:
        raise PreflightError("; ".join(problems))


def _tcp_of_endpoint(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of tcp://HOST:PORT; None for ipc://, an empty endpoint or port *."""
    if not endpoint.startswith("tcp://"):
        return None
    host, port = endpoint_host_port(endpoint) or ("", "*")
    return None if port == "*" else (unbracket(host), int(port))


def _tcp_of_address(address: str) -> tuple[str, int] | None:
    if not address:
        return None
    host, port = split_host_port(address) or ("", "0")
    return None if port == "0" else (unbracket(host) or "0.0.0.0", int(port))


def _bind_problem(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ and http.server do
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None

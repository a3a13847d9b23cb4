"""Checks that this machine can run a (valid) topology, made before any process starts.

Each check says what is wrong and what to change: a pipeline that starts and then dies
of SIGBUS on a full /dev/shm, or loops on an unreachable Redis, is worse than one that
refuses with a reason.
"""

from __future__ import annotations

import os
import platform

import redis
from redis.exceptions import RedisError

from zstream.errors import PreflightError, mask_url
from zstream.ring import SHM_DIR
from zstream.topology import Topology


def check_platform() -> None:
    """The rings' generation check relies on x86-64 memory ordering (see zstream.ring); on a
    weaker model (ARM) a reader could see a frame torn, so refuse rather than risk it."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        raise PreflightError(f"zstream's shared-memory rings need an x86-64 CPU; this machine is {machine}")


def shared_memory_needed(topology: Topology) -> int:
    return sum(topology.ring_bytes(camera) for camera in topology.cameras)


def shared_memory_free() -> int:
    stats = os.statvfs(SHM_DIR)
    return stats.f_bavail * stats.f_frsize


def check_shared_memory(topology: Topology) -> None:
    needed, free = shared_memory_needed(topology), shared_memory_free()
    if needed > free:
        raise PreflightError(
            f"the frame rings need {_mib(needed)} of shared memory ({len(topology.cameras)} cameras, "
            f"{_breakdown(topology)}) but {SHM_DIR} has {_mib(free)} free. Lower capture.ring_slots, "
            f"set cameras[].resize or capture.max_size, or enlarge {SHM_DIR} "
            f"(e.g. `mount -o remount,size=4G {SHM_DIR}`, or docker run --shm-size=4g)"
        )


def check_redis(topology: Topology) -> None:
    settings = topology.redis
    try:
        client = redis.Redis.from_url(
            settings.url,
            socket_connect_timeout=settings.connect_timeout_s,
            socket_timeout=settings.connect_timeout_s,
        )
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

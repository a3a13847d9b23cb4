"""The commands the control endpoint offers, run inside the supervisor's loop.

Each command reads or changes the supervisor's state directly: it runs between two ticks,
so no lock is needed and a change is published to the workers before the next tick.
Camera changes are validated as a whole topology first; a refused change touches nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis

from zstream import queues
from zstream.control import ControlError
from zstream.core.ring import Ring
from zstream.core.vocabulary import CameraState, WorkerState
from zstream.errors import RingError, TopologyError, ZStreamError, mask_url
from zstream.live import LiveCameras
from zstream.preflight import shared_memory_free
from zstream.redis_client import topology_client
from zstream.rundir import create_ring
from zstream.shard import Shard, owner
from zstream.stats import StatsBoard
from zstream.status import ControlStatus, ProcessCost, Status, SystemStatus
from zstream.system import shared_memory
from zstream.topology import Camera, Placement, Topology

log = logging.getLogger(__name__)
TROUBLED_STATES = frozenset(
    s.value for s in (CameraState.FAILED, CameraState.RECONNECTING, CameraState.STALLED)
)
RELEASE_TIMEOUT_S = 4.0  # how long a resized camera's capture may take to let go of its ring


class Pipeline(Protocol):
    """What the commands read and change: the supervisor (`zstream.supervisor.Supervisor`),
    which owns the commands and hands itself to them."""

    topology: Topology
    placement: Placement
    shard: Shard | None
    live: LiveCameras | None
    board: StatsBoard
    rings: dict[str, Ring]
    retired_seq: dict[str, int]
    process_costs: list[ProcessCost]

    def publish(self, topology: Topology) -> None: ...

    def receive_stats(self, timeout_ms: int) -> None: ...

    def capture_reports(self, camera_id: str) -> bool: ...

    def status(self) -> Status: ...


class Operations:
    def __init__(self, supervisor: Pipeline) -> None:
        self.supervisor = supervisor

    def run(self, command: str, args: dict[str, Any]) -> Any:
        handlers: dict[str, Callable[..., Any]] = {
            "cameras": self.cameras,
            "camera_add": self.camera_add,
            "camera_update": self.camera_update,
            "camera_rm": self.camera_rm,
            "status": self.status,
            "queues": self.queues,
            "purge": self.purge,
            "health": self.health,
            "system": self.system,
        }
        handler = handlers.get(command)
        if handler is None:
            raise ControlError(f"unknown command {command!r}")
        try:
            return handler(**args)
        except TypeError as exc:
            raise ControlError(f"{command}: bad arguments: {exc}") from exc
        except TopologyError as exc:
            raise ControlError("; ".join(exc.problems)) from exc
        except ZStreamError as exc:
            raise ControlError(str(exc)) from exc

    # ---- cameras --------------------------------------------------------------------------

    def cameras(self) -> list[dict[str, Any]]:
        sup = self.supervisor
        status = sup.status()["cameras"]
        return [
            {
                "id": camera.id,
                "url": mask_url(camera.url),
                "state": status[camera.id]["state"],
                "fps_in": status[camera.id]["fps_in"],
                "fps_out": status[camera.id]["fps_out"],
                "fps_cap": camera.fps,
                "resize": "x".join(map(str, camera.resize)) if camera.resize else None,
                "capture_worker": sup.placement.capture.get(camera.id),
                "validation_worker": sup.placement.validate.get(camera.id),
            }
            for camera in sup.topology.cameras
        ]

    def camera_add(self, camera: dict[str, Any]) -> dict[str, Any]:
        sup = self.supervisor
        camera_id = camera.get("id")
        if sup.shard is not None and isinstance(camera_id, str) and not sup.shard.owns(camera_id):
            count = sup.shard.count
            raise ControlError(
                f"camera {camera_id} belongs to shard {owner(camera_id, count)}/{count}, and this pipeline "
                f"is shard {sup.shard}: add it there"
            )
        topology = self._live().add(sup.topology, camera)
        added = topology.camera(camera["id"])
        self._create_ring(topology, added)
        sup.placement = sup.placement.with_camera(added.id, topology)
        sup.publish(topology)
        self._live().record(added.id, topology)
        log.info("camera %s added live (%s)", added.id, mask_url(added.url))
        return {"id": added.id, "capture_worker": sup.placement.capture[added.id]}

    def camera_update(self, id: str, changes: dict[str, Any]) -> dict[str, Any]:
        sup = self.supervisor
        topology = self._live().update(sup.topology, id, changes)
        before, after = sup.topology.camera(id), topology.camera(id)
        if _ring_shape(sup.topology, before) != _ring_shape(topology, after):
            self._replace_ring(sup.topology, before, topology, after)
        sup.publish(topology)
        self._live().record(id, topology)
        log.info("camera %s updated live: %s", id, ", ".join(sorted(changes)))
        return {"id": id, "changed": sorted(changes)}

    def camera_rm(self, id: str) -> dict[str, Any]:
        sup = self.supervisor
        topology = self._live().remove(sup.topology, id)
        sup.placement = sup.placement.without(id)
        sup.publish(topology)
        self._await_release(id)
        self._retire_ring(id)
        sup.board.states.pop(id, None)
        self._live().record(id, None)
        log.info("camera %s removed live", id)
        return {"id": id}

    def _replace_ring(self, old: Topology, before: Camera, new: Topology, after: Camera) -> None:
        """A new ring for a camera's new size. Capture lets go of the old one first, so no
        reader can mistake a slot of the new ring for one of the old; should the new ring
        fail, the camera is put back as it was (a refused change touches nothing)."""
        sup = self.supervisor
        self._check_room(new, after, freed=sup.rings[before.id].size)
        sup.publish(old.model_copy(update={"cameras": [c for c in old.cameras if c.id != before.id]}))
        self._await_release(before.id)
        first_seq = self._retire_ring(before.id)
        try:
            self._create_ring(new, after, first_seq)
        except ControlError:
            self._create_ring(old, before, first_seq)
            sup.publish(old)
            raise

    def _check_room(self, topology: Topology, camera: Camera, freed: int = 0) -> None:
        needed, free = topology.ring_bytes(camera), shared_memory_free() + freed
        if needed > free:
            raise ControlError(
                f"camera {camera.id}: its ring needs {needed / 2**20:.1f} MiB of shared memory and only "
                f"{free / 2**20:.1f} MiB is free (set resize or ring_slots)"
            )

    def _live(self) -> Any:
        if self.supervisor.live is None:
            raise ControlError("this pipeline was started without a topology file: live changes are off")
        return self.supervisor.live

    def _create_ring(self, topology: Topology, camera: Camera, first_seq: int | None = None) -> None:
        sup = self.supervisor
        self._check_room(topology, camera)
        try:
            sup.rings[camera.id] = create_ring(
                topology, camera, sup.retired_seq.pop(camera.id, 0) if first_seq is None else first_seq
            )
        except (RingError, FileExistsError, OSError) as exc:
            raise ControlError(f"camera {camera.id}: cannot create its ring: {exc}") from exc

    def _retire_ring(self, camera_id: str) -> int:
        """Remove the camera's ring; its next seq is kept, so a camera re-added or resized
        continues its sequence (consumers never see a camera's seq go back)."""
        ring = self.supervisor.rings.pop(camera_id)
        next_seq = ring.next_seq
        ring.close()
        ring.unlink()
        self.supervisor.retired_seq[camera_id] = next_seq
        return next_seq

    def _await_release(self, camera_id: str) -> None:
        """Wait (serving stats) until no capture worker reports the camera any more."""
        sup = self.supervisor
        deadline = time.monotonic() + RELEASE_TIMEOUT_S
        while time.monotonic() < deadline and sup.capture_reports(camera_id):
            sup.receive_stats(timeout_ms=50)
        if sup.capture_reports(camera_id):
            log.warning(
                "camera %s: capture did not confirm it let go within %.0fs", camera_id, RELEASE_TIMEOUT_S
            )

    # ---- what operators look at ------------------------------------------------------------

    def status(self) -> ControlStatus:
        return {**self.supervisor.status(), "system": self.system()}

    def queues(self) -> list[dict[str, Any]]:
        return queues.describe_streams(self.supervisor.topology)

    def purge(self, stream: str) -> dict[str, Any]:
        deleted = queues.purge(self.supervisor.topology, stream)
        log.warning("purged %d entries from Redis stream %s", deleted, stream)
        return {"stream": stream, "deleted": deleted}

    def system(self) -> SystemStatus:
        sup = self.supervisor
        rings = sum(ring.size for ring in sup.rings.values())
        return {"processes": sup.process_costs, "shared_memory": shared_memory(rings)}

    def health(self) -> dict[str, Any]:
        """Healthy, or degraded with every reason: a liveness probe's answer."""
        status = self.supervisor.status()
        problems = [
            f"worker {name} is {info['state']}"
            for name, info in status["workers"].items()
            if info["state"] != WorkerState.RUNNING.value
        ]
        for camera_id, info in status["cameras"].items():
            if info["state"] in TROUBLED_STATES:
                problems.append(f"camera {camera_id} is {info['state']}: {info['detail']}")
        problems += self._redis_problems()
        return {"healthy": not problems, "problems": problems}

    def _redis_problems(self) -> list[str]:
        settings = self.supervisor.topology.redis
        try:
            client = topology_client(settings, timeout_s=1)
            with client:
                client.ping()
        except redis.RedisError as exc:
            return [f"Redis at {mask_url(settings.url)} does not answer: {exc}"]
        return []


def _ring_shape(topology: Topology, camera: Camera) -> tuple[tuple[int, int], int]:
    return topology.frame_capacity(camera), topology.ring_slots_for(camera)

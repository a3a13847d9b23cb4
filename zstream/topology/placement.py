"""Which worker of each stage runs each camera, kept stable while cameras come and go."""

from __future__ import annotations

import json
from dataclasses import dataclass

from zstream.sources.zmq_hub import hub_key
from zstream.topology.schema import Camera, Topology


@dataclass(frozen=True)
class Placement:
    """Which capture worker runs each camera, and which validation worker checks it.

    Each camera sticks to one validation worker: that keeps its order and its per-camera
    state. The supervisor owns the placement and keeps it stable while cameras are added
    and removed live: a camera never moves because another one came or went.
    """

    capture: dict[str, int]
    validate: dict[str, int]

    def with_camera(self, camera_id: str, topology: Topology) -> Placement:
        """Place a new camera on the least loaded worker of each stage."""
        shared = shared_capture_worker(topology, topology.camera(camera_id), self.capture)
        return Placement(
            {
                **self.capture,
                camera_id: shared if shared >= 0 else _least_loaded(self.capture, topology.capture.workers),
            },
            {**self.validate, camera_id: _least_loaded(self.validate, topology.validation.workers)},
        )

    def without(self, camera_id: str) -> Placement:
        return Placement(
            {c: w for c, w in self.capture.items() if c != camera_id},
            {c: w for c, w in self.validate.items() if c != camera_id},
        )

    def to_json(self) -> str:
        return json.dumps({"capture": self.capture, "validate": self.validate})

    @classmethod
    def from_json(cls, text: str) -> Placement:
        data = json.loads(text)
        return cls(dict(data["capture"]), dict(data["validate"]))


def _least_loaded(assigned: dict[str, int], workers: int) -> int:
    load = [0] * workers
    for worker in assigned.values():
        load[worker] += 1
    return load.index(min(load))


def initial_placement(topology: Topology) -> Placement:
    """Cameras spread round-robin over the capture and validation workers, in file order;
    zmq:// cameras sharing a socket go to the capture worker of the first of them."""
    capture: dict[str, int] = {}
    for i, camera in enumerate(topology.cameras):
        capture[camera.id] = shared_capture_worker(topology, camera, capture)
        if capture[camera.id] < 0:
            capture[camera.id] = i % topology.capture.workers
    return Placement(
        capture=capture,
        validate={c.id: i % topology.validation.workers for i, c in enumerate(topology.cameras)},
    )


def shared_capture_worker(topology: Topology, camera: Camera, placed: dict[str, int]) -> int:
    """The capture worker of a placed camera whose zmq:// socket `camera` shares; -1: none.
    One socket can only be bound by one process."""
    if not camera.url.lower().startswith("zmq://"):
        return -1
    key = hub_key(camera.url)
    for other in topology.cameras:
        if other.id in placed and other.id != camera.id and hub_key(other.url) == key:
            return placed[other.id]
    return -1

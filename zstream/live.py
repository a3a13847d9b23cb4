"""Cameras added, changed and removed while the pipeline runs (`zstream cameras add/update/rm`).

Every change is validated as a whole topology, by the same rules as the file, before
anything is touched: a bad value is refused with its key, and nothing changes. What is
accepted is recorded in the overlay beside the topology file (`zstream.topology.overlay`),
so that it outlives a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from zstream.core.files import replace_file
from zstream.errors import TopologyError
from zstream.topology import Camera, Topology, parse_topology
from zstream.topology.overlay import OVERLAY_VERSION, read_overlay

log = logging.getLogger(__name__)


class LiveCameras:
    """Validates live camera changes into new topologies and records them in the overlay."""

    def __init__(self, path: Path, base_dir: Path) -> None:
        self.path = path
        self.base_dir = base_dir
        self.overlay = read_overlay(path)

    def add(self, topology: Topology, config: dict[str, Any]) -> Topology:
        camera_id = config.get("id")
        if not isinstance(camera_id, str):
            raise TopologyError(["id: required, a string"])
        if any(camera.id == camera_id for camera in topology.cameras):
            raise TopologyError([f"id: camera {camera_id!r} already exists (use update)"])
        return self._validated(topology, [*_raw_cameras(topology), config], camera_id)

    def update(self, topology: Topology, camera_id: str, changes: dict[str, Any]) -> Topology:
        cameras = _raw_cameras(topology)
        index = _index_of(cameras, camera_id)
        if "id" in changes and changes["id"] != camera_id:
            raise TopologyError(["id: a camera's id cannot change (remove it and add it again)"])
        config = {**cameras[index], **changes}
        if isinstance(changes.get("thresholds"), dict):  # thresholds merge key by key
            config["thresholds"] = {**cameras[index].get("thresholds", {}), **changes["thresholds"]}
        cameras[index] = {key: value for key, value in config.items() if value is not None}
        return self._validated(topology, cameras, camera_id)

    def remove(self, topology: Topology, camera_id: str) -> Topology:
        cameras = _raw_cameras(topology)
        del cameras[_index_of(cameras, camera_id)]
        if not cameras:
            raise TopologyError([f"camera {camera_id!r} is the last one: a pipeline needs at least one"])
        return self._validated(topology, cameras, None)

    def record(self, camera_id: str, topology: Topology | None) -> None:
        """Persist the camera's configuration in `topology` (None: removed). The overlay is read
        again first: the shards of one topology file share it, each changing its own cameras."""
        camera = next((c for c in topology.cameras if c.id == camera_id), None) if topology else None
        with contextlib.suppress(TopologyError):  # unreadable now: what this process knows is kept
            self.overlay = read_overlay(self.path)
        self.overlay[camera_id] = (
            None if camera is None else camera.model_dump(mode="json", exclude_defaults=True)
        )
        text = json.dumps({"version": OVERLAY_VERSION, "cameras": self.overlay}, indent=1) + "\n"
        replace_file(self.path, text)  # private (0600): camera URLs may hold passwords
        log.info("camera %s: live change saved in %s", camera_id, self.path)

    def _validated(
        self, topology: Topology, cameras: list[dict[str, Any]], camera_id: str | None
    ) -> Topology:
        raw = topology.model_dump(mode="json", exclude_defaults=True)
        raw["run_dir"] = topology.run_dir
        raw["cameras"] = cameras
        try:
            return parse_topology(raw, self.base_dir)
        except TopologyError as exc:
            raise TopologyError([_about(problem, cameras, camera_id) for problem in exc.problems]) from exc


def _raw_cameras(topology: Topology) -> list[dict[str, Any]]:
    return [_raw(camera) for camera in topology.cameras]


def _raw(camera: Camera) -> dict[str, Any]:
    return camera.model_dump(mode="json", exclude_defaults=True)


def _index_of(cameras: list[dict[str, Any]], camera_id: str) -> int:
    for index, camera in enumerate(cameras):
        if camera.get("id") == camera_id:
            return index
    known = ", ".join(sorted(str(c.get("id")) for c in cameras))
    raise TopologyError([f"no camera {camera_id!r} (cameras: {known})"])


def _about(problem: str, cameras: list[dict[str, Any]], camera_id: str | None) -> str:
    """'cameras[7].fps: ...' -> 'fps: ...' for the camera being changed."""
    if camera_id is not None:
        prefix = f"cameras[{_index_of(cameras, camera_id)}]"
        if problem.startswith(prefix + "."):
            return problem[len(prefix) + 1 :]
        if problem.startswith(prefix + ":"):
            return problem[len(prefix) + 2 :]
    return problem

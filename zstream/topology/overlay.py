"""Cameras changed live, as kept beside the topology file so that they outlive a restart.

Live changes are kept in an overlay beside the topology file, `<name>.live.json` (for
`topology.toml`: `topology.live.json`). It maps camera ids to their whole configuration,
or to null for a camera removed. `zstream up` merges it over the file: an entry replaces
the file's camera of that id, null removes it, other entries are appended. The file stays
as the operator wrote it; deleting the overlay goes back to it. `zstream.live` writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zstream.errors import TopologyError

OVERLAY_VERSION = 1


def overlay_path(topology_file: str | Path) -> Path:
    path = Path(topology_file)
    return path.with_name(f"{path.stem}.live.json")


def read_overlay(path: Path) -> dict[str, dict[str, Any] | None]:
    """The overlay's cameras (id -> config or None); empty when there is no overlay."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise TopologyError(
            [f"{path}: cannot read the live changes: {exc} (delete it to drop them)"]
        ) from exc
    if not isinstance(data, dict) or data.get("version") != OVERLAY_VERSION:
        raise TopologyError([f"{path}: not a zstream live-changes file of version {OVERLAY_VERSION}"])
    cameras = data.get("cameras")
    if not isinstance(cameras, dict):
        raise TopologyError([f"{path}: 'cameras' must be a table of camera ids"])
    return cameras


def merge_overlay(raw: dict[str, Any], overlay: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """The raw topology with the live changes applied (see the module docstring)."""
    if not overlay or not isinstance(raw.get("cameras"), list):
        return raw
    merged = []
    for camera in raw["cameras"]:
        camera_id = camera.get("id") if isinstance(camera, dict) else None
        if isinstance(camera_id, str) and camera_id in overlay:  # other ids: the schema reports them
            if overlay[camera_id] is not None:
                merged.append(overlay[camera_id])
        else:
            merged.append(camera)
    listed = {c.get("id") for c in raw["cameras"] if isinstance(c, dict) and isinstance(c.get("id"), str)}
    merged += [config for camera_id, config in overlay.items() if camera_id not in listed and config]
    return {**raw, "cameras": merged}

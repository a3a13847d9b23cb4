"""Reading a topology file: TOML, the cameras changed live since (the overlay), the schema
and the checks, every problem reported at once with its key path."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from zstream.errors import TopologyError
from zstream.topology.checks import (
    _absolute,
    _duplicate_camera_ids,
    _exposure_problems,
    _format_error,
    _is_file_url,
    _semantic_problems,
)
from zstream.topology.overlay import merge_overlay, overlay_path, read_overlay
from zstream.topology.schema import Topology, file_path


def load_topology(path: str | os.PathLike[str], with_live_changes: bool = True) -> Topology:
    """Read and validate a topology file, with the cameras changed live since (see `overlay`);
    raises TopologyError listing every problem."""
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TopologyError([f"{source}: file not found"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError([f"{source}: cannot read: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError([f"{source}: not valid TOML: {exc}"]) from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise TopologyError([f"{source}: not valid TOML: arrays or tables nested too deeply"]) from exc
    if with_live_changes:
        raw = merge_overlay(raw, read_overlay(overlay_path(source)))
    return parse_topology(raw, base_dir=source.resolve().parent)


def parse_topology(raw: dict[str, Any], base_dir: Path) -> Topology:
    """Validate already-parsed TOML; relative paths are resolved against `base_dir`."""
    # Checks of values the schema cannot judge run on the raw file too, so that their
    # problems are reported together with the schema's instead of on the next attempt.
    problems = _duplicate_camera_ids(raw) + _semantic_problems(raw, base_dir)
    if raw.get("cameras") == []:
        problems.append("cameras: at least one camera is needed, got []")
    try:
        topology = _resolve_paths(Topology.model_validate(raw), base_dir)
    except ValidationError as exc:
        problems.extend(_format_error(error) for error in exc.errors())
    else:
        problems.extend(_exposure_problems(topology))
    if problems:
        raise TopologyError(problems)
    return topology


def _resolve_paths(topology: Topology, base_dir: Path) -> Topology:
    """Make run_dir and file cameras absolute, so workers need not know where the file was."""
    cameras = [
        camera.model_copy(update={"url": str(_absolute(file_path(camera.url), base_dir))})
        if _is_file_url(camera.url)
        else camera
        for camera in topology.cameras
    ]
    security = topology.security
    paths = {
        key: str(_absolute(value, base_dir)) if value else value
        for key, value in (
            ("curve_keys", security.curve_keys),
            ("metrics_token_file", security.metrics_token_file),
        )
    }
    return topology.model_copy(
        update={
            "cameras": cameras,
            "run_dir": str(_absolute(topology.run_dir, base_dir)),
            "security": security.model_copy(update=paths),
        }
    )

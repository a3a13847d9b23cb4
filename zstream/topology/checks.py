"""What the schema cannot judge: camera URLs (files found, hosts and ports, synthetic and
zmq:// parameters), run_dir paths, duplicate ids, endpoints exposed beyond loopback without
protection; and every problem phrased with its key path."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zstream.core.address import split_host_port
from zstream.errors import SourceError, mask_url
from zstream.security import CLIENTS_DIR, SERVER_KEY, endpoint_is_local, is_loopback
from zstream.sources.synthetic import parse_synthetic_url
from zstream.sources.zmq_hub import camera_problems, parse_zmq_url
from zstream.topology.schema import (
    MAX_RUN_DIR_LENGTH,
    NETWORK_SCHEMES,
    RTP_SCHEMES,
    SOURCE_SCHEMES,
    Topology,
    _cut,
    _masked,
    _shown,
    _url_error,
    file_path,
    source_scheme,
)


def _exposure_problems(topology: Topology) -> list[str]:
    """Endpoints beyond loopback need their protection configured (see zstream.security)."""
    security, problems = topology.security, []
    for key, endpoint in (
        ("control.endpoint", topology.control.endpoint),
        ("tap.endpoint", topology.tap.endpoint),
    ):
        if not endpoint_is_local(endpoint) and not security.curve_keys:
            problems.append(
                f"{key}: {endpoint} is reachable beyond this machine: set security.curve_keys "
                "(`zstream keys DIR` makes them), or bind it to 127.0.0.1"
            )
    host = (split_host_port(topology.metrics.address) or ("", ""))[0]
    if topology.metrics.address and not is_loopback(host) and not security.metrics_token_file:
        problems.append(
            f"metrics.address: {topology.metrics.address} is reachable beyond this machine: set "
            "security.metrics_token_file (a file holding a token), or bind it to 127.0.0.1"
        )
    pushed = [(i, c.id, c.url) for i, c in enumerate(topology.cameras) if c.url.lower().startswith("zmq://")]
    if pushed:
        problems.extend(camera_problems(pushed, security.curve_keys))
    keys = Path(security.curve_keys)
    if security.curve_keys and not (keys / f"{SERVER_KEY}_secret").is_file():
        problems.append(
            f"security.curve_keys: no {SERVER_KEY}_secret in {keys} (make keys with `zstream keys {keys}`)"
        )
    elif security.curve_keys and not (keys / CLIENTS_DIR).is_dir():
        problems.append(f"security.curve_keys: no {CLIENTS_DIR}/ directory of allowed client keys in {keys}")
    if security.metrics_token_file and not Path(security.metrics_token_file).is_file():
        problems.append(f"security.metrics_token_file: file not found: {security.metrics_token_file}")
    return problems


def key_path(loc: tuple[Any, ...]) -> str:
    """('cameras', 3, 'fps') -> 'cameras[3].fps'."""
    text = ""
    for part in loc:
        part = mask_url(part) if isinstance(part, str) and "://" in part else part  # an unknown key
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _format_error(error: Mapping[str, Any]) -> str:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key_path(loc)}: unknown key"
    if kind == "missing":
        return f"{key_path(loc)}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if "got" in message or kind.startswith("value_error"):
        return f"{key_path(loc)}: {message}"
    value = error.get("input")
    shown = _cut(mask_url(value)) if isinstance(value, str) and "://" in value else _shown(value)
    return f"{key_path(loc)}: {message}, got {shown}"


def _duplicate_camera_ids(raw: dict[str, Any]) -> list[str]:
    cameras = raw.get("cameras")
    if not isinstance(cameras, list):
        return []
    seen: dict[str, int] = {}
    problems = []
    for index, camera in enumerate(cameras):
        camera_id = camera.get("id") if isinstance(camera, dict) else None
        if not isinstance(camera_id, str):
            continue
        if camera_id in seen:
            problems.append(
                f"cameras[{index}].id: duplicate id {camera_id!r} (also cameras[{seen[camera_id]}])"
            )
        else:
            seen[camera_id] = index
    return problems


def _semantic_problems(raw: dict[str, Any], base_dir: Path) -> list[str]:
    problems = []
    run_dir = raw.get("run_dir", Topology.model_fields["run_dir"].default)
    if isinstance(run_dir, str) and (problem := _path_problem(run_dir)):
        problems.append(f"run_dir: {problem}")
    elif isinstance(run_dir, str) and len(resolved := str(_absolute(run_dir, base_dir))) > MAX_RUN_DIR_LENGTH:
        problems.append(
            f"run_dir: {len(resolved)} characters is too long for Unix socket paths "
            f"(at most {MAX_RUN_DIR_LENGTH}), got {_shown(str(_absolute(_masked(run_dir), base_dir)))}"
        )
    cameras = raw.get("cameras")
    for index, camera in enumerate(cameras if isinstance(cameras, list) else []):
        if isinstance(camera, dict) and isinstance(camera.get("url"), str) and camera["url"]:
            problem = _camera_url_problem(camera["url"], str(camera.get("id", "")), base_dir)
            if problem:
                problems.append(f"cameras[{index}].url: {problem}")
            elif "transport" in camera and source_scheme(camera["url"]) not in RTP_SCHEMES:
                problems.append(
                    f"cameras[{index}].transport: only rtsp:// and onvif:// cameras have one, "
                    f"not {source_scheme(camera['url'])}"
                )
    return problems


def _path_problem(path: str) -> str | None:
    """What makes a path unusable before it is even looked up (the schema cannot tell)."""
    if "\0" in path:
        return "contains a NUL character"
    try:
        Path(path).expanduser()
    except RuntimeError:  # ~name of no such user
        return f"no such user's home directory: {path.partition('/')[0]!r}"
    return None


def _is_file_url(url: str) -> bool:
    """Whether a camera URL names a file; False for one too broken to say (reported on its own)."""
    try:
        return source_scheme(url) == "file"
    except ValueError:
        return False


def _absolute(path: str, base_dir: Path) -> Path:
    try:
        expanded = Path(path).expanduser()
    except RuntimeError:  # ~name of no such user: reported by _path_problem where it matters
        expanded = Path(path)
    return Path(os.path.normpath(expanded if expanded.is_absolute() else base_dir / expanded))


def _camera_url_problem(url: str, camera_id: str, base_dir: Path) -> str | None:
    if "\0" in url:
        return "contains a NUL character"
    try:
        scheme = source_scheme(url)
    except ValueError as exc:
        return f"not a valid URL ({_url_error(exc)})"
    if scheme not in SOURCE_SCHEMES:
        return f"unsupported scheme {scheme!r} in {mask_url(url)!r}; use one of {list(SOURCE_SCHEMES)}"
    if scheme == "file":
        if problem := _path_problem(file_path(url)):
            return problem
        path = _absolute(file_path(url), base_dir)
        # As shown: what a URL parser takes for a password ("a://u:pw@x", a Windows drive to us) masked.
        shown = _cut(str(_absolute(file_path(mask_url(url)), base_dir) if "@" in url else path))
        try:
            found = path.is_file()
        except OSError as exc:  # a name too long, a directory we may not search
            return f"cannot look up {shown}: {exc.strerror}"
        if not found:
            return f"file not found: {shown}"
    if scheme in NETWORK_SCHEMES:
        parts = urlsplit(url)
        if not parts.hostname:
            return f"no host in {mask_url(url)!r}"
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
        except ValueError:
            return f"port is not a number from 0 to 65535 in {mask_url(url)!r}"
    if scheme == "synthetic":
        try:
            parse_synthetic_url(url, camera_id)
        except SourceError as exc:
            return str(exc)
    if scheme == "zmq":
        try:
            parse_zmq_url(url)
        except SourceError as exc:
            return str(exc)
    return None

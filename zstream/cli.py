"""The `zstream` command line.

Bad input ends with a message naming what is wrong and a distinct exit status, never a
traceback: 2 for an invalid topology, 1 when this machine cannot run it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from zstream import __version__
from zstream.control import ControlClient, ControlError, published_endpoints
from zstream.core.vocabulary import WorkerState
from zstream.errors import PreflightError, TopologyError, ZStreamError
from zstream.shard import SHARD_ENV, ShardError, parse_shard, shard_topology
from zstream.status import ControlStatus, ProcessCost, StatusError, read_control_status, read_status
from zstream.topology import Topology, load_topology
from zstream.worker import configure_logging

EXIT_ENVIRONMENT = 1
EXIT_INVALID = 2


def _load(path: str) -> Topology:
    try:
        return load_topology(path)
    except TopologyError as exc:
        count = len(exc.problems)
        click.echo(f"{path}: {count} problem{'s' if count != 1 else ''}:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_INVALID)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zstream")
def main() -> None:
    """Ingest traffic-camera video into Redis Streams through a ZeroMQ multiprocess pipeline."""


@main.command()
@click.argument("topology_file", type=click.Path(dir_okay=False, path_type=str))
def validate(topology_file: str) -> None:
    """Check TOPOLOGY_FILE and print OK or every problem with its key path (exit 2)."""
    from zstream.preflight import shared_memory_needed

    topology = _load(topology_file)
    click.echo(
        f"OK: {len(topology.cameras)} cameras, {topology.capture.workers} capture / "
        f"{topology.validation.workers} validation workers, rings need "
        f"{shared_memory_needed(topology) / 2**20:.1f} MiB of shared memory"
    )


@main.command()
@click.argument("topology_file", type=click.Path(dir_okay=False, path_type=str), default="topology.toml")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--shard",
    "shard_text",
    envvar=SHARD_ENV,
    metavar="I/N",
    help=f"run only the cameras of shard I of N (0 <= I < N; also POD-NAME-I/N; env {SHARD_ENV})",
)
def up(topology_file: str, log_level: str, shard_text: str | None) -> None:
    """Run the pipeline described by TOPOLOGY_FILE until Ctrl-C (which drains it first)."""
    from zstream import preflight
    from zstream.live import LiveCameras
    from zstream.supervisor import Supervisor
    from zstream.topology.overlay import overlay_path

    try:
        shard = parse_shard(shard_text) if shard_text else None
    except ShardError as exc:
        click.echo(f"zstream: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    topology = _load(topology_file)
    os.environ["ZSTREAM_LOG_LEVEL"] = log_level.upper()  # inherited by every worker
    if shard is not None:
        os.environ[SHARD_ENV] = str(shard)  # workers' log lines say it too
        whole, topology = len(topology.cameras), shard_topology(topology, shard)
    configure_logging("supervisor", log_level.upper())
    if warning := preflight.readable_passwords(topology_file, topology):
        logging.getLogger("zstream").warning("%s", warning)
    if shard is not None:
        logging.getLogger("zstream").info(
            "shard %s: %d of the topology's %d cameras, streams %s and %s",
            shard,
            len(topology.cameras),
            whole,
            topology.redis.stream,
            topology.redis.qc_stream,
        )
    live = LiveCameras(overlay_path(topology_file), Path(topology_file).resolve().parent)
    try:
        code = Supervisor(topology, live, shard).run()
    except PreflightError as exc:
        logging.getLogger("zstream").error("cannot start: %s", exc)
        sys.exit(EXIT_ENVIRONMENT)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


# ---- commands that talk to a running pipeline ----------------------------------------------

EXIT_DEGRADED = 1


def _endpoint_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """-t/--topology and --endpoint: where the running pipeline's control endpoint is."""
    command = click.option(
        "--endpoint", help="control endpoint (default: the one the pipeline of --topology bound)"
    )(command)
    return click.option(
        "-t",
        "--topology",
        "topology_file",
        default="topology.toml",
        show_default=True,
        type=click.Path(dir_okay=False, path_type=str),
        help="topology file of the running pipeline",
    )(command)


def _client(topology_file: str, endpoint: str | None) -> ControlClient:
    """The running pipeline's control endpoint, with the topology's CURVE keys when it has some."""
    keys = None
    if endpoint is None or Path(topology_file).exists():
        topology = _load(topology_file)
        endpoint = endpoint or published_endpoints(topology.run_dir).get("control", topology.control.endpoint)
        run_dir = Path(topology.run_dir)
        if run_dir.is_dir() and not os.access(run_dir, os.R_OK | os.X_OK):
            raise ControlError(
                f"run_dir {run_dir} belongs to uid {run_dir.stat().st_uid}: only that user can "
                "reach its pipeline"
            )
        if endpoint.endswith(":*"):  # a port the pipeline picks, and no pipeline published one
            raise ControlError(
                f"no pipeline is running on run_dir {topology.run_dir} (a running one publishes its "
                f"control endpoint in {Path(topology.run_dir) / 'endpoints.json'})"
            )
        keys = Path(topology.security.curve_keys) if topology.security.curve_keys else None
    return ControlClient(endpoint, keys=keys)


def _call(topology_file: str, endpoint: str | None, command: str, **args: Any) -> Any:
    """The command's result; a refusal or an absent pipeline is one line and exit 1."""
    try:
        return _client(topology_file, endpoint).call(command, **args)
    except ControlError as exc:
        click.echo(f"zstream: {exc}", err=True)
        sys.exit(EXIT_ENVIRONMENT)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=1, sort_keys=True))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    _console().print(table)


def _console() -> Console:
    """The terminal's width on a terminal; wide enough for whole rows when piped."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


@main.command()
@_endpoint_options
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
def status(topology_file: str, endpoint: str | None, as_json: bool) -> None:
    """Every camera's state, rates and drops; every worker's state and cost."""
    try:
        result = read_control_status(_call(topology_file, endpoint, "status"))
    except StatusError as exc:
        click.echo(f"zstream: the pipeline's answer: {exc}", err=True)
        sys.exit(EXIT_ENVIRONMENT)
    if as_json:
        _print_json(result)
        return
    _camera_table(result)
    _worker_table(result)
    shm = result["system"]["shared_memory"]
    click.echo(
        f"shared memory: rings {_mib(shm['rings_bytes'])}, /dev/shm {_mib(shm['shm_free_bytes'])} free "
        f"of {_mib(shm['shm_total_bytes'])}"
    )


def _camera_table(result: ControlStatus) -> None:
    cameras = result["cameras"]
    _table(
        f"cameras (up {result['uptime_s']:.0f} s"
        + (f", shard {result['shard']})" if result.get("shard") else ")"),
        [
            "camera",
            "state",
            "fps in",
            "fps out",
            "age s",
            "dropped",
            "reconnected/tries",
            "QC pass",
            "detail",
        ],
        [
            [
                camera_id,
                row["state"],
                row["fps_in"],
                row["fps_out"],
                row["last_frame_age_s"],
                ", ".join(f"{reason} {n}" for reason, n in sorted(row["dropped"].items())) or 0,
                f"{row['reconnected']}/{row['reconnects']}",
                "-" if row["quality"]["pass_rate"] is None else f"{row['quality']['pass_rate']:.1%}",
                row["detail"],
            ]
            for camera_id, row in cameras.items()
        ],
    )


def _worker_table(result: ControlStatus) -> None:
    processes = {p["name"]: p for p in result["system"]["processes"]}
    _table(
        "workers",
        ["worker", "state", "pid", "restarts", "cameras", "queued", "CPU %", "RSS"],
        [
            [
                name,
                w["state"],
                w["pid"],
                w["restarts"],
                w["cameras"],
                w.get("queued_frames"),
                *_cost(processes.get(name)),
            ]
            for name, w in result["workers"].items()
        ]
        + [
            ["supervisor", WorkerState.RUNNING.value, p["pid"], 0, None, None, *_cost(p)]
            for p in [processes.get("supervisor")]
            if p
        ],
    )


def _cost(process: ProcessCost | None) -> list[Any]:
    return [None, None] if process is None else [process["cpu_percent"], _mib(process["rss_bytes"])]


@main.command()
@_endpoint_options
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a line")
def health(topology_file: str, endpoint: str | None, as_json: bool) -> None:
    """Exit 0 when healthy, 1 when degraded (with why) or unreachable: a liveness probe."""
    result = _call(topology_file, endpoint, "health")
    if as_json:
        _print_json(result)
    elif result["healthy"]:
        click.echo("healthy")
    else:
        click.echo("degraded:\n" + "\n".join(f"  {problem}" for problem in result["problems"]))
    sys.exit(0 if result["healthy"] else EXIT_DEGRADED)


@main.command()
@_endpoint_options
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def queues(topology_file: str, endpoint: str | None, as_json: bool) -> None:
    """The pipeline's Redis streams: length, consumer groups, pending entries, oldest pending age."""
    result = _call(topology_file, endpoint, "queues")
    if as_json:
        _print_json(result)
        return
    rows = []
    for stream in result:
        groups = stream["groups"] or [{"group": None}]
        for group in groups:
            rows.append(
                [
                    stream["stream"],
                    stream["length"],
                    group["group"],
                    group.get("consumers"),
                    group.get("pending"),
                    group.get("lag"),
                    group.get("oldest_pending_s"),
                ]
            )
    _table(
        "Redis streams",
        ["stream", "length", "group", "consumers", "pending", "lag", "oldest pending s"],
        rows,
    )


@main.command()
@_endpoint_options
@click.argument("stream")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def purge(topology_file: str, endpoint: str | None, stream: str, yes: bool) -> None:
    """Delete every entry of STREAM (one of the pipeline's streams); consumer groups stay."""
    if not yes:
        if not sys.stdin.isatty():
            click.echo("zstream: purge needs confirmation: run it in a terminal or pass --yes", err=True)
            sys.exit(EXIT_INVALID)
        click.confirm(f"Delete every entry of the Redis stream {stream!r}?", abort=True)
    result = _call(topology_file, endpoint, "purge", stream=stream)
    click.echo(f"purged {result['deleted']} entries from {result['stream']}")


@main.command()
@_endpoint_options
@click.option("--refresh", default=1.0, show_default=True, help="seconds between redraws")
def top(topology_file: str, endpoint: str | None, refresh: float) -> None:
    """A live view of cameras and stages, troubled cameras first (Ctrl-C to leave)."""
    from zstream.top import run_top

    try:
        client = _client(topology_file, endpoint)
    except ControlError as exc:
        click.echo(f"zstream: {exc}", err=True)
        sys.exit(EXIT_ENVIRONMENT)
    sys.exit(run_top(lambda: read_status(client.call("status")), Console(), refresh_s=refresh))


@main.command()
@click.argument("endpoint")
@click.option("--camera", "camera_ids", multiple=True, metavar="ID", help="only this camera (repeatable)")
@click.option("--save", "save_dir", type=click.Path(file_okay=False, path_type=Path), help="save frames here")
@click.option("--count", type=click.IntRange(min=1), help="stop after this many frames")
@click.option(
    "--keys", type=click.Path(file_okay=False, path_type=Path), help="CURVE keys of a protected tap"
)
def tap(
    endpoint: str, camera_ids: tuple[str, ...], save_dir: Path | None, count: int | None, keys: Path | None
) -> None:
    """Watch the validated frames published on the tap ENDPOINT: fps per camera, frames saved."""
    from zstream.tap_viewer import run_tap

    sys.exit(run_tap(endpoint, list(camera_ids), save_dir, count, sys.stdout, keys=keys))


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def keys(directory: Path) -> None:
    """Make CURVE keys in DIRECTORY for control and tap endpoints beyond loopback (security.curve_keys)."""
    from zstream.security import make_keys

    try:
        made = make_keys(directory)
    except ZStreamError as exc:
        click.echo(f"zstream: {exc}", err=True)
        sys.exit(EXIT_ENVIRONMENT)
    click.echo("\n".join(str(path) for path in made))
    click.echo(
        f'set security.curve_keys = "{directory}"; clients use --keys with client.key_secret and '
        "server.key; allowed clients' public keys go in clients/"
    )


@main.group()
def cameras() -> None:
    """List, add, update and remove cameras of a running pipeline, live."""


@cameras.command("ls")
@_endpoint_options
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def cameras_ls(topology_file: str, endpoint: str | None, as_json: bool) -> None:
    """The running pipeline's cameras (with live changes)."""
    result = _call(topology_file, endpoint, "cameras")
    if as_json:
        _print_json(result)
        return
    columns = ["id", "url", "state", "fps_in", "fps_out", "fps_cap", "resize", "capture_worker"]
    _table("cameras", columns, [[row[c] for c in columns] for row in result])


def _camera_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--set",
        "settings",
        multiple=True,
        metavar="KEY=VALUE",
        help="any camera key, VALUE in TOML (e.g. loop=true, thresholds.min_brightness=20)",
    )(command)
    command = click.option("--resize", help="WIDTHxHEIGHT at capture")(command)
    return click.option("--fps", type=float, help="cap on delivered frames per second")(command)


def _changes(fps: float | None, resize: str | None, settings: tuple[str, ...]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if fps is not None:
        changes["fps"] = fps
    if resize is not None:
        changes["resize"] = resize
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            click.echo(f"zstream: --set {setting!r}: expected KEY=VALUE", err=True)
            sys.exit(EXIT_INVALID)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word: a string
        section, dot, name = key.partition(".")
        if dot:
            changes.setdefault(section, {})[name] = value
        else:
            changes[key] = value
    return changes


@cameras.command("add")
@_endpoint_options
@click.argument("camera_id")
@click.argument("url")
@_camera_options
def cameras_add(
    topology_file: str,
    endpoint: str | None,
    camera_id: str,
    url: str,
    fps: float | None,
    resize: str | None,
    settings: tuple[str, ...],
) -> None:
    """Start streaming camera CAMERA_ID from URL; the other cameras are not touched."""
    camera = {"id": camera_id, "url": url, **_changes(fps, resize, settings)}
    result = _call(topology_file, endpoint, "camera_add", camera=camera)
    click.echo(f"added {result['id']} (capture worker {result['capture_worker']})")


@cameras.command("update")
@_endpoint_options
@click.argument("camera_id")
@click.option("--url", help="a new URL")
@_camera_options
def cameras_update(
    topology_file: str,
    endpoint: str | None,
    camera_id: str,
    url: str | None,
    fps: float | None,
    resize: str | None,
    settings: tuple[str, ...],
) -> None:
    """Change a camera's settings; it restarts with them, the others are not touched."""
    changes = _changes(fps, resize, settings)
    if url is not None:
        changes["url"] = url
    if not changes:
        click.echo("zstream: nothing to change (give --url, --fps, --resize or --set)", err=True)
        sys.exit(EXIT_INVALID)
    result = _call(topology_file, endpoint, "camera_update", id=camera_id, changes=changes)
    click.echo(f"updated {result['id']}: {', '.join(result['changed'])}")


@cameras.command("rm")
@_endpoint_options
@click.argument("camera_id")
def cameras_rm(topology_file: str, endpoint: str | None, camera_id: str) -> None:
    """Stop camera CAMERA_ID and release its ring; the other cameras are not touched."""
    result = _call(topology_file, endpoint, "camera_rm", id=camera_id)
    click.echo(f"removed {result['id']}")


if __name__ == "__main__":
    main()

"""`zstream top`: a live terminal view of the pipeline's cameras and stages.

`render` turns one status (`zstream.status.Status`, what RUN_DIR/status.json holds) into a
rich renderable that never exceeds the given width and height: a header line, a stage line, then
the cameras, most troubled first, and "… and N more (M healthy)" for those that do not fit.
`run_top` redraws it every second with rich's Live until Ctrl-C.

The status is read as zstream.status types it: `zstream top` checks each answer of the control
endpoint once, where it arrives (`read_status`), and one of another shape is shown as that
fetch's error above the last good status; before the first, there is none (None).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from zstream.core.vocabulary import STARTING, CameraState, Metric, WorkerState
from zstream.errors import ZStreamError
from zstream.status import CameraStatus, Status, WorkerStatus

LOW_PASS_RATE = 0.9  # a streaming camera passing fewer frames than this through QC is in trouble
STAGE_ORDER = ("capture", "validate", "batch")

# Trouble rank of a camera, most troubled first; then by id.
RANK_FAILED = 0
RANK_RECONNECTING = 1  # reconnecting or stalled
RANK_CONNECTING = 2  # connecting, starting, or a state this view does not know
RANK_DEGRADED = 3  # streaming, with drops or a low QC pass rate
RANK_DONE = 4  # ended or stopped
RANK_HEALTHY = 5

STATE_RANK = {
    CameraState.FAILED.value: RANK_FAILED,
    CameraState.RECONNECTING.value: RANK_RECONNECTING,
    CameraState.STALLED.value: RANK_RECONNECTING,
    CameraState.CONNECTING.value: RANK_CONNECTING,
    STARTING: RANK_CONNECTING,
    CameraState.ENDED.value: RANK_DONE,
    CameraState.STOPPED.value: RANK_DONE,
}
RANK_STYLE = {
    RANK_FAILED: "bold red",
    RANK_RECONNECTING: "yellow",
    RANK_CONNECTING: "cyan",
    RANK_DEGRADED: "green",
    RANK_DONE: "dim",
    RANK_HEALTHY: "green",
}
WORKER_STYLE = {
    WorkerState.RUNNING.value: "green",
    WorkerState.BACKOFF.value: "bold red",
    WorkerState.STOPPED.value: "dim",
}


@dataclass(frozen=True)
class CameraRow:
    id: str
    state: str
    detail: str
    rank: int
    fps_in: float | None
    fps_out: float | None
    age_s: float | None
    drops: int
    pass_rate: float | None
    reconnects: int


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    width: int
    justify: JustifyMethod = "right"


# Fixed-width columns in display order (camera and detail take what is left), and the order in
# which they are given up on a narrow terminal.
FIXED_COLUMNS = (
    Column("state", "state", 12, "left"),
    Column("fps_in", "in/s", 5),
    Column("fps_out", "out/s", 5),
    Column("age", "age", 5),
    Column("drops", "drops", 5),
    Column("qc", "QC%", 4),
    Column(Metric.RECONNECTS, "recon", 5),
)
DROP_FIRST = (Metric.RECONNECTS, "age", "fps_out", "qc", "drops", "fps_in", "state")
CAMERA_MIN, CAMERA_MAX, DETAIL_MIN = 6, 24, 8


def render(status: Status | None, width: int, height: int, *, error: str | None = None) -> RenderableType:
    """The view of one status, at most `width` cells wide and `height` lines high.

    `error`: why the latest status could not be fetched (shown in red under the header; `status`
    is then the last one that was, or None)."""
    width, height = max(1, width), max(1, height)
    cameras = [] if status is None else _camera_rows(status["cameras"])
    workers = {} if status is None else status["workers"]

    lines: list[Text] = [_header(status, cameras, workers, width)]
    if error:
        lines.append(Text(f"error: {error}", style="bold red"))
    if not cameras:
        none = (
            "pipeline starting: no camera has reported yet" if status is None else "no cameras in the status"
        )
        lines.append(Text(none, style="cyan"))
    lines.append(_stage_line(status, workers))
    down = _down_workers(workers)
    if down is not None:
        lines.append(down)
    lines = [_fit(line, width) for line in lines][:height]

    rows_left = height - len(lines) - 1  # the table's header line
    if not cameras or rows_left < 1:
        return Group(*lines)
    shown = cameras if len(cameras) <= rows_left else cameras[: rows_left - 1]
    parts: list[RenderableType] = [*lines]
    if shown:
        parts.append(_camera_table(shown, width))
    hidden = cameras[len(shown) :]
    if hidden:
        healthy = sum(1 for row in hidden if row.rank == RANK_HEALTHY)
        more = Text(f"… and {len(hidden)} more ({healthy} healthy)", style="dim")
        if healthy < len(hidden):
            more.append(f", {len(hidden) - healthy} not healthy", style="yellow")
        parts.append(_fit(more, width))
    return Group(*parts)


def run_top(
    fetch: Callable[[], Status],
    console: Console,
    refresh_s: float = 1.0,
    iterations: int | None = None,
) -> int:
    """Redraw the view every `refresh_s` until Ctrl-C (or `iterations` redraws); returns 0.

    `fetch` returns the status or raises ZStreamError: the error is shown above the last
    status fetched, and fetching goes on."""
    status: Status | None = None
    fetched_at: float | None = None
    drawn = 0
    with Live(
        console=console,
        auto_refresh=False,
        screen=console.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:
        try:
            while iterations is None or drawn < iterations:
                error = None
                try:
                    status = fetch()
                    fetched_at = time.monotonic()
                except ZStreamError as exc:
                    error = str(exc) or type(exc).__name__
                    if fetched_at is not None:
                        error += f" (showing the status of {_duration(time.monotonic() - fetched_at)} ago)"
                    error += "; retrying"
                live.update(render(status, console.width, console.height, error=error), refresh=True)
                drawn += 1
                if iterations is None or drawn < iterations:
                    time.sleep(refresh_s)
        except KeyboardInterrupt:
            pass
    return 0


# --- the status as rows -------------------------------------------------------------------------


def _camera_rows(cameras: dict[str, CameraStatus]) -> list[CameraRow]:
    rows = []
    for camera_id, info in cameras.items():
        state = info["state"]
        drops = sum(info["dropped"].values())
        pass_rate = info["quality"]["pass_rate"]
        rank = STATE_RANK.get(state, RANK_CONNECTING)
        if state == CameraState.STREAMING.value:
            degraded = drops > 0 or (pass_rate is not None and pass_rate < LOW_PASS_RATE)
            rank = RANK_DEGRADED if degraded else RANK_HEALTHY
        rows.append(
            CameraRow(
                id=camera_id,
                state=state,
                detail=info["detail"],
                rank=rank,
                fps_in=info["fps_in"],
                fps_out=info["fps_out"],
                age_s=info["last_frame_age_s"],
                drops=drops,
                pass_rate=pass_rate,
                reconnects=info["reconnects"],
            )
        )
    return sorted(rows, key=lambda row: (row.rank, row.id))


def _stage_of(name: str) -> str:
    return name.rsplit("-", 1)[0] if "-" in name else name


def _stages(names: Iterable[str]) -> list[str]:
    found = {_stage_of(name) for name in names}
    return [s for s in STAGE_ORDER if s in found] + sorted(found - set(STAGE_ORDER))


# --- formatting -------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for limit, scale, unit in ((60, 1, "s"), (3600, 60, "m"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{seconds:.1f}s" if seconds < 10 else f"{int(seconds // scale)}{unit}"
    return f"{int(seconds // 86400)}d"


def _fps(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 1000 else _compact(round(value))


def _compact(n: int) -> str:
    """An integer in at most 5 cells: 12345 -> 12.3k."""
    if n < 100_000:
        return str(n) if n < 10_000 else f"{n / 1000:.1f}k"
    for unit, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if n < scale * 1000:
            return f"{n / scale:.0f}{unit}"
    return f"{n / 1e12:.0f}T"


def _pass_rate(rate: float | None) -> str:
    # floor: 99.6% passed is not shown as 100%
    return "-" if rate is None else f"{math.floor(rate * 100)}%"


def _fit(text: Text, width: int) -> Text:
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.truncate(width, overflow="ellipsis")
    return text


# --- the parts of the view --------------------------------------------------------------------


def _header(
    status: Status | None, cameras: list[CameraRow], workers: dict[str, WorkerStatus], width: int
) -> Text:
    streaming = sum(1 for row in cameras if row.state == CameraState.STREAMING.value)
    fps_in = sum(row.fps_in or 0.0 for row in cameras)
    fps_out = sum(row.fps_out or 0.0 for row in cameras)
    drops = 0 if status is None else sum(status["dropped"].values())
    restarts = sum(w["restarts"] for w in workers.values())
    up = sum(1 for w in workers.values() if w["state"] == WorkerState.RUNNING.value)
    uptime = _duration(None if status is None else status["uptime_s"])

    def fps(value: float) -> str:
        return f"{value:.1f}" if value < 100 else _compact(round(value))

    cams_style = "green" if cameras and streaming == len(cameras) else "yellow"
    segments = [
        # (long form, short form, style)
        (f"up {uptime}", uptime, "bold"),
        (f"streaming {streaming}/{len(cameras)}", f"cams {streaming}/{len(cameras)}", cams_style),
        (f"fps in {fps(fps_in)} out {fps(fps_out)}", f"fps {fps(fps_in)}/{fps(fps_out)}", ""),
        (f"drops {_compact(drops)}", f"drops {_compact(drops)}", "yellow" if drops else ""),
        (f"restarts {restarts}", f"restarts {restarts}", "red" if restarts else ""),
        (f"workers {up}/{len(workers)}", f"workers {up}/{len(workers)}", "red" if up < len(workers) else ""),
    ]
    for form, separator in ((0, "  "), (1, " │ "), (1, " ")):
        text = Text()
        for i, segment in enumerate(segments):
            if i:
                text.append(separator, style="dim")
            text.append(segment[form], style=segment[2])
        if text.cell_len <= width:
            break
    return text


def _stage_line(status: Status | None, workers: dict[str, WorkerStatus]) -> Text:
    dropped_by_stage: dict[str, int] = {}
    for reason, n in ({} if status is None else status["dropped"]).items():
        stage = reason.split(":", 1)[0]
        dropped_by_stage[stage] = dropped_by_stage.get(stage, 0) + n
    text = Text()
    for stage in _stages(workers):
        states = [w["state"] for name, w in workers.items() if _stage_of(name) == stage]
        up = states.count(WorkerState.RUNNING.value)
        if text:
            text.append(" · ", style="dim")
        text.append(stage + " ")
        text.append(f"{up}/{len(states)}", style="green" if up == len(states) else "bold red")
        if dropped_by_stage.get(stage):
            text.append(f" drops {_compact(dropped_by_stage[stage])}", style="yellow")
    if status is not None:
        if text:
            text.append(" · ", style="dim")
        text.append(f"batches {_compact(status['batches_written'])}")
    return text if text else Text("no workers yet", style="dim")


def _down_workers(workers: dict[str, WorkerStatus]) -> Text | None:
    down = [(name, w) for name, w in workers.items() if w["state"] != WorkerState.RUNNING.value]
    if not down:
        return None
    text = Text("workers not running: ", style="red")
    for i, (name, worker) in enumerate(sorted(down)):
        if i:
            text.append(" · ", style="dim")
        state = worker["state"]
        text.append(f"{name} ")
        text.append(state, style=WORKER_STYLE.get(state, "red"))
        restarts = worker["restarts"]
        if restarts:
            text.append(f" ({restarts} restarts)")
    return text


def _columns(cameras: list[CameraRow], width: int) -> tuple[list[Column], int, int]:
    """The fixed columns that fit, the camera column's width and the detail column's (0: none)."""
    fixed = list(FIXED_COLUMNS)
    longest_id = max(len(row.id) for row in cameras)
    camera = min(max(longest_id, CAMERA_MIN), CAMERA_MAX)
    # Every column but the last is followed by one space.
    for key in DROP_FIRST:
        if sum(c.width + 1 for c in fixed) + CAMERA_MIN <= width:
            break
        fixed = [c for c in fixed if c.key != key]
    left = width - sum(c.width + 1 for c in fixed)
    any_detail = any(row.detail for row in cameras)
    if any_detail and left - min(camera, left) - 1 < DETAIL_MIN:
        camera = max(CAMERA_MIN, left - DETAIL_MIN - 1)
    camera = min(camera, max(1, left))
    detail = left - camera - 1 if any_detail and left - camera - 1 >= DETAIL_MIN else 0
    return fixed, camera, detail


def _camera_table(cameras: list[CameraRow], width: int) -> Table:
    fixed, camera_width, detail_width = _columns(cameras, width)
    table = Table(
        box=None,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
        expand=False,
        header_style="bold",
        collapse_padding=False,
    )
    options: dict[str, Any] = {"no_wrap": True, "overflow": "ellipsis"}
    table.add_column("camera", width=camera_width, min_width=camera_width, max_width=camera_width, **options)
    for column in fixed:
        table.add_column(
            column.header,
            width=column.width,
            min_width=column.width,
            max_width=column.width,
            justify=column.justify,
            **options,
        )
    if detail_width:
        table.add_column(
            "detail", width=detail_width, min_width=detail_width, max_width=detail_width, **options
        )

    for row in cameras:
        style = RANK_STYLE[row.rank]
        pass_bad = row.pass_rate is not None and row.pass_rate < LOW_PASS_RATE
        cells = {
            "state": Text(row.state, style=style),
            "fps_in": Text(_fps(row.fps_in)),
            "fps_out": Text(_fps(row.fps_out)),
            "age": Text(_age(row.age_s), style="yellow" if (row.age_s or 0) >= 5 else ""),
            "drops": Text(_compact(row.drops), style="yellow" if row.drops else "dim"),
            "qc": Text(_pass_rate(row.pass_rate), style="yellow" if pass_bad else ""),
            Metric.RECONNECTS: Text(_compact(row.reconnects), style="yellow" if row.reconnects else "dim"),
        }
        values = [Text(row.id, style="bold" if row.rank < RANK_DEGRADED else "")]
        values += [cells[c.key] for c in fixed]
        if detail_width:
            values.append(Text(row.detail, style="dim"))
        table.add_row(*values)
    return table

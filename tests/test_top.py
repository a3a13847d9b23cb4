"""`zstream top`: the view fits 80x24 with 100 cameras, troubled cameras first, nothing hidden silently."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from zstream.errors import ZStreamError
from zstream.status import StatusError, read_status
from zstream.top import render, run_top

# Troubled cameras, in the order the view must list them: failed, then reconnecting/stalled, then
# connecting, then streaming with drops or a low QC pass rate, then ended; each group by id.
TROUBLED = [
    ("cam-007", "failed", {"detail": "401 Unauthorized"}),
    ("cam-050", "failed", {"detail": "no such stream"}),
    ("cam-003", "stalled", {}),
    ("cam-020", "reconnecting", {"detail": "attempt 3, next in 4.0s", "reconnects": 3}),
    ("cam-090", "reconnecting", {"reconnects": 1}),
    ("cam-011", "connecting", {}),
    ("cam-060", "starting", {}),
    ("cam-001", "streaming", {"dropped": {"capture:queue_full": 5}}),
    ("cam-030", "streaming", {"dropped": {"batch:overwritten": 7}}),
    ("cam-040", "streaming", {"quality": {"pass_rate": 0.5, "top_failures": {"blurred": 50}}}),
    ("cam-099", "ended", {}),
]


def camera(state: str, **overrides: Any) -> dict[str, Any]:
    streaming = state == "streaming"
    info: dict[str, Any] = {
        "state": state,
        "detail": "",
        "received": 100,
        "captured": 100,
        "validated": 100,
        "written": 100,
        "failed": {},
        "skipped": {},
        "corrupt_packets": 0,
        "reconnects": 0,
        "reconnected": 0,
        "stalls": 0,
        "quality": {"pass_rate": 1.0, "top_failures": {}},
        "fps_in": 10.0 if streaming else None,
        "fps_out": 9.5 if streaming else None,
        "last_frame_age_s": 0.1 if streaming else 42.0,
        "dropped": {},
        "committed": 100,
        "in_flight": 0,
        "unaccounted": 0,
    }
    info.update(overrides)
    return info


def fleet() -> dict[str, Any]:
    """100 cameras: the 11 troubled ones above and 89 healthy, with one worker in back-off."""
    troubled = {camera_id: camera(state, **extra) for camera_id, state, extra in TROUBLED}
    cameras = {f"cam-{i:03d}": troubled.get(f"cam-{i:03d}") or camera("streaming") for i in range(100)}
    workers = {
        name: {"state": "running", "pid": 1000 + i, "restarts": 0, "cameras": 50}
        for i, name in enumerate(["batch-0", "validate-0", "validate-1", "capture-0", "capture-1"])
    }
    workers["validate-1"] = {"state": "backoff", "pid": None, "restarts": 3, "cameras": 50}
    workers["capture-0"]["restarts"] = 1
    return {
        "uptime_s": 3723.4,
        "shard": None,
        "cameras": cameras,
        "workers": workers,
        "dropped": {"capture:queue_full": 5, "batch:overwritten": 7},
        "batches_written": 1234,
        "endpoints": {"control": "tcp://127.0.0.1:5590"},
    }


def draw(status: dict[str, Any] | None, width: int = 80, height: int = 24, **kwargs: Any) -> list[str]:
    console = Console(width=width, height=height, record=True, file=io.StringIO(), color_system="truecolor")
    console.print(render(None if status is None else read_status(status), width, height, **kwargs))
    return console.export_text().rstrip("\n").split("\n")


def assert_fits(lines: list[str], width: int, height: int) -> None:
    assert len(lines) <= height, "\n".join(lines)
    assert max(cell_len(line) for line in lines) <= width, "\n".join(lines)


def camera_rows(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("camera "))
    return [line.split()[0] for line in lines[start + 1 :] if line.startswith("cam-")]


def test_100_cameras_fit_80x24_troubled_first_and_the_rest_counted() -> None:
    lines = draw(fleet())
    assert_fits(lines, 80, 24)
    assert len(lines) == 24  # the screen is used, not wasted

    rows = camera_rows(lines)
    assert rows[: len(TROUBLED)] == [camera_id for camera_id, _, _ in TROUBLED]
    healthy_ids = [f"cam-{i:03d}" for i in range(100) if f"cam-{i:03d}" not in {t[0] for t in TROUBLED}]
    assert rows[len(TROUBLED) :] == healthy_ids[: len(rows) - len(TROUBLED)]  # then healthy, by id

    assert lines[-1] == f"… and {100 - len(rows)} more ({100 - len(rows)} healthy)"

    header = lines[0]
    assert re.search(r"\b(up )?1h02m\b", header), header
    assert re.search(r"(streaming|cams) 92/100\b", header), header  # 3 with trouble + 89 healthy
    assert re.search(r"fps (in 920 out 874|920/874)\b", header), header  # 92 x 10.0 in, x 9.5 out
    assert re.search(r"drops 12\b", header), header
    assert re.search(r"restarts 4\b", header), header
    assert re.search(r"workers 4/5\b", header), header

    text = "\n".join(lines)
    assert "capture 2/2" in text and "validate 1/2" in text and "batch 1/1" in text
    assert "validate-1 backoff (3 restarts)" in text
    failed_row = next(line for line in lines if line.startswith("cam-007 "))
    assert "failed" in failed_row and "401 Unauthorized" in failed_row
    qc_row = next(line for line in lines if line.startswith("cam-040 "))
    assert " 50%" in qc_row


def test_hidden_cameras_that_are_not_healthy_are_said_so() -> None:
    status = fleet()
    for i in range(40):
        status["cameras"][f"cam-{i:03d}"] = camera("failed", detail="401 Unauthorized")
    # Not healthy: those 40, and cam-040, -050, -060, -090, -099 of TROUBLED; 41 failed with cam-050.
    lines = draw(status)
    assert_fits(lines, 80, 24)
    rows = camera_rows(lines)
    assert rows == [f"cam-{i:03d}" for i in range(len(rows))]  # failed first: 19 of the 41 fit
    hidden = 100 - len(rows)
    assert lines[-1] == f"… and {hidden} more (55 healthy), {45 - len(rows)} not healthy"


@pytest.mark.parametrize("width", [10, 20, 40, 60, 80, 100, 160, 250])
@pytest.mark.parametrize("height", [1, 2, 3, 4, 5, 10, 24, 60, 200])
def test_never_exceeds_the_terminal(width: int, height: int) -> None:
    status = fleet()
    status["cameras"]["a-camera-id-much-longer-than-any-column-could-hold"] = camera(
        "reconnecting", detail="connection refused by 10.0.0.1:554 " * 5
    )
    lines = draw(status, width, height, error="control endpoint did not answer in 2 s " * 4)
    assert_fits(lines, width, height)
    if height >= 200 and width >= 40:  # everything fits: no "more" line
        assert len(camera_rows(lines)) + 1 == 101  # the long id does not start with cam-
        assert not any(line.startswith("… and") for line in lines)


def test_a_pipeline_starting_renders_and_says_so() -> None:
    no_cameras = {**fleet(), "uptime_s": 0.2, "cameras": {}, "workers": {}}
    for status in (None, no_cameras):  # None: no status fetched yet
        lines = draw(status)
        assert_fits(lines, 80, 24)
        text = "\n".join(lines)
        assert ("pipeline starting" in text) == (status is None)
        assert "no camera" in text

    starting = {**no_cameras, "cameras": {"cam-a": camera("starting"), "cam-b": camera("connecting")}}
    lines = draw(starting)
    assert camera_rows(lines) == ["cam-a", "cam-b"]
    assert "starting" in next(line for line in lines if line.startswith("cam-a "))  # no state yet


def test_a_malformed_status_is_refused_where_it_arrives_and_shown_as_the_error() -> None:
    status = fleet()
    status["uptime_s"] = "soon"
    status["cameras"]["cam-001"]["fps_in"] = "fast"
    status["workers"]["batch-0"] = "up"
    with pytest.raises(StatusError) as refused:
        read_status(status)
    for path in ("uptime_s", "cameras.cam-001.fps_in", "workers.batch-0"):
        assert f"{path}: " in str(refused.value)
    assert read_status({**fleet(), "a_key_of_a_later_zstream": 1}) == read_status(fleet())

    console = Console(width=80, height=24, record=True, file=io.StringIO())
    assert run_top(lambda: read_status(status), console, refresh_s=0, iterations=1) == 0
    text = console.export_text()
    assert "error: a malformed status: uptime_s" in text and "pipeline starting" in text


def test_a_failing_fetch_shows_the_error_and_run_top_returns_0() -> None:
    def fetch() -> dict[str, Any]:
        raise ZStreamError("control endpoint /tmp/zstream/control.sock: connection refused")

    console = Console(width=80, height=24, record=True, file=io.StringIO())
    assert run_top(fetch, console, refresh_s=0, iterations=2) == 0
    text = console.export_text()
    assert "error: control endpoint /tmp/zstream/control.sock: connection refused" in text
    assert "pipeline starting" in text


def test_an_error_after_a_status_keeps_the_last_status_on_screen() -> None:
    answers: list[Any] = [read_status(fleet()), ZStreamError("timed out"), KeyboardInterrupt()]
    calls = 0

    def fetch() -> dict[str, Any]:
        nonlocal calls
        answer = answers[min(calls, len(answers) - 1)]
        calls += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer

    console = Console(width=80, height=24, record=True, file=io.StringIO())
    assert run_top(fetch, console, refresh_s=0, iterations=2) == 0
    lines = console.export_text().rstrip("\n").split("\n")
    assert_fits(lines, 80, 24)
    assert "error: timed out (showing the status of" in lines[1]
    assert camera_rows(lines)[:2] == ["cam-007", "cam-050"]

    calls = 0  # Ctrl-C (here: on the third fetch) ends it as cleanly as the iterations do
    assert run_top(fetch, Console(file=io.StringIO()), refresh_s=0) == 0
    assert calls == 3

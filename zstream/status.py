"""The pipeline's status, typed once: what `zstream up` writes to RUN_DIR/status.json every stats
interval, and what the control endpoint's `status` command answers (with `system` added).

`Supervisor.status` builds it, and everything in the supervisor's process (/metrics, `health`,
the final summary) reads it as typed here, without checking it again. Where a status comes
from another process (`zstream status` and `zstream top` ask the control endpoint for it),
`read_status` checks it once, where it arrives, and refuses one of another shape with
StatusError, every problem named by its key path.

TypedDicts rather than dataclasses: a status is a JSON document (the file, the control reply),
and these say what each key holds without a conversion on the way out.
"""

from __future__ import annotations

import functools
from typing import (
    NotRequired,  # pydantic reads typing's TypedDict from 3.12 only
    TypeVar,
)

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from zstream.errors import ZStreamError

T = TypeVar("T")


class StatusError(ZStreamError):
    """A status (from the control endpoint) is not of the shape this zstream writes."""


class Quality(TypedDict):
    pass_rate: float | None  # None: nothing validated yet
    top_failures: dict[str, int]  # the most frequent failure reasons


class Rates(TypedDict):
    fps_in: float | None  # None: not measured yet (stats.CameraRates)
    fps_out: float | None
    last_frame_age_s: float | None


class CameraStatus(Rates):
    """One camera: its state, counters (named as core.vocabulary.Metric names them) and rates."""

    state: str  # core.vocabulary.CameraState, or STARTING before its first report
    detail: str
    received: int
    captured: int
    validated: int
    written: int
    failed: dict[str, int]  # by reason
    skipped: dict[str, int]
    corrupt_packets: int
    reconnects: int  # attempts
    reconnected: int  # successful ones
    stalls: int
    quality: Quality
    dropped: dict[str, int]  # by "stage:reason"
    committed: int  # frames its ring gave a seq, ever (written into it or passed over)
    in_flight: int
    unaccounted: int


class WorkerStatus(TypedDict):
    state: str  # core.vocabulary.WorkerState
    pid: int | None
    restarts: int
    cameras: int
    queued_frames: NotRequired[int]  # validation and batch workers


class Status(TypedDict):
    """What status.json holds."""

    uptime_s: float
    shard: str | None  # "I/N", None when unsharded
    cameras: dict[str, CameraStatus]
    workers: dict[str, WorkerStatus]
    dropped: dict[str, int]  # every drop, by "stage:reason"
    batches_written: int
    endpoints: dict[str, str]


class ProcessCost(TypedDict):
    name: str
    pid: int
    cpu_percent: float | None  # None on a process's first sample
    rss_bytes: int


class SharedMemory(TypedDict):
    rings_bytes: int
    shm_total_bytes: int
    shm_free_bytes: int


class SystemStatus(TypedDict):
    processes: list[ProcessCost]
    shared_memory: SharedMemory


class ControlStatus(Status):
    """The control endpoint's answer to `status`: status.json's, and what the machine spends."""

    system: SystemStatus


def read_status(value: object) -> Status:
    """`value` (decoded JSON from status.json, or msgpack from another process) as a Status;
    StatusError if it is not one. Keys this zstream does not know are left out."""
    return _check(_adapter(Status), value)


def read_control_status(value: object) -> ControlStatus:
    """The control endpoint's answer to `status`, checked as read_status checks a Status."""
    return _check(_adapter(ControlStatus), value)


@functools.cache
def _adapter(kind: type[T]) -> TypeAdapter[T]:
    return TypeAdapter(kind)


def _check(adapter: TypeAdapter[T], value: object) -> T:
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or '(the status)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise StatusError("a malformed status: " + "; ".join(problems)) from exc

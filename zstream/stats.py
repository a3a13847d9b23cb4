"""Counters: how every frame's fate becomes visible.

Each worker counts what happened to frames (captured, validated, written, dropped with a
reason) and reports its cumulative counters to the supervisor, which adds them up across
processes and across restarts. The key of a counter is (metric, camera, reason), with ""
where a label does not apply; drops use metric "dropped" and reason "stage:why".
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from zstream.core.vocabulary import Metric, SkipReason
from zstream.core.wire import WorkerStats, encode
from zstream.ledger import CounterKey, Ledger, ledger_path
from zstream.status import Quality, Rates

if TYPE_CHECKING:
    from zstream.topology import Topology


class Counters:
    """Thread-safe cumulative counts (capture workers count from one thread per camera), kept in
    a Ledger too when given one (every worker process has one; tools and tests need not)."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        self._lock = threading.Lock()
        self._counts: dict[CounterKey, int] = defaultdict(int)
        self.ledger = ledger

    @classmethod
    def for_worker(cls, run_dir: Path, worker: str) -> Counters:
        return cls(Ledger.create(ledger_path(run_dir, worker, os.getpid())))

    def add(self, metric: str, camera: str = "", reason: str = "", n: int = 1) -> None:
        key = (metric, camera, reason)
        with self._lock:
            self._counts[key] += n
            if self.ledger is not None and not self.ledger.store(key, self._counts[key]):
                self.ledger = None  # could not grow (a full disk): reports only, as before ledgers

    def drop(self, stage: str, reason: str, camera: str = "", n: int = 1) -> None:
        self.add(Metric.DROPPED, camera, f"{stage}:{reason}", n)

    def get(self, metric: str, camera: str = "", reason: str = "") -> int:
        with self._lock:
            return self._counts.get((metric, camera, reason), 0)

    def snapshot(self) -> dict[CounterKey, int]:
        with self._lock:
            return dict(self._counts)


class StatsReporter:
    """Sends a worker's counters (and camera states) to the supervisor every interval.

    PUSH with a small high-water mark and no blocking: a supervisor that is busy or gone
    must never stall a worker; a skipped report is superseded by the next cumulative one.
    """

    def __init__(
        self, context: zmq.Context, endpoint: str, worker: str, counters: Counters, interval_s: float
    ) -> None:
        self.worker = worker
        self.counters = counters
        self.interval_s = interval_s
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, 4)
        self._socket.setsockopt(zmq.LINGER, 500)
        self._socket.connect(endpoint)
        self._next = 0.0

    @classmethod
    def for_worker(
        cls, context: zmq.Context, topology: Topology, worker: str, counters: Counters
    ) -> StatsReporter:
        return cls(
            context, topology.endpoint("stats"), worker, counters, topology.supervisor.stats_interval_s
        )

    def maybe_send(self, states: dict[str, tuple[str, str]] | None = None) -> None:
        now = time.monotonic()
        if now >= self._next:
            self.send(states)
            self._next = now + self.interval_s

    def send(self, states: dict[str, tuple[str, str]] | None = None) -> None:
        report = WorkerStats(self.worker, os.getpid(), self.counters.snapshot(), states or {})
        with contextlib.suppress(zmq.Again):  # superseded by the next cumulative report
            self._socket.send(encode(report), zmq.NOBLOCK)

    def close(self) -> None:
        self._socket.close()


@dataclass
class StatsBoard:
    """The supervisor's view: the last report of every worker process that ever ran.

    Reports are cumulative per process, so the totals are the sum of each process's last
    report, plus what the supervisor counts itself. Keeping ended processes' reports (a few
    per restart) is what makes the totals survive restarts. Once a process is reaped, its
    settled counts (from its ledger, see zstream.settle) replace its reports for good: a final
    report that arrives later is older than they are.
    """

    reports: dict[tuple[str, int], WorkerStats] = field(default_factory=dict)
    own: dict[CounterKey, int] = field(default_factory=lambda: defaultdict(int))
    states: dict[str, tuple[str, str]] = field(default_factory=dict)
    settled: set[tuple[str, int]] = field(default_factory=set)

    def update(self, report: WorkerStats) -> None:
        self.states.update(report.states)
        if (report.worker, report.pid) not in self.settled:
            self.reports[(report.worker, report.pid)] = report

    def settle(self, worker: str, pid: int, counts: dict[CounterKey, int]) -> None:
        """A reaped process's final counts; never less than what it reported."""
        reported = self.reports.get((worker, pid))
        final = dict(reported.counters) if reported else {}
        for key, value in counts.items():
            final[key] = max(final.get(key, 0), value)
        self.reports[(worker, pid)] = WorkerStats(worker, pid, final, {})
        self.settled.add((worker, pid))

    def count(self, metric: str, camera: str = "", reason: str = "", n: int = 1) -> None:
        self.own[(metric, camera, reason)] += n

    def totals(self) -> dict[CounterKey, int]:
        totals: dict[CounterKey, int] = defaultdict(int, self.own)
        for report in self.reports.values():
            for key, value in report.counters.items():
                totals[key] += value
        return dict(totals)


# Upper bounds (ms) of the capture-to-Redis latency histogram; counts per bucket are counters
# ("latency_ms", "", bound), so they add up across processes and restarts like everything else.
# Fine up to 500 ms, where batching and queueing live; 220 is the default batch timeout + 20 ms.
LATENCY_BUCKETS_MS = (
    *(5, 10, 20, 30, 50, 75, 100, 150, 200, 220, 250, 300, 400, 500),
    *(750, 1000, 2000, 5000, 10000),
)


def latency_bucket(latency_s: float) -> str:
    """The histogram bucket of one latency, as its upper bound in ms ("inf" beyond the last)."""
    ms = latency_s * 1000
    return next((str(bound) for bound in LATENCY_BUCKETS_MS if ms <= bound), "inf")


def latency_quantile(counts: dict[CounterKey, int], q: float) -> str:
    """Upper bound of the bucket holding quantile q, as text ("≤ 200 ms"), or "n/a"."""
    buckets = by_reason(counts, Metric.LATENCY_MS)
    seen, wanted = 0, q * sum(buckets.values())
    for bound in [*map(str, LATENCY_BUCKETS_MS), "inf"]:
        seen += buckets.get(bound, 0)
        if seen and seen >= wanted:
            return f"<= {bound} ms" if bound != "inf" else f"> {LATENCY_BUCKETS_MS[-1]} ms"
    return "n/a"


def by_camera(counts: dict[CounterKey, int]) -> dict[str, dict[CounterKey, int]]:
    """The counters split by camera in one pass, so that per-camera views scan only their own
    entries (scanning all of them for every camera grows with the square of the fleet)."""
    split: dict[str, dict[CounterKey, int]] = defaultdict(dict)
    for key, value in counts.items():
        split[key[1]][key] = value
    return split


def total(counts: dict[CounterKey, int], metric: str, camera: str | None = None) -> int:
    """Sum of a metric over reasons (and cameras, unless one is named)."""
    return sum(n for (m, c, _), n in counts.items() if m == metric and (camera is None or c == camera))


def by_reason(counts: dict[CounterKey, int], metric: str, camera: str | None = None) -> dict[str, int]:
    reasons: dict[str, int] = defaultdict(int)
    for (m, c, r), n in counts.items():
        if m == metric and (camera is None or c == camera):
            reasons[r] += n
    return dict(reasons)


# Drops before a frame is in its ring: the frame was never captured, so no later count settles it.
BEFORE_CAPTURE = frozenset({"capture:too_large", "capture:ring_full", "capture:stopping"})


def books(counts: dict[CounterKey, int], committed: int, camera: str) -> dict[str, int]:
    """Where every frame a camera captured went; the parts add up to `captured`.

    `committed` is the ring's own count of the frames it gave a seq (written into a slot, or
    passed over for the output rate: Ring.pass_over): it lives in shared memory, so it survives
    any crash. Every such frame was written (to the batch stream, or to the QC stream when it
    failed), left out by the output rate (skipped), or dropped after capture with a reason; the
    rest are `lost`: in flight while the pipeline runs, lost in a crash after a drain.
    """
    parts = {
        Metric.CAPTURED: committed,
        Metric.WRITTEN: total(counts, Metric.WRITTEN, camera),
        "qc": total(counts, Metric.QC_WRITTEN, camera),
        Metric.SKIPPED: by_reason(counts, Metric.SKIPPED, camera).get(SkipReason.OUTPUT_RATE, 0),
        Metric.DROPPED: sum(
            n
            for reason, n in by_reason(counts, Metric.DROPPED, camera).items()
            if reason not in BEFORE_CAPTURE
            and not reason.startswith("tap:")  # the tap's subscribers missed it; Redis did not
            and not reason.startswith("ingest:")  # refused before the ring: never committed
        ),
    }
    parts["lost"] = (
        committed - parts[Metric.WRITTEN] - parts["qc"] - parts[Metric.SKIPPED] - parts[Metric.DROPPED]
    )
    return parts


def quality_view(counts: dict[CounterKey, int], camera: str, top: int = 3) -> Quality:
    """A camera's pass rate and its most frequent failure reasons, as operators ask for them."""
    validated = total(counts, Metric.VALIDATED, camera)
    rejected = total(counts, Metric.REJECTED, camera)
    reasons = sorted(by_reason(counts, Metric.FAILED, camera).items(), key=lambda item: (-item[1], item[0]))
    return {
        "pass_rate": None if not validated else round((validated - rejected) / validated, 4),
        "top_failures": dict(reasons[:top]),
    }


class CameraRates:
    """Per-camera frame rates and last-frame age, from the counter totals the supervisor
    already has (so no worker reports anything more): rates over a sliding window, the age
    to within one stats interval.

    Frames leave for Redis in batches, so `written` moves in steps, and a window cut between
    steps counts a batch more or less than its span holds (a 10 fps camera read as 8). fps_out
    is therefore written frames per second of the camera time they cover (`written_span_us`,
    counted by the batcher from the frames' capture times): both move in the same steps. When
    no frame was written for a while, that time counts too, so a stopped camera's rate falls."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._history: dict[str, deque[tuple[float, int, int, int]]] = {}
        self._last_frame: dict[str, float] = {}
        self._last_written: dict[str, float] = {}  # when each camera's written count last moved

    def update(self, per_camera: dict[str, dict[CounterKey, int]], cameras: list[str], now: float) -> None:
        """`per_camera`: the counter totals split by camera (see by_camera)."""
        for camera in cameras:
            counts = per_camera.get(camera, {})
            sample = (
                now,
                total(counts, Metric.RECEIVED, camera),
                total(counts, Metric.WRITTEN, camera),
                total(counts, Metric.WRITTEN_SPAN_US, camera),
            )
            history = self._history.setdefault(camera, deque())
            if not history or sample[1] > history[-1][1]:
                self._last_frame[camera] = now if sample[1] else self._last_frame.get(camera, 0.0)
            if not history or sample[2] > history[-1][2]:
                self._last_written[camera] = now
            history.append(sample)
            while len(history) > 2 and now - history[1][0] >= self.window_s:
                history.popleft()

    def view(self, camera: str, now: float) -> Rates:
        history = self._history.get(camera)
        last = self._last_frame.get(camera)
        view: Rates = {
            "fps_in": None,
            "fps_out": None,
            "last_frame_age_s": None if not last else round(now - last, 1),
        }
        if history and len(history) >= 2 and history[-1][0] > history[0][0]:
            (_, _, written0, span0), (t1, received1, written1, span1) = history[0], history[-1]
            # From the last sample before frames came: time before a camera's first frame (or
            # its return) is not part of its rate.
            start = 0
            while start < len(history) - 2 and history[start + 1][1] == history[start][1]:
                start += 1
            t0, received0 = history[start][0], history[start][1]
            view["fps_in"] = round((received1 - received0) / (t1 - t0), 2)
            written, span_s = written1 - written0, (span1 - span0) / 1e6
            idle_s = now - self._last_written.get(camera, now)
            covered_s = span_s + (idle_s if idle_s > 2 * STATS_LAG_S else 0.0)
            view["fps_out"] = round(written / covered_s, 2) if written and covered_s > 0 else 0.0
        return view


# How stale a count can look with nothing wrong: a report interval plus a status interval.
STATS_LAG_S = 2.0

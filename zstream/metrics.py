"""Prometheus metrics: `/metrics` over HTTP, for the whole pipeline, from the supervisor.

Workers never serve metrics themselves. They already report cumulative counters to the
supervisor, whose StatsBoard adds them up across processes and restarts; this module turns
those totals (and the status the supervisor builds from them) into Prometheus metric
families on each scrape, so what Prometheus sees is exactly what `status.json` and the log
lines say, and a restarted worker never makes a counter go back.

    counters (metric, camera, reason)            Prometheus
    ---------------------------------            ----------
    received / captured / validated / written    zstream_frames_{...}_total{camera}
    dropped, reason "stage:why"                  zstream_frames_dropped_total{camera,stage,reason}
    failed (one per QC reason of a frame)        zstream_qc_failures_total{camera,reason}
    latency_ms (bucket), latency_ms_sum          zstream_capture_to_redis_latency_seconds (histogram)
    batch_frames (batch size)                    zstream_batch_frames (histogram)
    status: camera state, fps, last frame age    zstream_camera_state / _fps / _last_frame_age_seconds
    status: workers                              zstream_worker_up / zstream_worker_restarts_total

See METRICS below for every name. The address is the topology's `metrics.address`
("host:port"; port 0 picks a free one, an empty string disables the endpoint).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.core import Metric as Family
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from zstream.core.address import is_port, split_host_port, unbracket
from zstream.core.vocabulary import STARTING, CameraState, Metric, WorkerState
from zstream.errors import PreflightError, ZStreamError
from zstream.security import bearer_token_required, read_token
from zstream.stats import LATENCY_BUCKETS_MS, CounterKey
from zstream.status import CameraStatus, Status, WorkerStatus

log = logging.getLogger(__name__)

Snapshot = tuple[dict[CounterKey, int], Status]  # (board totals, Supervisor.status(totals))

PREFIX = "zstream_"
# Upper bounds of the batch size histogram (batcher.batch_size is at most 1024).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Every state a camera can show: "starting" until its capture worker first reports it.
CAMERA_STATES = (STARTING, *(state.value for state in CameraState))

# Per-camera frame counters: (counter metric, Prometheus name without prefix and _total, help).
FRAME_COUNTERS = (
    (Metric.RECEIVED, "frames_received", "Frames the camera sent, before the fps cap."),
    (
        Metric.CAPTURED,
        "frames_captured",
        "Frames given a seq: written into the camera's ring, or passed over for the output rate.",
    ),
    (Metric.VALIDATED, "frames_validated", "Frames measured by validation, passed or failed."),
    (Metric.REJECTED, "frames_rejected", "Frames that failed quality control (sent to the QC stream)."),
    (Metric.WRITTEN, "frames_written", "Frames written to the Redis batch stream."),
    (Metric.QC_WRITTEN, "qc_entries_written", "Failed frames' entries written to the Redis QC stream."),
    (
        Metric.RECONNECTS,
        "camera_reconnects",
        "Reconnection attempts: each retry after the stream broke or failed to open.",
    ),
    (
        Metric.RECONNECTED,
        "camera_reconnected",
        "Successful reconnections: the stream delivered frames again after a break.",
    ),
    (
        Metric.STALLS,
        "camera_stalls",
        "Times the camera stalled: connected, but no frame for the stall timeout.",
    ),
    (Metric.CORRUPT_PACKETS, "corrupt_packets", "Corrupt packets the decoder reported."),
)
# Counters of the whole pipeline: (counter metric, name without prefix and _total, help).
PIPELINE_COUNTERS = (
    (Metric.BATCHES_WRITTEN, "batches_written", "Batches (Redis stream entries) written."),
    (
        Metric.BATCHES_SHED,
        "batches_shed",
        "Batches shed while Redis was down (their frames count as dropped).",
    ),
    (Metric.REDIS_ERRORS, "redis_errors", "Failed Redis writes (each one is retried)."),
)

# Every family this module exports (for documentation and tests).
METRICS = (
    *(f"{PREFIX}{name}_total" for _, name, _ in FRAME_COUNTERS),
    f"{PREFIX}frames_skipped_total",
    f"{PREFIX}frames_dropped_total",
    f"{PREFIX}qc_failures_total",
    f"{PREFIX}frames_unaccounted",
    f"{PREFIX}camera_state",
    f"{PREFIX}camera_fps",
    f"{PREFIX}camera_last_frame_age_seconds",
    f"{PREFIX}capture_to_redis_latency_seconds",
    f"{PREFIX}batch_frames",
    *(f"{PREFIX}{name}_total" for _, name, _ in PIPELINE_COUNTERS),
    f"{PREFIX}worker_up",
    f"{PREFIX}worker_restarts_total",
    f"{PREFIX}uptime_seconds",
    f"{PREFIX}shard_info",
)


def families(counts: dict[CounterKey, int], status: Status) -> list[Family]:
    """The metric families of one snapshot: the board's totals and the status built from them.

    Per-camera series exist (at 0) for every configured camera from the first snapshot, so
    rates and alerts work before anything happened. Neither argument is modified.
    """
    cameras_status = status["cameras"]
    by_metric: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)  # one pass over the counters
    for (metric, camera, reason), n in counts.items():
        by_metric[metric][(camera, reason)] = n
    out = [*_frame_counters(by_metric, list(cameras_status)), *_reason_counters(by_metric)]
    out.extend(_camera_gauges(cameras_status))
    out.append(_latency_histogram(by_metric))
    out.append(_batch_histogram(by_metric))
    for metric, name, doc in PIPELINE_COUNTERS:
        out.append(CounterMetricFamily(PREFIX + name, doc, value=sum(by_metric.get(metric, {}).values())))
    out.extend(_worker_families(status["workers"]))
    out.extend(_instance_families(status))
    return out


def _frame_counters(by_metric: dict[str, dict[tuple[str, str], int]], cameras: list[str]) -> Iterator[Family]:
    """FRAME_COUNTERS, per camera: every configured camera has its series, at 0 until it counts."""
    for metric, name, doc in FRAME_COUNTERS:
        values = dict.fromkeys(cameras, 0)
        for (camera, _), n in by_metric.get(metric, {}).items():
            values[camera] = values.get(camera, 0) + n
        family = CounterMetricFamily(PREFIX + name, doc, labels=["camera"])
        for camera, n in sorted(values.items()):
            family.add_metric([camera], n)
        yield family


def _reason_counters(by_metric: dict[str, dict[tuple[str, str], int]]) -> Iterator[Family]:
    """Frames skipped and dropped, and QC failures, per camera and reason."""
    skipped = CounterMetricFamily(
        f"{PREFIX}frames_skipped",
        "Frames skipped by design, not lost: fps_cap (not decoded), output_rate (validated, not written).",
        labels=["camera", "reason"],
    )
    for (camera, reason), n in sorted(by_metric.get(Metric.SKIPPED, {}).items()):
        skipped.add_metric([camera, reason], n)
    yield skipped

    dropped = CounterMetricFamily(
        f"{PREFIX}frames_dropped",
        "Frames that will not reach Redis, by the stage that dropped them and why.",
        labels=["camera", "stage", "reason"],
    )
    for (camera, stage_reason), n in sorted(by_metric.get(Metric.DROPPED, {}).items()):
        stage, _, reason = stage_reason.partition(":") if ":" in stage_reason else ("", "", stage_reason)
        dropped.add_metric([camera, stage, reason], n)
    yield dropped

    failures = CounterMetricFamily(
        f"{PREFIX}qc_failures",
        "Quality-control failures by reason (a frame failing several checks counts once per reason).",
        labels=["camera", "reason"],
    )
    for (camera, reason), n in sorted(by_metric.get(Metric.FAILED, {}).items()):
        failures.add_metric([camera, reason], n)
    yield failures


def _worker_families(workers: dict[str, WorkerStatus]) -> Iterator[Family]:
    up = GaugeMetricFamily(f"{PREFIX}worker_up", "1 while the worker process runs.", labels=["worker"])
    restarts = CounterMetricFamily(
        f"{PREFIX}worker_restarts", "Times the supervisor restarted the worker.", labels=["worker"]
    )
    for worker, row in sorted(workers.items()):
        up.add_metric([worker], 1 if row["state"] == WorkerState.RUNNING.value else 0)
        restarts.add_metric([worker], row["restarts"])
    yield from (up, restarts)


def _instance_families(status: Status) -> Iterator[Family]:
    index, _, count = (status["shard"] or "0/1").partition("/")  # unsharded: all of one shard
    info = GaugeMetricFamily(
        f"{PREFIX}shard_info",
        "1, labelled with this instance's shard (zstream up --shard).",
        labels=["shard", "shards"],
    )
    info.add_metric([index, count], 1)
    yield info
    yield GaugeMetricFamily(
        f"{PREFIX}uptime_seconds", "Seconds since the supervisor started.", value=status["uptime_s"]
    )


def _camera_gauges(cameras_status: dict[str, CameraStatus]) -> Iterator[Family]:
    state = GaugeMetricFamily(
        f"{PREFIX}camera_state",
        "1 for the camera's current state, 0 for the others.",
        labels=["camera", "state"],
    )
    fps = GaugeMetricFamily(
        f"{PREFIX}camera_fps",
        "Frames per second over the last 5 s: in = sent by the camera, out = written to Redis.",
        labels=["camera", "direction"],
    )
    age = GaugeMetricFamily(
        f"{PREFIX}camera_last_frame_age_seconds",
        "Seconds since the camera's last frame (to within one stats interval); absent before the first.",
        labels=["camera"],
    )
    unaccounted = GaugeMetricFamily(
        f"{PREFIX}frames_unaccounted",
        "Frames in the ring that no counter accounts for yet: in flight while running, lost in a crash.",
        labels=["camera"],
    )
    for camera, row in sorted(cameras_status.items()):
        current = row["state"]
        for value in [*CAMERA_STATES, *([current] if current not in CAMERA_STATES else [])]:
            state.add_metric([camera, value], 1 if value == current else 0)
        for direction, rate in (("in", row["fps_in"]), ("out", row["fps_out"])):
            if rate is not None:
                fps.add_metric([camera, direction], rate)
        if row["last_frame_age_s"] is not None:
            age.add_metric([camera], row["last_frame_age_s"])
        unaccounted.add_metric([camera], row["unaccounted"])
    yield from (state, fps, age, unaccounted)


def _histogram(
    name: str, doc: str, bounds: Iterable[float], counts: dict[float, int], sum_value: float
) -> HistogramMetricFamily:
    """A histogram from observation counts keyed by their bucket's upper bound (inf beyond)."""
    buckets, seen = [], 0
    for bound in bounds:
        seen += counts.get(bound, 0)
        buckets.append((floatToGoString(bound), seen))
    buckets.append(("+Inf", sum(counts.values())))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=sum_value)


def _latency_histogram(by_metric: dict[str, dict[tuple[str, str], int]]) -> HistogramMetricFamily:
    """Counters ("latency_ms", camera, bound in ms or "inf") and ("latency_ms_sum", camera, "")."""
    counts: dict[float, int] = defaultdict(int)
    for (_, reason), n in by_metric.get(Metric.LATENCY_MS, {}).items():
        with contextlib.suppress(ValueError):  # float("inf") is inf: the overflow bucket
            counts[float(reason) / 1000] += n
    total_ms = sum(by_metric.get(Metric.LATENCY_MS_SUM, {}).values())
    return _histogram(
        f"{PREFIX}capture_to_redis_latency_seconds",
        "Seconds from a frame entering shared memory to its batch being written to Redis "
        "(the sum is rounded to the millisecond per frame).",
        (bound / 1000 for bound in LATENCY_BUCKETS_MS),
        counts,
        total_ms / 1000,
    )


def _batch_histogram(by_metric: dict[str, dict[tuple[str, str], int]]) -> HistogramMetricFamily:
    """Counters ("batch_frames", "", size): one per batch written, by its exact size."""
    counts: dict[float, int] = defaultdict(int)
    frames = 0
    for (_, reason), n in by_metric.get(Metric.BATCH_FRAMES, {}).items():
        if reason.isdigit():
            size = int(reason)
            counts[next((b for b in BATCH_BUCKETS if size <= b), float("inf"))] += n
            frames += size * n
    return _histogram(
        f"{PREFIX}batch_frames", "Frames per batch written to Redis.", BATCH_BUCKETS, counts, frames
    )


class PipelineCollector(Collector):
    """Builds every family from one snapshot per scrape (runs on the HTTP server's thread)."""

    def __init__(self, snapshot: Callable[[], Snapshot | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Family]:
        snapshot = self._snapshot()
        if snapshot is None:  # before the supervisor's first status tick: nothing to say yet
            return []
        return families(*snapshot)

    def describe(self) -> Iterable[Family]:
        return []  # names depend on nothing at registration; do not collect to find them


def parse_address(address: str) -> tuple[str, int] | None:
    """("host", port) of "host:port" ("[::1]:9108" for IPv6; ":9108" is every interface);
    None for an empty address (metrics disabled)."""
    text = address.strip()
    if not text:
        return None
    host, port = split_host_port(text) or ("", "")
    if not is_port(port) or (":" in host and not host.startswith("[")):
        raise PreflightError(f'metrics.address "{address}": expected host:port (port 0 picks a free one)')
    return unbracket(host) or "0.0.0.0", int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape."""

    def log_message(self, *args: Any) -> None:
        pass


class MetricsExporter:
    """Serves `/metrics` on its own registry (no process or Python collectors mixed in).

    Thread safety: scrapes run on the HTTP server's threads while the supervisor's loop
    updates its board. Rather than reading the board from another thread, the supervisor
    hands over a finished snapshot on every status tick with `update(counts, status)`: the
    board's totals and the status dict built from them, both fresh objects it never touches
    again. Replacing one attribute with one tuple is atomic, so a scrape sees either the old
    or the new snapshot, whole, with no lock and no work on the supervisor's loop beyond
    what status.json already costs. Scrapes are at most one stats interval stale, which
    worker reports (sent at that interval) already are.

    A `snapshot` callable may be given instead (tests); it is then called on every scrape,
    from the HTTP thread, and must be safe to call from there.
    """

    def __init__(
        self, address: str, snapshot: Callable[[], Snapshot | None] | None = None, token_file: str = ""
    ) -> None:
        self.bind = parse_address(address)
        self.token_file = token_file  # when set, scrapes need `Authorization: Bearer <token>`
        self._latest: Snapshot | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(snapshot or self._get_latest))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def address(self) -> str | None:
        """The bound "host:port" while serving, else None (disabled, or not started)."""
        if self.bind is None or self.port is None:
            return None
        return format_address(self.bind[0], self.port)

    def update(self, counts: dict[CounterKey, int], status: Status) -> None:
        """The supervisor's latest totals and status; neither may be modified afterwards."""
        self._latest = (counts, status)

    def _get_latest(self) -> Snapshot | None:
        return self._latest

    def start(self) -> None:
        """Serve /metrics (no-op when disabled); a busy or bad address is a PreflightError."""
        if self.bind is None or self._server is not None:
            return
        host, port = self.bind
        app = make_wsgi_app(self.registry)
        if self.token_file:
            try:
                app = bearer_token_required(app, read_token(self.token_file))
            except ZStreamError as exc:
                raise PreflightError(str(exc)) from exc
        try:
            self._server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as exc:
            shown = format_address(host, port)
            raise PreflightError(f"metrics.address {shown}: cannot listen: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        self.port = self._server.server_address[1]
        log.info(
            "metrics: http://%s/metrics%s",
            self.address,
            " (bearer token required)" if self.token_file else "",
        )

    def stop(self) -> None:
        """Stop serving and close the listening socket; safe to call more than once."""
        server, thread = self._server, self._thread
        self._server, self._thread, self.port = None, None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MetricsExporter:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

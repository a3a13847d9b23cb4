"""`zstream up`: start every stage's workers, keep them running, and stop them in order.

The supervisor owns what must outlive any one worker: the run directory (locked, so two
pipelines never share it), the shared-memory rings, and the sum of every worker's
counters. One periodic tick reaps dead workers, restarts them after an exponential,
jittered back-off, and collects their reports. On SIGINT/SIGTERM it drains stage by
stage, capture first, so frames already captured still reach Redis; a second signal
skips the drain.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from zstream import preflight
from zstream.control import ControlServer
from zstream.core.backoff import RestartPolicy
from zstream.core.files import replace_file
from zstream.core.ring import Ring
from zstream.core.vocabulary import STARTING, DropReason, Metric, Stage, WorkerState
from zstream.core.wire import WorkerStats, decode
from zstream.errors import PreflightError, RingError, WireError, ZStreamError
from zstream.live import LiveCameras
from zstream.metrics import MetricsExporter
from zstream.operations import Operations
from zstream.redis_client import topology_client
from zstream.rundir import (
    ENDPOINTS_FILE,
    STATUS_FILE,
    TAP_ENDPOINT_FILE,
    RunDir,
    create_ring,
    write_pipeline,
)
from zstream.security import CurveServer
from zstream.settle import Settlement
from zstream.shard import Shard
from zstream.stats import (
    CameraRates,
    CounterKey,
    StatsBoard,
    books,
    by_camera,
    by_reason,
    quality_view,
    total,
)
from zstream.status import CameraStatus, ProcessCost, Status, WorkerStatus
from zstream.summary import log_books, log_summary
from zstream.system import ProcessSampler
from zstream.topology import Topology, initial_placement

log = logging.getLogger(__name__)
STAGES = (Stage.BATCH, Stage.VALIDATE, Stage.CAPTURE)  # start order; drain order is the reverse
READY_TIMEOUT_S = 15.0  # how long capture waits for the downstream stages' first reports


@dataclass
class Worker:
    stage: str
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    failures: int = 0
    restart_at: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.index}"

    @property
    def state(self) -> WorkerState:
        if self.process is not None:
            return WorkerState.RUNNING
        return WorkerState.BACKOFF if self.restart_at else WorkerState.STOPPED


class Supervisor:
    def __init__(
        self, topology: Topology, live: LiveCameras | None = None, shard: Shard | None = None
    ) -> None:
        self.topology = topology
        self.shard = shard  # the part of a fleet this instance runs (see zstream.shard); None: all
        self.live = live  # None: started without a topology file, so no live camera changes
        settings = topology.supervisor
        self.policy = RestartPolicy(settings.restart_initial_s, settings.restart_max_s)
        self.board = StatsBoard()
        self.rates = CameraRates()
        self.workers = [Worker("batch", 0)]
        self.workers += [Worker("validate", i) for i in range(topology.validation.workers)]
        self.workers += [Worker("capture", i) for i in range(topology.capture.workers)]
        self.run_dir = RunDir(topology)
        self.rings: dict[str, Ring] = {}
        self.placement = initial_placement(topology)
        self.retired_seq: dict[str, int] = {}  # next seq of cameras removed live, should they return
        self.control: ControlServer | None = None
        self.curve: CurveServer | None = None
        self.metrics = MetricsExporter(
            topology.metrics.address, token_file=topology.security.metrics_token_file
        )  # serves nothing before run()
        self.endpoints: dict[str, str] = {}
        self.operations = Operations(self)
        self.processes = ProcessSampler()
        self.process_costs: list[ProcessCost] = []
        self.settlement = Settlement(
            self.run_dir.path, self.board, lambda: topology_client(topology.redis, timeout_s=1.0)
        )
        self.signals = 0
        self._next_log = 0.0
        self._next_status = 0.0
        self._started = time.monotonic()

    # ---- life cycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Run until signalled; returns the exit status. Raises PreflightError before starting."""
        self.run_dir.acquire()
        context: zmq.Context = zmq.Context.instance()
        stats = None
        try:
            preflight.check_platform()
            preflight.check_shared_memory(self.topology)
            preflight.check_open_files(self.topology)
            preflight.check_endpoints(self.topology)
            preflight.check_environment(self.topology)
            preflight.check_redis(self.topology)
            self.metrics.start()  # PreflightError when the address is taken
            self._create_rings()
            write_pipeline(self.run_dir.path, self.topology, self.placement)
            self._bind_control(context)
            stats = self._stats = context.socket(zmq.PULL)
            stats.bind(self.topology.endpoint("stats"))
            self._install_signal_handlers()
            self._start_in_order(stats)
            log.info(
                "pipeline up%s: %d cameras, %d capture, %d validation, 1 batch worker; Ctrl-C to stop",
                "" if self.shard is None else f" (shard {self.shard})",
                len(self.topology.cameras),
                self.topology.capture.workers,
                self.topology.validation.workers,
            )
            while not self.signals:
                self._tick(stats)
            self._drain(stats)
            return 0
        finally:
            self.metrics.stop()
            self._kill_all()
            if self.control is not None:
                self.control.close()
            if self.curve is not None:
                self.curve.stop()
            if stats is not None:
                stats.close(linger=0)
                self.settlement.retry(now=True)
                self._log_summary(final=True)  # before the rings go: they hold the committed counts
            for ring in self.rings.values():
                ring.close()
                ring.unlink()
            self.run_dir.release()

    def _create_rings(self) -> None:
        topology = self.topology
        for camera in topology.cameras:
            try:
                ring = create_ring(topology, camera)
            except RingError as exc:
                raise PreflightError(f"camera {camera.id}: {exc}") from exc
            self.rings[camera.id] = ring

    def _bind_control(self, context: zmq.Context) -> None:
        keys = self.topology.security.curve_keys
        try:
            self.curve = CurveServer(context, Path(keys)) if keys else None
            self.control = ControlServer(context, self.topology.control.endpoint, self.curve)
        except ZStreamError as exc:
            raise PreflightError(f"{exc} (control.endpoint; is another pipeline using it?)") from exc
        self.endpoints = {"control": self.control.endpoint}
        if self.metrics.address:
            self.endpoints["metrics"] = self.metrics.address
        replace_file(self.run_dir.path / ENDPOINTS_FILE, json.dumps(self.endpoints))
        log.info("control endpoint %s", self.control.endpoint)

    def publish(self, topology: Topology) -> None:
        """Make `topology` the pipeline's: the workers pick it up within a fraction of a second."""
        self.topology = topology
        write_pipeline(self.run_dir.path, topology, self.placement)
        self._next_status = 0.0

    def receive_stats(self, timeout_ms: int) -> None:
        """Keep taking reports while a command waits for the workers."""
        self._receive_stats(self._stats, timeout_ms)

    def capture_reports(self, camera_id: str) -> bool:
        """Whether a running capture worker's latest report still lists the camera."""
        for worker in self.workers:
            if worker.stage == "capture" and worker.process is not None:
                report = self.board.reports.get((worker.name, worker.process.pid))
                if report is not None and camera_id in report.states:
                    return True
        return False

    def sample_processes(self) -> None:
        """CPU and memory of every process, averaged since the previous status write."""
        pids = {"supervisor": os.getpid()}
        pids.update({w.name: w.process.pid for w in self.workers if w.process is not None})
        self.process_costs = self.processes.sample(pids)

    def _install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: object) -> None:
            self.signals += 1
            if self.signals == 1:
                log.info("%s: draining (again to stop at once)", signal.Signals(signum).name)
            else:
                log.warning("second signal: stopping without draining")

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    # ---- workers --------------------------------------------------------------------------

    def _start(self, worker: Worker) -> None:
        argv = [
            sys.executable,
            "-m",
            "zstream.worker",
            worker.stage,
            str(worker.index),
            self.topology.run_dir,
            str(os.getpid()),
        ]
        worker.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        worker.started = time.monotonic()
        worker.restart_at = 0.0
        log.debug("started %s (pid %d)", worker.name, worker.process.pid)

    def _start_in_order(self, stats: zmq.Socket) -> None:
        """Downstream first, and capture only once validation and batching have reported in:
        frames captured before their consumers listen would only be dropped at start-up."""
        downstream = [w for w in self.workers if w.stage != "capture"]
        for worker in downstream:
            self._start(worker)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.signals and time.monotonic() < deadline:
            self._receive_stats(stats, timeout_ms=50)
            reported = {name for name, _ in self.board.reports}
            if all(w.name in reported for w in downstream):
                break
        else:
            log.warning("validation/batching not ready after %.0fs; starting capture anyway", READY_TIMEOUT_S)
        for worker in self.workers:
            if worker.stage == "capture":
                self._start(worker)

    def _reap(self, worker: Worker, now: float) -> None:
        assert worker.process is not None
        code = worker.process.returncode
        pid = worker.process.pid
        worker.process = None
        self.settlement.worker_gone(worker.name, pid)
        if now - worker.started >= self.policy.stable_after_s:
            worker.failures = 0
        worker.failures += 1
        worker.restarts += 1
        delay = self.policy.delay(worker.failures)
        worker.restart_at = now + delay
        log.warning(
            "%s (pid %d) exited %s; restart #%d in %.1fs",
            worker.name,
            pid,
            _describe_exit(code),
            worker.restarts,
            delay,
        )

    def _tick(self, stats: zmq.Socket) -> None:
        self._receive_stats(stats, timeout_ms=100)
        if self.control is not None:
            self.control.serve_pending(self.operations.run)
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is not None:
                self._reap(worker, now)
            elif worker.process is None and worker.restart_at and now >= worker.restart_at:
                self._start(worker)
        if now >= self._next_status:
            self._write_status()
            self._next_status = now + self.topology.supervisor.stats_interval_s
        if now >= self._next_log:
            if self._next_log:
                self._log_summary()
            self._next_log = now + self.topology.supervisor.log_interval_s

    def _receive_stats(self, stats: zmq.Socket, timeout_ms: int) -> None:
        """Take in the workers' reports that are waiting (up to `timeout_ms` for the first)."""
        if not stats.poll(timeout_ms):
            return
        while True:
            try:
                data = stats.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                report = decode(data, WorkerStats)
            except WireError as exc:
                self.board.count(Metric.DROPPED, reason=f"{Stage.SUPERVISOR}:{DropReason.BAD_MESSAGE}")
                log.warning("rejected a stats message: %s", exc)
                continue
            assert isinstance(report, WorkerStats)
            self.board.update(report)

    def _drain(self, stats: zmq.Socket) -> None:
        """Stop stages upstream first, each within its share of the shutdown timeout."""
        for stage in reversed(STAGES):
            workers = [w for w in self.workers if w.stage == stage]
            for worker in workers:
                worker.restart_at = 0.0
                if worker.process is not None and self.signals < 2:
                    worker.process.terminate()
            deadline = time.monotonic() + self.topology.supervisor.drain_budget_s(stage)
            while self.signals < 2 and time.monotonic() < deadline:
                if all(w.process is None or w.process.poll() is not None for w in workers):
                    break
                self._receive_stats(stats, timeout_ms=50)
            for worker in workers:
                if worker.process is not None and worker.process.poll() is None:
                    log.error("%s did not stop in time; killing it", worker.name)
                    worker.process.kill()
        self._kill_all()
        self._receive_stats(stats, timeout_ms=200)  # the last reports, sent just before exit
        self._receive_stats(stats, timeout_ms=0)

    def _kill_all(self) -> None:
        for worker in self.workers:
            if worker.process is None:
                continue
            if worker.process.poll() is None:
                worker.process.kill()
            worker.process.wait()
            self.settlement.worker_gone(worker.name, worker.process.pid)
            worker.process = None
            worker.restart_at = 0.0

    # ---- what operators see ------------------------------------------------------------

    def status(self, counts: dict[CounterKey, int] | None = None) -> Status:
        """What status.json holds (see zstream.status); `counts` are the board's totals when the
        caller has them."""
        counts = self.board.totals() if counts is None else counts
        per_camera = by_camera(counts)
        cameras = {
            camera.id: self._camera_status(camera.id, per_camera.get(camera.id, {}))
            for camera in self.topology.cameras
        }
        return {
            "uptime_s": round(time.monotonic() - self._started, 1),
            "shard": None if self.shard is None else str(self.shard),
            "cameras": cameras,
            "workers": {w.name: self._worker_status(w, cameras) for w in self.workers},
            "dropped": by_reason(counts, Metric.DROPPED),
            "batches_written": total(counts, Metric.BATCHES_WRITTEN),
            "endpoints": self.endpoints,
        }

    def _camera_status(self, camera_id: str, own: dict[CounterKey, int]) -> CameraStatus:
        state, detail = self.board.states.get(camera_id, (STARTING, ""))
        rates = self.rates.view(camera_id, time.monotonic())
        return {
            "state": state,
            "detail": detail,
            "received": total(own, Metric.RECEIVED, camera_id),
            "captured": total(own, Metric.CAPTURED, camera_id),
            "validated": total(own, Metric.VALIDATED, camera_id),
            "written": total(own, Metric.WRITTEN, camera_id),
            "failed": by_reason(own, Metric.FAILED, camera_id),
            "skipped": by_reason(own, Metric.SKIPPED, camera_id),
            "corrupt_packets": total(own, Metric.CORRUPT_PACKETS, camera_id),
            "reconnects": total(own, Metric.RECONNECTS, camera_id),
            "reconnected": total(own, Metric.RECONNECTED, camera_id),
            "stalls": total(own, Metric.STALLS, camera_id),
            "quality": quality_view(own, camera_id),
            "fps_in": rates["fps_in"],
            "fps_out": rates["fps_out"],
            "last_frame_age_s": rates["last_frame_age_s"],
            "dropped": by_reason(own, Metric.DROPPED, camera_id),
            "committed": self._committed(camera_id),
            "in_flight": self.rings[camera_id].frames_in_flight() if camera_id in self.rings else 0,
            "unaccounted": books(own, self._committed(camera_id), camera_id)["lost"],
        }

    def _worker_status(self, worker: Worker, cameras: dict[str, CameraStatus]) -> WorkerStatus:
        """Its state, its cameras, and the frames queued for it: in flight in those cameras'
        rings (validation), or in every ring (the batcher releases each frame last)."""
        placed = {"capture": self.placement.capture, "validate": self.placement.validate}.get(worker.stage)
        mine = [c for c in cameras if placed is None or placed.get(c) == worker.index]
        status: WorkerStatus = {
            "state": worker.state.value,
            "pid": worker.process.pid if worker.process else None,
            "restarts": worker.restarts,
            "cameras": len(mine),
        }
        if worker.stage != "capture":
            status["queued_frames"] = sum(cameras[c]["in_flight"] for c in mine)
        return status

    def _note_tap_endpoint(self) -> None:
        """The batcher binds the tap: publish the address it got (again after a restart, which
        may bind another port) next to the supervisor's own."""
        try:
            tap = (self.run_dir.path / TAP_ENDPOINT_FILE).read_text().strip()
        except FileNotFoundError:
            return
        if tap and self.endpoints.get("tap") != tap:
            self.endpoints["tap"] = tap
            replace_file(self.run_dir.path / ENDPOINTS_FILE, json.dumps(self.endpoints))

    def _committed(self, camera_id: str) -> int:
        """Frames the camera's capture gave a seq, ever (from the ring's header)."""
        ring = self.rings.get(camera_id)
        return ring.next_seq if ring is not None else 0

    def _log_summary(self, final: bool = False) -> None:
        counts = self.board.totals()
        states = [state for state, _ in self.board.states.values()]
        log_summary(counts, states, len(self.topology.cameras), sum(w.restarts for w in self.workers), final)
        if final:
            rows = self.status(counts)["cameras"]
            log_books(counts, rows, {camera: self._committed(camera) for camera in rows})

    def _write_status(self) -> None:
        self.settlement.retry()
        counts = self.board.totals()
        cameras = [camera.id for camera in self.topology.cameras]
        self.rates.update(by_camera(counts), cameras, time.monotonic())
        self.sample_processes()
        self._note_tap_endpoint()
        status = self.status(counts)
        self.metrics.update(counts, status)  # a fresh snapshot, never modified afterwards
        replace_file(self.run_dir.path / STATUS_FILE, json.dumps(status, indent=1))


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"on signal {signal.Signals(-code).name}"
    return f"with code {code}"

"""Capture stage: decode cameras into their shared-memory rings and announce each frame.

One process runs several cameras, one thread each (PyAV and OpenCV release the GIL while
decoding and scaling). Capture never waits for downstream: when the ring or the queue to
validation is full, the frame is dropped by the camera's policy and counted with why.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import cv2
import numpy as np
import zmq

from zstream.camera import CameraLifecycle, CameraState
from zstream.core.backoff import backoff
from zstream.core.ring import Ring, WriteSlot, ring_path
from zstream.core.vocabulary import DropReason, Metric, SkipReason, Stage
from zstream.core.wire import FrameRef, encode
from zstream.envrefs import MissingVariable, expand
from zstream.errors import RingError, SourceError, SourceRejected, ZStreamError, mask_url
from zstream.rate import FpsCap
from zstream.rundir import PipelineWatcher
from zstream.sources import DecodedFrame, Decoding, FrameSource, Resumable
from zstream.stats import Counters, StatsReporter
from zstream.topology import Camera, Placement, Topology

log = logging.getLogger(__name__)
STAGE = Stage.CAPTURE
INGEST = Stage.INGEST  # frames a pushing client sent that never reached the ring (zmq:// cameras)
WAIT_POLL_S = 0.002  # how often a camera with the "wait" policy looks for room downstream
HAND_OVER_S = 2.0  # how long a stopping camera waits for downstream to take its last frames


def open_source(camera: Camera, topology: Topology) -> FrameSource:
    """The source for a camera's URL scheme (the topology has already checked the scheme), with
    the URL's `${NAME}` references to the environment filled in (see zstream.envrefs).

    Modules are imported here, on first use, so a pipeline of RTSP cameras never loads
    the WebRTC stack.
    """
    try:
        camera = camera.model_copy(update={"url": expand(camera.url)})
    except MissingVariable as exc:  # it will not appear in this process: retrying cannot help
        raise SourceRejected(f"camera {camera.id}: its URL needs {exc}") from exc
    capture = topology.capture
    timeouts: dict[str, Any] = {
        "open_timeout_s": capture.open_timeout_s,
        "read_timeout_s": capture.read_timeout_s,
    }
    decoding: dict[str, Any] = {
        "decoding": Decoding(
            topology.decoder_threads_for(camera), camera.keyframes_only, camera.skip_loop_filter
        )
    }
    scheme = camera.scheme
    if scheme == "synthetic":
        from zstream.sources.synthetic import SyntheticSource

        return SyntheticSource(camera.url, camera.id)
    if scheme == "rtsp":
        from zstream.sources.rtsp import RtspSource

        return RtspSource(camera.url, transport=camera.transport or "tcp", **timeouts, **decoding)
    if scheme == "onvif":
        from zstream.sources.onvif import OnvifSource

        return OnvifSource(camera.url, transport=camera.transport or "tcp", **timeouts, **decoding)
    if scheme == "http":
        from zstream.sources.http import HttpSource

        return HttpSource(camera.url, realtime=camera.realtime, **timeouts, **decoding)
    if scheme == "whep":
        from zstream.sources.whep import WhepSource

        return WhepSource(camera.url, **timeouts)
    if scheme == "zmq":
        return _zmq_source(camera, topology)
    if scheme == "v4l2":
        from zstream.sources.v4l2 import V4l2Source

        return V4l2Source(camera.url, **timeouts, **decoding)
    from zstream.sources.file import FileSource

    return FileSource(camera.url, loop=camera.loop, realtime=camera.realtime, **decoding)


def _zmq_source(camera: Camera, topology: Topology) -> FrameSource:
    """A zmq:// camera: its hub's message limit fits the largest camera sharing the socket."""
    from zstream.sources.zmq_hub import ZmqSource, hub_key, message_limit

    capture = topology.capture
    key = hub_key(camera.url)
    sizes = [c.max_size or capture.max_size for c in topology.cameras if hub_key(c.url) == key]
    return ZmqSource(
        camera.url,
        camera.id,
        max_size=camera.max_size or capture.max_size,
        curve_keys=topology.security.curve_keys,
        message_limit=message_limit(sizes),
    )


class CameraGate:
    """The FrameGate of one camera: its fps cap, and the counters of what its source had."""

    def __init__(self, camera_id: str, fps: float | None, counters: Counters) -> None:
        self.camera_id = camera_id
        self.counters = counters
        self._cap = FpsCap(fps)

    def admit(self, pts: float | None) -> bool:
        self.counters.add(Metric.RECEIVED, self.camera_id)
        if self._cap.admit(pts):
            return True
        self.counters.add(Metric.SKIPPED, self.camera_id, SkipReason.FPS_CAP)
        return False

    def corrupt(self) -> None:
        self.counters.add(Metric.CORRUPT_PACKETS, self.camera_id)

    def reject(self, reason: str) -> None:
        self.counters.drop(INGEST, reason, self.camera_id)


class CameraThread(threading.Thread):
    """Runs one camera: open, decode into the ring, announce; reconnect with back-off on errors."""

    def __init__(
        self,
        camera: Camera,
        validator: int,
        topology: Topology,
        context: zmq.Context,
        counters: Counters,
        stop: threading.Event,
        resume: bool = True,
    ) -> None:
        super().__init__(name=f"camera-{camera.id}", daemon=True)
        self.camera = camera
        # A recording continues after the last frame in its ring (this worker was restarted, or
        # the source reconnects), unless the camera was just changed: the ring's last frame then
        # came from its old configuration.
        self._resume = resume
        self.topology = topology
        self.counters = counters
        self.stop = stop
        self.lifecycle = CameraLifecycle(camera.id, mask_url(camera.url))
        self._policy = topology.drop_policy_for(camera)
        self._unsent: FpsCap | None = None
        self.follow_output_rate(topology)
        self._ring = Ring.attach(ring_path(topology.run_id, camera.id))
        self._push = context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, topology.capture.queue_depth)
        self._push.setsockopt(zmq.LINGER, int(HAND_OVER_S * 1000))  # on shutdown, hand queued refs on
        self._push.connect(topology.endpoint(f"validate-{validator}"))

    def follow_output_rate(self, topology: Topology) -> None:
        """Pass over, before the ring, the frames the camera's output rate will not send, when
        validation measures only the frames it sends (`validation.frames = "output"`): nobody
        would read them, so they are neither copied nor announced. This is where that rate is
        applied then: validation sends on every frame that arrives."""
        fps = topology.output_fps_for(self.camera) if topology.validation.frames == "output" else 0.0
        if (self._unsent.fps if self._unsent else 0.0) != fps:
            self._unsent = FpsCap(fps) if fps else None  # replaced whole: the camera thread reads it

    def run(self) -> None:
        lower_priority(self.topology.capture.nice)
        try:
            self._run()
        finally:
            self._hand_over()
            self._push.close()
            self._ring.close()

    def _hand_over(self) -> None:
        """Wait (up to HAND_OVER_S) until the frames this camera announced have left its ring.

        ZeroMQ loses the references still queued when a connection closes while the receiver's
        queue is full (the last 4 frames of a file read flat out went missing, uncounted), so the
        socket is closed only once downstream has taken them all."""
        deadline = time.monotonic() + HAND_OVER_S
        while self._ring.frames_in_flight() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        """Stream until stopped or the source ends; every failure is retried after a back-off."""
        failures = 0
        while not self.stop.is_set():
            source: FrameSource | None = None
            try:
                self.lifecycle.change(CameraState.CONNECTING)
                source = open_source(self.camera, self.topology)
                source.open()
                self._resume_where_it_was(source)
                self.lifecycle.change(CameraState.STREAMING)
                gate = CameraGate(self.camera.id, self.camera.fps, self.counters)  # stream time restarts
                for frame in source.frames(self.stop, gate):
                    if failures:  # the first frame after a break or failed attempts: back
                        self.counters.add(Metric.RECONNECTED, self.camera.id)
                    failures = 0
                    self.lifecycle.frame_arrived()
                    self._deliver(frame)
                if not self.stop.is_set():  # a finite source (file, synthetic count) is done
                    self.lifecycle.change(CameraState.ENDED, "end of stream")
                    return
            except SourceRejected as exc:
                failures += 1
                self._retry_slowly(failures, str(exc))
            except (SourceError, RingError) as exc:
                failures += 1
                self._backoff(failures, str(exc))
            except Exception as exc:  # a bug or an unforeseen library error: log it, retry
                log.exception("camera %s: unexpected error", self.camera.id)
                failures += 1
                self._backoff(failures, f"unexpected error: {exc!r}")
            finally:
                if source is not None:
                    source.close()
        self.lifecycle.change(CameraState.STOPPED)

    def _resume_where_it_was(self, source: FrameSource) -> None:
        last = self._ring.resume_point() if self._resume else None
        if last is None or not isinstance(source, Resumable):
            return
        if last.pts is None or last.position is None:
            log.warning(
                "camera %s: its file has no timestamps to resume at: playing it from the start",
                self.camera.id,
            )
            return
        source.resume_after(last.pts, last.position)
        log.info(
            "camera %s: resuming after frame %d (%.3f s into the file)",
            self.camera.id,
            last.seq,
            last.position,
        )

    def _deliver(self, frame: DecodedFrame) -> None:
        camera = self.camera.id
        unsent = self._unsent
        if unsent is not None and not unsent.admit(frame.pts if frame.pts is not None else time.time()):
            self._ring.pass_over(frame.pts, frame.position)  # the ring's count first: crash-safe books
            self._resume = True
            self.counters.add(Metric.CAPTURED, camera)
            self.counters.add(Metric.SKIPPED, camera, SkipReason.OUTPUT_RATE)
            return
        width, height = self.camera.resize or (frame.width, frame.height)
        try:
            claimed = self._claim(width, height)
        except RingError as exc:
            self.counters.drop(STAGE, DropReason.TOO_LARGE, camera)
            self.lifecycle.change(CameraState.STREAMING, f"{exc}: raise the camera's max_size or set resize")
            return
        if claimed is None:
            self.counters.drop(
                STAGE, DropReason.RING_FULL if not self.stop.is_set() else DropReason.STOPPING, camera
            )
            return
        _fill(claimed.y, frame.y)
        _fill(claimed.u, frame.u)
        _fill(claimed.v, frame.v)
        captured_at = time.time()
        seq, generation = self._ring.commit(claimed, frame.pts, captured_at, frame.position)
        self._resume = True
        self.counters.add(Metric.CAPTURED, camera)  # in the ring: what every later count settles
        ref = FrameRef(camera, seq, claimed.slot, generation, width, height, frame.pts, captured_at)
        if not self._send(encode(ref)):
            self._ring.release(claimed.slot, generation)
            self.counters.drop(STAGE, DropReason.QUEUE_FULL, camera)

    def _claim(self, width: int, height: int) -> WriteSlot | None:
        """A ring slot by the camera's policy; None means drop the frame."""
        if self._policy != "wait":
            return self._ring.claim(width, height, drop_newest=self._policy == "drop_newest")
        while not self.stop.is_set():
            claimed = self._ring.claim(width, height, drop_newest=True)
            if claimed is not None:
                return claimed
            self.stop.wait(WAIT_POLL_S)
        return None

    def _send(self, message: bytes) -> bool:
        """Queue a FrameRef for validation; False when it must be dropped."""
        while True:
            try:
                self._push.send(message, zmq.NOBLOCK)
                return True
            except zmq.Again:
                if self._policy != "wait" or self.stop.wait(WAIT_POLL_S):
                    return False

    def _backoff(self, failures: int, reason: str) -> None:
        """Network trouble: retry after an exponential, jittered back-off."""
        capture = self.topology.capture
        delay = backoff(failures, capture.reconnect_initial_s, capture.reconnect_max_s)
        self._wait_to_retry(CameraState.RECONNECTING, failures, reason, delay)

    def _retry_slowly(self, failures: int, reason: str) -> None:
        """The camera refused: it will not change its mind in a second, so do not hammer it."""
        longest = self.topology.capture.reconnect_max_s
        self._wait_to_retry(CameraState.FAILED, failures, reason, backoff(1, longest, longest))

    def _wait_to_retry(self, state: CameraState, failures: int, reason: str, delay: float) -> None:
        self.counters.add(Metric.RECONNECTS, self.camera.id)  # attempts; "reconnected" counts successes
        self.lifecycle.change(state, f"{reason}; attempt {failures}, retry in {delay:.1f}s")
        self.stop.wait(delay)


def lower_priority(nice: int) -> None:
    """Run the calling thread (a camera's, and the decoder threads it starts) at niceness `nice`.

    Linux weighs CPU per thread: dozens of decoding threads at the priority of validation and
    batching would starve their one thread each, and a frame dropped late has cost its decoding
    for nothing. Only the cameras' threads: the worker's ZeroMQ I/O thread carries every camera's
    references, and niced among 100 decoders it fell behind until the queues to validation
    overflowed (queue_full drops while validation sat idle). Only ever lowered."""
    tid = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))


def _fill(destination: np.ndarray, source: np.ndarray) -> None:
    """Copy a plane into the ring, scaling it on the way when capture resizes."""
    if destination.shape == source.shape:
        np.copyto(destination, source)
    else:
        cv2.resize(
            source,
            (destination.shape[1], destination.shape[0]),
            dst=destination,
            interpolation=cv2.INTER_AREA,
        )


class CaptureWorker:
    """The cameras placed on one capture process, kept in step with the published topology:
    a camera added live starts, one removed stops, one changed restarts, the others carry on."""

    JOIN_S = 3.0  # a camera thread blocked in a network read is given up on after this

    def __init__(self, index: int, context: zmq.Context, counters: Counters) -> None:
        self.index = index
        self.context = context
        self.counters = counters
        self.threads: dict[str, CameraThread] = {}

    def apply(self, topology: Topology, placement: Placement) -> None:
        wanted = {
            camera.id: camera for camera in topology.cameras if placement.capture.get(camera.id) == self.index
        }
        going = [camera_id for camera_id, t in self.threads.items() if wanted.get(camera_id) != t.camera]
        for camera_id in going:
            log.info(
                "camera %s: %s live; stopping it", camera_id, "changed" if camera_id in wanted else "removed"
            )
        self._stop([self.threads.pop(camera_id) for camera_id in going])
        for camera_id, camera in wanted.items():
            if camera_id not in self.threads:
                self._start(camera, placement.validate[camera_id], topology, resume=camera_id not in going)
            else:
                self.threads[camera_id].follow_output_rate(topology)

    def _start(self, camera: Camera, validator: int, topology: Topology, resume: bool) -> None:
        try:
            thread = CameraThread(
                camera, validator, topology, self.context, self.counters, threading.Event(), resume
            )
        except ZStreamError as exc:
            log.error("camera %s: cannot start: %s", camera.id, exc)
            return
        thread.start()
        self.threads[camera.id] = thread

    def _stop(self, threads: list[CameraThread]) -> list[str]:
        """Stop these cameras together, within one JOIN_S; the ids of those still running."""
        for thread in threads:
            thread.stop.set()
        deadline = time.monotonic() + self.JOIN_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.camera.id for thread in threads if thread.is_alive()]

    def check_stalls(self, stall_timeout_s: float) -> None:
        for thread in self.threads.values():  # a blocked read cannot notice its own silence
            if thread.lifecycle.check_stall(stall_timeout_s):
                self.counters.add(Metric.STALLS, thread.camera.id)

    def states(self) -> dict[str, tuple[str, str]]:
        return {camera_id: t.lifecycle.snapshot() for camera_id, t in self.threads.items()}

    def stop_all(self) -> list[str]:
        """Stop every camera, keeping their final states; the ids of those not stopped in time."""
        return self._stop(list(self.threads.values()))


def run(watcher: PipelineWatcher, index: int, stop: threading.Event, counters: Counters) -> None:
    """Body of capture worker `index`: its cameras until `stop`, then a final report."""
    topology, placement = watcher.read()
    context: zmq.Context = zmq.Context.instance()
    reporter = StatsReporter.for_worker(context, topology, f"capture-{index}", counters)
    worker = CaptureWorker(index, context, counters)
    worker.apply(topology, placement)
    while not stop.wait(0.2):
        if (published := watcher.changed()) is not None:
            topology, placement = published
            worker.apply(topology, placement)
        worker.check_stalls(topology.capture.stall_timeout_s)
        reporter.maybe_send(worker.states())
    stuck = worker.stop_all()
    reporter.send(worker.states())
    reporter.close()
    if stuck:  # e.g. blocked in a network read: its socket cannot be closed from here
        log.warning("cameras %s did not stop within 3s; exiting without them", ", ".join(stuck))
        context.destroy(linger=1000)
    else:
        context.term()  # waits (up to each socket's linger) until queued references are delivered

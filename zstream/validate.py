"""Validation stage: measure each frame's quality on its luma plane, in place in shared memory.

Every camera is routed to one validation worker (see topology.Placement), so its frames
stay in order and its per-camera state lives in one process. Every frame is validated;
the camera's output rate then picks the frames that go on to the batcher (which writes
them to the batch or the QC stream), and the slots of the others are released here,
counted as skipped (output_rate), so they never cost the batcher a message.
"""

from __future__ import annotations

import logging
import threading
import time

import zmq

from zstream.errors import RingError
from zstream.quality import CameraQuality
from zstream.rate import FpsCap
from zstream.ring import RingCache
from zstream.rundir import PipelineWatcher
from zstream.stats import Counters, StatsReporter
from zstream.topology import Topology
from zstream.wire import MAX_MESSAGE_BYTES, FrameRef, Verdict, encode
from zstream.worker import DRAIN_IDLE_S, MessageIntake

log = logging.getLogger(__name__)
STAGE = "validate"


class Validator(MessageIntake):
    STAGE = STAGE
    EXPECTED = FrameRef

    def __init__(self, topology: Topology, index: int, context: zmq.Context, counters: Counters) -> None:
        self.topology = topology
        self.counters = counters
        self.rings = RingCache(topology.run_id)
        # Per-camera state (frozen detection, the camera's norm) is correct here because each
        # camera is routed to exactly one validation worker, which sees its frames in order.
        self._quality: dict[str, CameraQuality] = {}
        self._output: dict[str, FpsCap] = {}  # per camera: which validated frames go to Redis
        self.apply(topology)
        self.pull = context.socket(zmq.PULL)
        # Per camera (each has its own pipe): with the sender's HWM, what may wait for us.
        self.pull.setsockopt(zmq.RCVHWM, topology.capture.queue_depth)
        self.pull.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.pull.bind(topology.endpoint(f"validate-{index}"))
        self.push = context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, 10000)
        self.push.setsockopt(zmq.LINGER, 2000)
        self.push.connect(topology.endpoint("batch"))

    def apply(self, topology: Topology) -> None:
        """Follow live camera changes: new cameras get their state, changed thresholds apply
        from the next frame (a camera's frozen state and norm survive a threshold change)."""
        self.topology = topology
        quality, output = {}, {}
        for camera in topology.cameras:
            thresholds, fps = topology.thresholds_for(camera), topology.output_fps_for(camera)
            kept, cap = self._quality.get(camera.id), self._output.get(camera.id)
            if kept is not None:  # frozen state and norm survive a change of thresholds
                kept.thresholds = thresholds
            quality[camera.id] = kept or CameraQuality(thresholds)
            output[camera.id] = cap if cap and cap.fps == fps else FpsCap(fps)
        self._quality, self._output = quality, output
        self.rings.refresh()

    def accept(self, ref: FrameRef) -> None:
        """Measure one frame in place and pass the verdict on; stale references are counted."""
        quality = self._quality.get(ref.camera)
        if quality is None:
            self.counters.drop(STAGE, "unknown_camera", ref.camera)
            return
        try:
            ring = self.rings.get(ref.camera)
            if not ring.is_current(ref.slot, ref.generation):
                self.counters.drop(STAGE, "overwritten", ref.camera)
                return
            info = ring.info(ref.slot)
            if (info.seq, info.width, info.height) != (ref.seq, ref.width, ref.height):
                if not ring.is_current(ref.slot, ref.generation):  # rewritten between the two looks
                    self.counters.drop(STAGE, "overwritten", ref.camera)
                    return
                raise RingError(f"reference to slot {ref.slot} does not match what the slot holds")
            luma = ring.planes(ref.slot)[0]
            # Stream time when there is one: a file read faster than real time freezes in stream
            # seconds, not wall-clock ones. (Time going back, on a restart, resets the state.)
            assessment = quality.assess(luma, ref.pts if ref.pts is not None else ref.capture_ts)
            if not ring.is_current(ref.slot, ref.generation):  # rewritten while we measured
                self.counters.drop(STAGE, "overwritten", ref.camera)
                return
        except RingError as exc:
            self.counters.drop(STAGE, "bad_reference", ref.camera)
            log.warning("camera %s: %s", ref.camera, exc)
            return
        reasons = assessment.reasons
        # Counted before the verdict leaves: were this worker killed right after sending, the
        # batcher could write a frame that no count says was validated.
        self.counters.add("validated", ref.camera)
        if reasons:
            self.counters.add("rejected", ref.camera)  # frames, where "failed" counts reasons
        for reason in reasons:
            self.counters.add("failed", ref.camera, reason)
        if self._output[ref.camera].admit(ref.pts if ref.pts is not None else ref.capture_ts):
            verdict = Verdict(ref, assessment.metrics.as_dict(), reasons, time.time())
            try:
                self.push.send(encode(verdict), zmq.NOBLOCK)
            except zmq.Again:
                ring.release(ref.slot, ref.generation)
                self.counters.drop(STAGE, "batcher_full", ref.camera)
        else:
            ring.release(ref.slot, ref.generation)
            self.counters.add("skipped", ref.camera, "output_rate")

    def close(self) -> None:
        self.pull.close(linger=0)
        self.push.close()
        self.rings.close()


def run(watcher: PipelineWatcher, index: int, stop: threading.Event, counters: Counters) -> None:
    """Body of validation worker `index`: validate until stopped, then drain what is queued."""
    topology, _ = watcher.read()
    context = zmq.Context.instance()
    reporter = StatsReporter.for_worker(context, topology, f"validate-{index}", counters)
    validator = Validator(topology, index, context, counters)
    last_input = time.monotonic()
    try:
        while True:
            if validator.pull.poll(100):
                validator.handle(validator.pull.recv())
                last_input = time.monotonic()
            elif stop.is_set() and time.monotonic() - last_input >= DRAIN_IDLE_S:
                break
            if (published := watcher.changed()) is not None:
                validator.apply(published[0])
            reporter.maybe_send()
    finally:
        reporter.send()
        reporter.close()
        validator.close()
        context.term()  # delivers queued verdicts (up to the sockets' linger)

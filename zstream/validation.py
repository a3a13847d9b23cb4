"""Validation stage: judge each frame's quality on its luma plane, in place in shared memory,
and encode the frames that passed for Redis.

Every camera is routed to one validation worker (see topology.Placement), so its frames
stay in order and its per-camera state lives in one process. The camera's output rate
picks the frames that go on to Redis. By default (`validation.frames = "output"`) capture has
passed over the others and only the frames sent on arrive; with "all" every frame arrives and
is measured, and those the output rate does not send are released here, counted as skipped
(output_rate) (README "Which frames are measured"). A frame that failed goes to the batcher as a
Verdict (for the QC stream); one that passed is scaled and encoded here (zstream.output),
where N workers share that work, and goes as an Output. Either way its slot is released
here: the batcher never reads shared memory.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from zstream.core.intake import DRAIN_IDLE_S, MessageIntake
from zstream.core.ring import Ring, RingCache
from zstream.core.vocabulary import DropReason, Metric, SkipReason, Stage
from zstream.core.wire import MAX_MESSAGE_BYTES, FrameMeta, FrameRef, Output, TapPart, Verdict, encode
from zstream.errors import RingError
from zstream.output import Encoder, Planes, TapInterest, TimeShare
from zstream.quality import CameraQuality
from zstream.rate import FpsCap
from zstream.rundir import PipelineWatcher
from zstream.stats import Counters, StatsReporter
from zstream.topology import Topology

log = logging.getLogger(__name__)
STAGE = Stage.VALIDATE
OUTPUT_HWM = 200  # frames queued for the batcher (each up to a raw frame's size), beside its own 200
BURST = 32  # frames taken per poll at most, before looking at the topology and the reporter
TAP_STAGE = Stage.TAP  # drops of the tap's own payloads (the frame still goes to Redis)


class Validator(MessageIntake):
    counters: Counters

    STAGE = STAGE
    EXPECTED = FrameRef

    def __init__(self, topology: Topology, index: int, context: zmq.Context, counters: Counters) -> None:
        self.topology = topology
        self.counters = counters
        self.rings = RingCache(topology.run_id)
        # Per-camera state (frozen detection, the camera's norm) is correct here because each
        # camera is routed to exactly one validation worker, which sees its frames in order.
        self._quality: dict[str, CameraQuality] = {}
        self._output: dict[str, FpsCap] = {}  # frames = "all": which frames go on to Redis
        self.encoder = Encoder(topology)
        self.tap_interest = TapInterest(Path(topology.run_dir))
        self.tap_share = TimeShare()
        self.apply(topology)
        self.pull = context.socket(zmq.PULL)
        # Per camera (each has its own pipe): with the sender's HWM, what may wait for us.
        self.pull.setsockopt(zmq.RCVHWM, topology.capture.queue_depth)
        self.pull.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.pull.bind(topology.endpoint(f"validate-{index}"))
        self.push = context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, OUTPUT_HWM)
        self.push.setsockopt(zmq.LINGER, 2000)
        self.push.connect(topology.endpoint("batch"))

    def apply(self, topology: Topology) -> None:
        """Follow live camera changes: new cameras get their state, changed thresholds apply
        from the next frame (a camera's frozen state and norm survive a threshold change)."""
        self.topology = topology
        self.every_frame = topology.validation.frames == "all"
        quality, output = {}, {}
        for camera in topology.cameras:
            thresholds, fps = topology.thresholds_for(camera), topology.output_fps_for(camera)
            kept, cap = self._quality.get(camera.id), self._output.get(camera.id)
            if kept is not None:  # frozen state and norm survive a change of thresholds
                kept.thresholds = thresholds
            quality[camera.id] = kept or CameraQuality(thresholds)
            output[camera.id] = cap if cap and cap.fps == fps else FpsCap(fps)
        self._quality, self._output = quality, output
        self.encoder.apply(topology)
        self.rings.refresh()

    def accept(self, ref: FrameRef) -> None:
        """Measure one frame in place; pass its verdict on, or (it passed) the frame encoded for
        Redis. The slot is released here whatever becomes of the frame; stale references are counted."""
        quality = self._quality.get(ref.camera)
        if quality is None:
            self.counters.drop(STAGE, DropReason.UNKNOWN_CAMERA, ref.camera)
            return
        try:
            ring = self.rings.get(ref.camera)
            self._check(ring, ref)
        except RingError as exc:
            self.counters.drop(STAGE, DropReason.BAD_REFERENCE, ref.camera)
            log.warning("camera %s: %s", ref.camera, exc)
            return
        except _Overwritten:
            self.counters.drop(STAGE, DropReason.OVERWRITTEN, ref.camera)
            return
        try:
            message = self._judge(ring, ref, quality)
        except _Overwritten:
            self.counters.drop(STAGE, DropReason.OVERWRITTEN, ref.camera)
            return
        finally:
            ring.release(ref.slot, ref.generation)
        if message is not None:
            try:
                self.push.send_multipart(message, zmq.NOBLOCK)  # a copy: cheaper than zero-copy's GC
            except zmq.Again:
                self.counters.drop(STAGE, DropReason.BATCHER_FULL, ref.camera)

    @staticmethod
    def _check(ring: Ring, ref: FrameRef) -> None:
        """That the slot still holds the frame `ref` announced."""
        if not ring.is_current(ref.slot, ref.generation):
            raise _Overwritten
        info = ring.info(ref.slot)
        if (info.seq, info.width, info.height) != (ref.seq, ref.width, ref.height):
            if not ring.is_current(ref.slot, ref.generation):  # rewritten between the two looks
                raise _Overwritten
            raise RingError(f"reference to slot {ref.slot} does not match what the slot holds")

    def _judge(self, ring: Ring, ref: FrameRef, quality: CameraQuality) -> list[Any] | None:
        """The message for the batcher (None: the frame goes no further, counted)."""
        # Stream time when there is one: a file read faster than real time freezes in stream
        # seconds, not wall-clock ones. (Time going back, on a restart, resets the state.)
        t = ref.pts if ref.pts is not None else ref.capture_ts
        # With frames = "output", capture has passed over the frames the output rate will not
        # send (CameraThread.follow_output_rate) and what arrives goes on: deciding again here
        # would turn away frames capture chose, once it had dropped one it chose before them.
        sent = not self.every_frame or self._output[ref.camera].admit(t)
        assessment = quality.assess(ring.planes(ref.slot)[0], t)
        if not ring.is_current(ref.slot, ref.generation):  # rewritten while we measured
            raise _Overwritten
        self._count(ref.camera, assessment.reasons)
        if not sent:
            self.counters.add(Metric.SKIPPED, ref.camera, SkipReason.OUTPUT_RATE)
            return None
        metrics = assessment.metrics.as_dict()
        if assessment.reasons:
            return [encode(Verdict(ref, metrics, assessment.reasons, time.time()))]
        return self._output_message(ring, ref, metrics)

    def _count(self, camera: str, reasons: tuple[str, ...]) -> None:
        # Counted before anything leaves: were this worker killed right after sending, the
        # batcher could write a frame that no count says was validated.
        self.counters.add(Metric.VALIDATED, camera)
        if reasons:
            self.counters.add(Metric.REJECTED, camera)  # frames, where "failed" counts reasons
        for reason in reasons:
            self.counters.add(Metric.FAILED, camera, reason)

    def _output_message(self, ring: Ring, ref: FrameRef, metrics: dict[str, float]) -> list[Any]:
        """[Output header, payload(, the tap's own payload)] of a frame that passed."""
        encoded, planes = self.encoder.encode(ring, ref)
        tap, tap_part = TapPart.NONE, b""
        if self.encoder.tap_format and self.tap_interest.wants(ref.camera):
            tap, tap_part = self._tap_payload(ref.camera, planes)
        if not ring.is_current(ref.slot, ref.generation):  # rewritten while we copied: torn
            raise _Overwritten
        meta = FrameMeta(
            ref.camera,
            ref.seq,
            ref.pts,
            ref.capture_ts,
            time.time(),
            encoded.width,
            encoded.height,
            encoded.encoding,
            encoded.pixel_format,
            encoded.shape,
            metrics,
        )
        header = encode(Output(meta, tap))
        return [header, encoded.data, tap_part] if tap is TapPart.ATTACHED else [header, encoded.data]

    def _tap_payload(self, camera: str, planes: Planes) -> tuple[TapPart, bytes]:
        """The tap's own payload, within its share of this worker's time (else shed, counted)."""
        if not self.tap_share.allows():
            self.counters.drop(TAP_STAGE, DropReason.BUSY, camera)
            return TapPart.SHED, b""
        start = time.monotonic()
        try:
            return TapPart.ATTACHED, self.encoder.tap_payload(planes)
        finally:
            self.tap_share.spent(time.monotonic() - start)

    def close(self) -> None:
        self.pull.close(linger=0)
        self.push.close()
        self.rings.close()


class _Overwritten(Exception):
    """The slot was rewritten (the camera lapped its ring) while we looked at it."""


def run(watcher: PipelineWatcher, index: int, stop: threading.Event, counters: Counters) -> None:
    """Body of validation worker `index`: validate until stopped, then drain what is queued."""
    topology, _ = watcher.read()
    context: zmq.Context = zmq.Context.instance()
    reporter = StatsReporter.for_worker(context, topology, f"validate-{index}", counters)
    validator = Validator(topology, index, context, counters)
    last_input = time.monotonic()
    try:
        while True:
            if validator.pull.poll(100):
                for _ in range(BURST):  # one poll for what is queued, not one per frame
                    try:
                        validator.handle(validator.pull.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
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

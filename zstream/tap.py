"""The tap: every validated frame, published on a ZeroMQ endpoint for people and tools to watch.

Wire format (README "Tap"): one multipart message per frame, [camera id, header, payload].
The camera id comes first so that a SUB socket's prefix filtering selects cameras (a prefix:
"cam-1" also matches "cam-10", so subscribers compare the id exactly too); the header is a
versioned msgpack map (`zstream.core.wire.TapFrame`); the payload is empty (`meta`), a JPEG file
(`jpeg`) or the decoded I420 frame (`raw`), as `tap.payload` says.

Publishing (`TapPublisher`, in the batcher, which receives every frame on its way to Redis)
must never slow the pipeline down:

- It is an XPUB socket, so the batcher sees the subscriptions and does no work at all for a
  camera nobody subscribes to. The tap's payload is the batch's own (same JPEG quality, or
  raw I420 for raw I420) wherever it can be; otherwise the validation workers make it
  (zstream.output), only for the cameras someone watches: the batcher announces its
  subscribers' prefixes in RUN_DIR/tap.wanted, which they read every 0.1 s (a frame validated
  before a new subscriber was seen is counted as `tap:subscribing`).
- Sends never block. Each subscriber may have `tap.hwm` frames queued; beyond that the tap
  sheds, and counts it. Plain PUB drops silently at the high-water mark, so the socket runs
  with ZMQ_XPUB_NODROP: a send that would overflow the queue of any subscriber matching the
  frame's camera fails at once (EAGAIN, NOBLOCK) and is counted as one `tap:subscriber_full`
  drop of that camera. Exact counting has a price: the message goes to all its subscribers or
  to none, so while one subscriber of a camera is full, the other subscribers of that camera
  miss its frames too (subscribers of other cameras are unaffected: matching is per message).
  The alternative within libzmq's options, re-sending a refused frame with NODROP off so that
  the others still get it, was measured and rejected: libzmq then marks the full subscriber
  inactive and skips it silently until it reads again, so what it misses is no longer counted
  (measured: 2 drops counted for 2,000 frames sent past a subscriber that read none). The tap
  is for watching the pipeline; a consumer that must not miss frames reads Redis. After a
  refusal the camera's frames are shed (and counted) for FULL_BACKOFF_S.
- Its work is bounded: the tap's own payloads may take TAP_TIME_SHARE of a validation
  worker's time; beyond that they are shed and counted (`tap:busy`) rather than delaying
  validation.
- Tap drops are counted as `dropped` with stage `tap`, but the frame still went to Redis:
  `zstream.stats.books` leaves them out.

The subscriber side, what `zstream tap` runs, is zstream.tap_viewer.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import zmq

from zstream.core.files import replace_file
from zstream.core.planes import i420_shape
from zstream.core.vocabulary import DropReason, Stage
from zstream.core.wire import FrameMeta, TapFrame, TapPart
from zstream.errors import ZStreamError
from zstream.output import CameraTopics, clear_tap_interest, tap_payload_format, write_tap_interest
from zstream.rundir import TAP_ENDPOINT_FILE
from zstream.security import CurveServer
from zstream.stats import Counters

if TYPE_CHECKING:
    from zstream.topology import Topology

log = logging.getLogger(__name__)
STAGE = Stage.TAP
ENDPOINT_FILE = TAP_ENDPOINT_FILE  # in the run dir: the address actually bound (port * resolved)
FULL_BACKOFF_S = 0.1  # after a refusal, the camera's frames are shed this long


class TapPublisher:
    """Publishes validated frames on the tap's XPUB socket; see the module docstring."""

    def __init__(
        self,
        socket: zmq.Socket,
        payload: str,
        counters: Counters,
        own_format: str | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.socket = socket
        self.payload = payload
        self.counters = counters
        self.own_format = own_format  # None: batch payloads serve as the tap's (tap_payload_format)
        self.run_dir = run_dir  # where the endpoint and the subscribers' prefixes are announced
        self.curve: CurveServer | None = None  # the ZAP thread checking subscribers' keys, if any
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._topics = CameraTopics()
        self._errors = 0
        self._full_until: dict[str, float] = {}

    @classmethod
    def open(
        cls, topology: Topology, counters: Counters, context: zmq.Context | None = None
    ) -> TapPublisher | None:
        """The tap of this topology, bound and announced in RUN_DIR/tap.endpoint; None when the
        topology has no tap, or (logged) when its address cannot be bound: the pipeline runs on
        without a tap rather than not at all."""
        settings = topology.tap
        if not settings.endpoint:
            return None
        context = context or zmq.Context.instance()
        socket = context.socket(zmq.XPUB)
        keys = topology.security.curve_keys
        try:
            curve = CurveServer(context, Path(keys)) if keys else None
        except ZStreamError as exc:
            socket.close(linger=0)
            log.error("tap: %s; running without the tap", exc)
            return None
        if curve is not None:
            curve.protect(socket)
        socket.setsockopt(zmq.SNDHWM, settings.hwm)
        socket.setsockopt(zmq.XPUB_NODROP, 1)
        socket.setsockopt(zmq.SNDTIMEO, 0)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            socket.bind(settings.endpoint)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            if curve is not None:
                curve.stop()
            log.error(
                "tap: cannot bind %s (%s); running without the tap "
                '(set tap.endpoint to a free address, or "" for none)',
                settings.endpoint,
                exc,
            )
            return None
        run_dir = Path(topology.run_dir)
        tap = cls(socket, settings.payload, counters, tap_payload_format(topology), run_dir)
        tap.curve = curve
        replace_file(run_dir / ENDPOINT_FILE, tap.endpoint + "\n")
        write_tap_interest(run_dir, frozenset())
        log.info("tap: publishing validated frames (%s) on %s", settings.payload, tap.endpoint)
        return tap

    def close(self) -> None:
        self.socket.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        if self.run_dir is not None:
            (self.run_dir / ENDPOINT_FILE).unlink(missing_ok=True)
            clear_tap_interest(self.run_dir)

    # ---- subscriptions ------------------------------------------------------------------

    def wants(self, camera: str) -> bool:
        """Whether any subscriber's prefix matches the camera id ("" matches every camera)."""
        self.follow_subscriptions()
        return self._topics.select(camera)

    def follow_subscriptions(self) -> None:
        """Take in subscriptions, and announce them to validation, which makes the tap's own
        payloads. The batcher calls this at each wake-up; publish() reads what it left."""
        # XPUB passes on the first subscription to a topic and the last unsubscription from it
        # (including those of subscribers that went away), so a set of topics is exact.
        while cast(int, self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            message: bytes = self.socket.recv(zmq.NOBLOCK)
            topic, topics = message[1:], self._topics.topics
            if message[:1] == b"\x01":
                self._topics.replace(topics | {topic})
            elif message[:1] == b"\x00":
                self._topics.replace(topics - {topic})
            else:
                continue  # not a subscription: nothing a subscriber may send us
            if self.run_dir is not None and self.own_format is not None:  # validation makes its payload
                write_tap_interest(self.run_dir, self._topics.topics)

    # ---- publishing ---------------------------------------------------------------------

    def publish(self, meta: FrameMeta, data: bytes, part: TapPart, own: bytes | None) -> None:
        """Publish a frame on its way to Redis (its batch metadata and payload `data`, and the
        tap's `own` payload when validation made one, as `part` says) to the subscribers of its
        camera. Never blocks, never raises."""
        if not self._topics.select(meta.camera):
            return
        if time.monotonic() < self._full_until.get(meta.camera, 0.0):  # a subscriber was full just now
            self.counters.drop(STAGE, DropReason.SUBSCRIBER_FULL, meta.camera)
            return
        try:
            payload = self._payload(meta, data, part, own)
            if payload is None:
                return
            body, pixel_format, shape = payload
            header = TapFrame.of(meta, self.payload, pixel_format, shape).encode()
            if not self._send([meta.camera.encode(), header, body]):
                self.counters.drop(STAGE, DropReason.SUBSCRIBER_FULL, meta.camera)
                self._full_until[meta.camera] = time.monotonic() + FULL_BACKOFF_S
        except Exception:  # the tap must never cost the pipeline a frame
            self.counters.drop(STAGE, DropReason.ERROR, meta.camera)
            self._errors += 1
            if self._errors in (1, 10, 100) or self._errors % 1000 == 0:
                log.exception(
                    "tap: cannot publish frame %d of camera %s (error %d)",
                    meta.seq,
                    meta.camera,
                    self._errors,
                )

    def _payload(
        self, meta: FrameMeta, data: bytes, part: TapPart, own: bytes | None
    ) -> tuple[bytes, str | None, tuple[int, ...] | None] | None:
        """The tap message's payload, pixel format and shape; None (counted where it must be)
        when there is none to send."""
        if self.payload == "meta":
            return b"", None, None
        raw = self.payload == "raw"
        pixel_format, shape = ("yuv420p", i420_shape(meta.width, meta.height)) if raw else ("bgr24", None)
        if self.own_format is None:  # the batch payload is the tap's too
            return data, pixel_format, meta.shape
        if part is TapPart.ATTACHED and own is not None:
            return own, pixel_format, shape or (meta.height, meta.width, 3)
        if part is TapPart.NONE:  # subscribed after validation looked (it looks every 0.1 s)
            self.counters.drop(STAGE, DropReason.SUBSCRIBING, meta.camera)
        return None  # TapPart.SHED: validation counted it

    def _send(self, parts: list[bytes]) -> bool:
        """Send one message without blocking; False (nothing sent) if the queue of a subscriber
        of this camera is full."""
        first, *rest = parts
        try:
            self.socket.send(first, zmq.NOBLOCK | zmq.SNDMORE)
        except zmq.Again:
            return False
        # The high-water mark counts whole messages: once the first part is taken, the rest is too.
        for index, part in enumerate(rest):
            self.socket.send(part, zmq.NOBLOCK | (zmq.SNDMORE if index < len(rest) - 1 else 0))
        return True


# ---- subscribers ----------------------------------------------------------------------------

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

The subscriber side (`TapSubscriber`, `run_tap`) is what `zstream tap` runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from zstream.core.files import replace_file
from zstream.core.planes import i420_planes, i420_shape, i420_size
from zstream.core.vocabulary import DropReason, Stage
from zstream.core.wire import FrameMeta, TapFrame, TapPart
from zstream.errors import WireError, ZStreamError
from zstream.output import clear_tap_interest, tap_payload_format, write_tap_interest
from zstream.pixels import jpeg_encode
from zstream.rundir import TAP_ENDPOINT_FILE
from zstream.security import CurveServer, curve_client
from zstream.stats import Counters

if TYPE_CHECKING:
    from zstream.topology import Topology

log = logging.getLogger(__name__)
STAGE = Stage.TAP
ENDPOINT_FILE = TAP_ENDPOINT_FILE  # in the run dir: the address actually bound (port * resolved)
SAVE_JPEG_QUALITY = 90  # raw tap frames saved by `zstream tap --save`
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
        self._topics: set[bytes] = set()
        self._wanted: dict[str, bool] = {}
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
        write_tap_interest(run_dir, set())
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
        self._read_subscriptions()
        return self._matches(camera)

    def _matches(self, camera: str) -> bool:
        """wants() as of the last look at the subscriptions (the batcher looks at each wake-up)."""
        wanted = self._wanted.get(camera)
        if wanted is None:
            key = camera.encode()
            wanted = self._wanted[camera] = any(key.startswith(topic) for topic in self._topics)
        return wanted

    def follow_subscriptions(self) -> None:
        """Take in subscriptions (and announce them to validation, which makes the tap's own
        payloads) without waiting for a frame to publish."""
        self._read_subscriptions()

    def _read_subscriptions(self) -> None:
        # XPUB passes on the first subscription to a topic and the last unsubscription from it
        # (including those of subscribers that went away), so a set of topics is exact.
        while self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            message = self.socket.recv(zmq.NOBLOCK)
            if message[:1] == b"\x01":
                self._topics.add(message[1:])
            elif message[:1] == b"\x00":
                self._topics.discard(message[1:])
            else:
                continue  # not a subscription: nothing a subscriber may send us
            self._wanted.clear()
            if self.run_dir is not None and self.own_format is not None:  # validation makes its payload
                write_tap_interest(self.run_dir, self._topics)

    # ---- publishing ---------------------------------------------------------------------

    def publish(self, meta: FrameMeta, data: bytes, part: TapPart, own: bytes | None) -> None:
        """Publish a frame on its way to Redis (its batch metadata and payload `data`, and the
        tap's `own` payload when validation made one, as `part` says) to the subscribers of its
        camera. Never blocks, never raises."""
        if not self._matches(meta.camera):
            return
        if time.monotonic() < self._full_until.get(meta.camera, 0.0):  # a subscriber was full just now
            self.counters.drop(STAGE, DropReason.SUBSCRIBER_FULL, meta.camera)
            return
        try:
            payload = self._payload(meta, data, part, own)
            if payload is None:
                return
            body, pixel_format, shape = payload
            header = TapFrame(
                meta.camera,
                meta.seq,
                meta.pts,
                meta.capture_ts,
                meta.validated_ts,
                meta.width,
                meta.height,
                self.payload,
                pixel_format,
                shape,
                meta.metrics,
            ).encode()
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


class TapSubscriber:
    """Frames of the chosen cameras (every camera when none is named) from a tap endpoint.

    ZeroMQ filters by prefix at the publisher; the camera id is compared exactly here.
    `rcvhwm` bounds what waits in this process: a slow reader is shed by the publisher,
    it does not grow without limit.
    """

    def __init__(
        self,
        endpoint: str,
        cameras: Sequence[str] = (),
        rcvhwm: int = 100,
        context: zmq.Context | None = None,
        keys: Path | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.cameras = frozenset(cameras)
        self.malformed = 0
        self.connected: bool | None = None  # None: no answer yet; False: refused or lost
        self.socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        events = zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED
        self._monitor = self.socket.get_monitor_socket(events)
        try:
            if keys is not None:  # a tap protected with CURVE (see zstream.security)
                curve_client(self.socket, keys)
            self.socket.connect(endpoint)  # ZMQError: not an endpoint
        except (zmq.ZMQError, ZStreamError):
            self.close()
            raise
        for camera in sorted(self.cameras) or [""]:
            self.socket.setsockopt(zmq.SUBSCRIBE, camera.encode())

    def receive(self, timeout_s: float) -> tuple[TapFrame, bytes] | None:
        """The next frame of a chosen camera and its payload, or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._watch_connection()
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.socket.poll(min(remaining_ms, 200)):
                if remaining_ms <= 200:
                    return None
                continue
            parts = self.socket.recv_multipart(zmq.NOBLOCK)
            if len(parts) != 3:
                self.malformed += 1
                continue
            camera, header, payload = parts
            if self.cameras and camera.decode(errors="replace") not in self.cameras:
                continue  # a longer id with a chosen one as its prefix
            try:
                frame = TapFrame.decode(header)
            except WireError:
                self.malformed += 1
                continue
            if frame.camera.encode() != camera:
                self.malformed += 1
                continue
            return frame, payload

    def _watch_connection(self) -> None:
        with contextlib.suppress(zmq.Again, zmq.ZMQError):
            while True:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
                self.connected = event == zmq.EVENT_CONNECTED

    def close(self) -> None:
        self.socket.disable_monitor()
        self._monitor.close(linger=0)
        self.socket.close(linger=0)

    def __enter__(self) -> TapSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_jpeg(frame: TapFrame, payload: bytes, quality: int = SAVE_JPEG_QUALITY) -> bytes:
    """The frame as a JPEG file: a jpeg payload as it came, a raw one encoded."""
    if frame.payload == "jpeg":
        return payload
    if frame.payload == "raw":
        return jpeg_encode(*_planes(frame, payload), quality)[0]
    raise ValueError(f"frame {frame.seq} of {frame.camera} carries no pixels (payload {frame.payload!r})")


def _planes(frame: TapFrame, payload: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width, height = frame.width, frame.height
    if len(payload) != i420_size(width, height):
        raise ValueError(f"raw payload of {len(payload)} bytes is not a {width}x{height} I420 frame")
    return i420_planes(payload, width, height)


# ---- zstream tap ----------------------------------------------------------------------------


@dataclass
class _CameraView:
    frames: int = 0
    since_print: int = 0
    fps: float = 0.0
    last_seq: int | None = None
    missed: int = 0  # seq numbers skipped between frames seen: failed QC, dropped, or shed
    size: str = ""
    payload: str = ""
    payload_bytes: int = 0
    saved: int = 0


class _RateTable:
    """Per-camera frames per second, printed as a small table once a second; on a terminal
    each table replaces the previous one."""

    def __init__(self, out: TextIO, cameras: Sequence[str]) -> None:
        self.out = out
        self.views: dict[str, _CameraView] = {camera: _CameraView() for camera in cameras}
        self.started = self._last = time.monotonic()
        self._redraw = _is_terminal(out)
        self._lines = 0

    def add(self, frame: TapFrame, payload: bytes) -> _CameraView:
        view = self.views.setdefault(frame.camera, _CameraView())
        view.frames += 1
        view.since_print += 1
        if view.last_seq is not None and frame.seq > view.last_seq + 1:
            view.missed += frame.seq - view.last_seq - 1
        view.last_seq = frame.seq
        view.size = f"{frame.width}x{frame.height}"
        view.payload, view.payload_bytes = frame.payload, len(payload)
        return view

    def print(self, now: float, final: bool = False) -> None:
        """The table; fps over the last second, or (`final`) over the whole run."""
        elapsed = max(now - (self.started if final else self._last), 1e-6)
        self._last = now
        for view in self.views.values():
            view.fps = (view.frames if final else view.since_print) / elapsed
            view.since_print = 0
        rows = [("camera", "fps", "frames", "last seq", "missed", "size", "payload", "saved")]
        for camera, view in self.views.items():
            rows.append(
                (
                    camera,
                    f"{view.fps:.1f}",
                    str(view.frames),
                    "-" if view.last_seq is None else str(view.last_seq),
                    str(view.missed),
                    view.size or "-",
                    f"{view.payload} {_size(view.payload_bytes)}" if view.payload else "-",
                    str(view.saved),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                cell.ljust(w) if i in (0, 5, 6) else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        if self._redraw and self._lines:
            self.out.write(f"\x1b[{self._lines}A\x1b[J")
        elif self._lines:
            lines.insert(0, "")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._lines = len(lines)


def _size(n: int) -> str:
    if n == 0:
        return ""
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def run_tap(
    endpoint: str,
    cameras: list[str],
    save_dir: Path | None,
    count: int | None,
    out: TextIO,
    *,
    wait_s: float = 5.0,
    keys: Path | None = None,
) -> int:
    """`zstream tap`: subscribe to `endpoint` (the chosen cameras, or all), print each camera's
    fps once a second, save frames as SAVE_DIR/<camera>/<seq>.jpg, stop after `count` frames in
    all or on Ctrl-C. Exit code: 0 done; 1 no frame within `wait_s` (nothing listening, or no
    frame of the chosen cameras) or frames cannot be saved; 2 not an endpoint, or --save on a tap
    that publishes metadata only. Problems are one line on `out`, never a traceback."""
    try:
        subscriber = TapSubscriber(endpoint, cameras, keys=keys)
    except ZStreamError as exc:
        print(f"zstream tap: {exc}", file=out)
        return 2
    except zmq.ZMQError as exc:
        print(
            f"zstream tap: {endpoint!r} is not a ZeroMQ endpoint ({exc}); expected e.g. tcp://127.0.0.1:5591",
            file=out,
        )
        return 2
    table = _RateTable(out, cameras)
    received = 0
    try:
        with subscriber:
            item = subscriber.receive(wait_s)
            if item is None:
                print(f"zstream tap: {_why_no_frames(subscriber, cameras, wait_s)}", file=out)
                return 1
            if save_dir is not None and item[0].payload == "meta":
                print(
                    f'zstream tap: {endpoint} publishes metadata only (tap.payload = "meta"): '
                    'there is nothing to save; set tap.payload to "jpeg" or "raw"',
                    file=out,
                )
                return 2
            next_print = time.monotonic() + 1.0
            while True:
                if item is not None:
                    frame, payload = item
                    view = table.add(frame, payload)
                    if save_dir is not None:
                        _save(save_dir, frame, payload)
                        view.saved += 1
                    received += 1
                    if count is not None and received >= count:
                        break
                now = time.monotonic()
                if now >= next_print:
                    table.print(now)
                    next_print = now + 1.0
                item = subscriber.receive(max(0.0, min(next_print - now, 0.25)))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as exc:
        print(f"zstream tap: cannot save frames to {save_dir}: {exc}", file=out)
        return 1
    table.print(time.monotonic(), final=True)
    saved = f", saved to {save_dir}" if save_dir is not None else ""
    print(f"zstream tap: {received} frames in {time.monotonic() - table.started:.1f} s{saved}", file=out)
    return 0


def _save(save_dir: Path, frame: TapFrame, payload: bytes) -> None:
    folder = save_dir / frame.camera
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{frame.seq}.jpg").write_bytes(to_jpeg(frame, payload))


def _why_no_frames(subscriber: TapSubscriber, cameras: Sequence[str], wait_s: float) -> str:
    subscriber._watch_connection()
    if not subscriber.connected:
        return (
            f"nothing answers at {subscriber.endpoint} (waited {wait_s:g} s): is `zstream up` running "
            "with its tap there? (tap.endpoint; RUN_DIR/tap.endpoint has the address bound)"
        )
    which = f"of camera {', '.join(cameras)} " if cameras else ""
    return (
        f"connected to {subscriber.endpoint}, but no frame {which}came in {wait_s:g} s "
        "(is the camera streaming, and are its frames passing QC?)"
    )

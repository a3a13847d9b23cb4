"""`zstream tap`: watch the tap's validated frames (see zstream.tap for what is published).

`TapSubscriber` receives the frames of the chosen cameras from a tap endpoint; `run_tap`
prints each camera's frame rate once a second and saves frames as JPEG files.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from zstream.core.planes import i420_planes, i420_size
from zstream.core.wire import TapFrame
from zstream.errors import WireError, ZStreamError
from zstream.pixels import jpeg_encode
from zstream.security import curve_client

SAVE_JPEG_QUALITY = 90  # raw tap frames saved by `zstream tap --save`


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
    subscriber = _subscribe(endpoint, cameras, keys, out)
    if subscriber is None:
        return 2
    table = _RateTable(out, cameras)
    try:
        with subscriber:
            first = subscriber.receive(wait_s)
            if first is None:
                print(f"zstream tap: {_why_no_frames(subscriber, cameras, wait_s)}", file=out)
                return 1
            if save_dir is not None and first[0].payload == "meta":
                print(
                    f'zstream tap: {endpoint} publishes metadata only (tap.payload = "meta"): '
                    'there is nothing to save; set tap.payload to "jpeg" or "raw"',
                    file=out,
                )
                return 2
            _show(subscriber, first, table, save_dir, count)
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as exc:
        print(f"zstream tap: cannot save frames to {save_dir}: {exc}", file=out)
        return 1
    table.print(time.monotonic(), final=True)
    received = sum(view.frames for view in table.views.values())
    saved = f", saved to {save_dir}" if save_dir is not None else ""
    print(f"zstream tap: {received} frames in {time.monotonic() - table.started:.1f} s{saved}", file=out)
    return 0


def _subscribe(endpoint: str, cameras: list[str], keys: Path | None, out: TextIO) -> TapSubscriber | None:
    """The subscriber, or None once the reason it cannot be made is printed."""
    try:
        return TapSubscriber(endpoint, cameras, keys=keys)
    except ZStreamError as exc:
        print(f"zstream tap: {exc}", file=out)
    except zmq.ZMQError as exc:
        print(
            f"zstream tap: {endpoint!r} is not a ZeroMQ endpoint ({exc}); expected e.g. tcp://127.0.0.1:5591",
            file=out,
        )
    return None


def _show(
    subscriber: TapSubscriber,
    item: tuple[TapFrame, bytes] | None,
    table: _RateTable,
    save_dir: Path | None,
    count: int | None,
) -> None:
    """Count, show and save frames from `item` on, until `count` of them (Ctrl-C: for ever)."""
    received = 0
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
                return
        now = time.monotonic()
        if now >= next_print:
            table.print(now)
            next_print = now + 1.0
        item = subscriber.receive(max(0.0, min(next_print - now, 0.25)))


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

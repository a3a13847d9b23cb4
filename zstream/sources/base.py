"""The one interface every camera protocol implements.

A source turns a URL into decoded I420 frames. It knows nothing of rings, sockets or
drop policies: the capture worker owns those. Keeping the interface this narrow is what
lets one capture loop serve files, RTSP and the synthetic generator alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """One decoded picture in planar I420 (yuv420p).

    The planes may be views into the decoder's own buffers (with row padding), valid
    only until the source produces its next frame: the capture worker copies them into
    shared memory at once, which is the only copy of the pixels on the way in.
    """

    width: int
    height: int
    y: np.ndarray  # (height, width) uint8, may be a strided view
    u: np.ndarray  # (ceil(height/2), ceil(width/2)) uint8
    v: np.ndarray  # (ceil(height/2), ceil(width/2)) uint8
    pts: float | None  # presentation time in seconds, None when the stream has none
    # Where a Resumable source can resume after this frame (a file: its time in the file,
    # whatever the loop); None for live sources.
    position: float | None = None


@dataclass(frozen=True)
class Decoding:
    """How FFmpeg decodes a camera (per camera in the topology).

    `skip_loop_filter` skips H.264/HEVC deblocking: ~20 % less decoding CPU, at a cost in picture
    quality that grows along each GOP, since reference frames are left unfiltered too (see
    README, Performance: measured with scripts/bench_skip_loop_filter.py)."""

    threads: int = 1
    keyframes_only: bool = False
    skip_loop_filter: bool = False


DEFAULT_DECODING = Decoding()


class FrameGate(Protocol):
    """What a source tells the capture worker about every frame, as early as it can.

    The gate applies the camera's fps cap. A source asks it before spending work on a
    frame: before decoding where packets decode independently (MJPEG, the synthetic
    scene), before converting otherwise, so a capped camera costs less than an uncapped one.
    """

    def admit(self, pts: float | None) -> bool:
        """A frame the stream has; True to deliver it. Counted either way (source fps)."""

    def corrupt(self) -> None:
        """A packet that did not decode was skipped (counted, never fatal)."""

    def reject(self, reason: str) -> None:
        """Input a pushing client sent that is not a frame of this camera (counted by reason)."""


class FrameSource(Protocol):
    """A camera stream. One instance per camera, used from one thread."""

    def open(self) -> None:
        """Connect or open the stream; raises SourceError with a masked URL on failure."""

    def frames(self, stop: threading.Event, gate: FrameGate) -> Iterator[DecodedFrame]:
        """Yield the frames `gate` admits until end of stream, an error (SourceError), or `stop`.

        Pacing (real-time playback of files, the synthetic frame rate) happens here, and
        any wait must return promptly once `stop` is set.
        """

    def close(self) -> None:
        """Release the stream; safe to call twice and after a failed open."""


@runtime_checkable
class Resumable(Protocol):
    """A recording that can continue after a frame it delivered before (files): a restarted
    capture worker resumes it there, so no picture reaches the pipeline twice."""

    def resume_after(self, pts: float, position: float) -> None:
        """Before frames(): deliver only what follows the frame of that pts and position."""


class Overshot(Exception):
    """A seek landed past the frame to resume after: the frames in between would be skipped."""


class ResumeGate:
    """A gate that turns away, uncounted, the frames up to `after` (a pts), then defers to `gate`.

    `limit`: the latest pts the first frame may have (after a seek); a later one raises Overshot,
    so that the source reads from further back instead of losing the frames in between."""

    def __init__(self, gate: FrameGate, after: float, limit: float | None = None) -> None:
        self.gate = gate
        self.after: float | None = after
        self.limit = limit

    def admit(self, pts: float | None) -> bool:
        if self.limit is not None and pts is not None:
            limit, self.limit = self.limit, None
            if pts > limit:
                raise Overshot(f"the first frame after the seek is at {pts:.3f} s, past {limit:.3f} s")
        if self.after is not None and pts is not None and pts <= self.after + 1e-6:
            return False
        self.after = None  # past it: everything from here on is new
        return self.gate.admit(pts)

    def corrupt(self) -> None:
        self.gate.corrupt()

    def reject(self, reason: str) -> None:
        self.gate.reject(reason)


class AdmitAll:
    """A gate that lets every frame through and counts: for tools, benchmarks and tests."""

    def __init__(self) -> None:
        self.seen = 0
        self.corrupt_packets = 0
        self.rejected: dict[str, int] = {}

    def admit(self, pts: float | None) -> bool:
        self.seen += 1
        return True

    def corrupt(self) -> None:
        self.corrupt_packets += 1

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class RealtimeClock:
    """Paces frames to their own timestamps: the frame at pts p is due at start + (p - p0) on the
    monotonic clock. The schedule is anchored once, so waits never accumulate drift; with
    `max_lag_s`, a source further behind than that starts a new schedule instead of bursting."""

    def __init__(self, max_lag_s: float | None = None) -> None:
        self.max_lag_s = max_lag_s
        self._anchor: tuple[float, float] | None = None  # (monotonic time, pts) of the first frame

    def wait(self, pts: float, stop: threading.Event) -> bool:
        """Wait until `pts` is due; False when `stop` was set meanwhile."""
        now = time.monotonic()
        self._anchor = self._anchor or (now, pts)
        start, first = self._anchor
        delay = start + (pts - first) - now
        if self.max_lag_s is not None and delay < -self.max_lag_s:
            self._anchor = (now, pts)
        return not stop.wait(max(0.0, delay))

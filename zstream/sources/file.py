"""Local video files (mp4, mkv, ts, ...): played once or looped, as fast as decoded or in real time.

Real-time pacing follows the stream's own timestamps, so a file stands in for a live
camera in tests and benchmarks; pts stays monotonic across loops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import av.error

from zstream.errors import mask_url
from zstream.sources.base import (
    DEFAULT_DECODING,
    DecodedFrame,
    Decoding,
    FrameGate,
    Overshot,
    RealtimeClock,
    ResumeGate,
)
from zstream.sources.pyav_decode import PyAVSource, to_decoded

log = logging.getLogger(__name__)


class FileSource(PyAVSource):
    def __init__(
        self,
        path: str,
        *,
        loop: bool = False,
        realtime: bool = True,
        decoding: Decoding = DEFAULT_DECODING,
    ) -> None:
        super().__init__(path, decoding=decoding)
        self.loop = loop
        self.realtime = realtime
        self._offset = 0.0
        self.corrupt_run_limit = None  # a corrupt stretch of a file is skipped: the file goes on
        self._first: float | None = None
        self._last: float | None = None
        self._resume: tuple[float, float] | None = None  # (pts, position) to continue after

    def frame_pts(self, seconds: float | None) -> float | None:
        """The file's time plus the loops already played; notes the pass's first and last."""
        if seconds is None:
            return None
        if self._first is None:
            self._first = seconds
        self._last = seconds
        return seconds + self._offset

    def resume_after(self, pts: float, position: float) -> None:
        self._resume = (pts, position)

    def frames(self, stop: threading.Event, gate: FrameGate) -> Iterator[DecodedFrame]:
        self._offset = 0.0  # added to the file's pts on each further loop, so pts keeps increasing
        clock = RealtimeClock()
        first_pass: float | None = None
        if self._resume is not None:
            (after, position), self._resume = self._resume, None
            self._offset = after - position  # the loops played before
            first_pass = self._seek(position)
            # A seek lands on the key frame at or before the position, except in files without
            # an index (MPEG-TS), where it may land on the next one: then read from the start.
            gate = ResumeGate(gate, after=after, limit=after + 1.5 * self._frame_duration())
        while not stop.is_set():
            self._first, first_pass = first_pass, None
            self._last = None
            try:
                for frame, pts in self.admitted(gate, stop):
                    if pts is not None and self.realtime and not clock.wait(pts, stop):
                        return
                    if stop.is_set():
                        return
                    yield to_decoded(frame, pts, frame.time)
            except Overshot as exc:
                log.info("%s: %s; resuming from the start of the file instead", mask_url(self.url), exc)
                self._rewind()
                continue
            if isinstance(gate, ResumeGate) and gate.limit is not None:  # the seek found no frame at all
                gate.limit = None
                self._rewind()
                continue
            if not self.loop or self._first is None or self._last is None:
                return
            self._offset += self._last - self._first + self._frame_duration()
            self._rewind()

    def _frame_duration(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return 1.0 / float(rate) if rate else 0.04

    def _seek(self, position: float) -> float:
        """Go to the key frame at or before `position` (seconds in the file); returns the file's
        start, which the loop's pass length counts from. Frames up to `position` still decode
        (from the key frame on) and the ResumeGate turns them away."""
        stream = self._stream
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        try:
            self._container.seek(int(position / stream.time_base), stream=stream, backward=True)
        except (av.error.FFmpegError, OSError):  # not seekable: read from the start instead
            self.open()
        return start

    def _rewind(self) -> None:
        try:
            self._container.seek(0)
        except (av.error.FFmpegError, OSError):  # not seekable: reopen instead
            self.open()

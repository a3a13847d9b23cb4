"""Local video files (mp4, mkv, ts, ...): played once or looped, as fast as decoded or in real time.

Real-time pacing follows the stream's own timestamps, so a file stands in for a live
camera in tests and benchmarks; pts stays monotonic across loops.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import av.error

from zstream.sources.base import DecodedFrame, FrameGate
from zstream.sources.pyav_decode import PyAVSource, RealtimeClock, to_decoded


class FileSource(PyAVSource):
    def __init__(
        self,
        path: str,
        *,
        loop: bool = False,
        realtime: bool = True,
        decoder_threads: int = 1,
        keyframes_only: bool = False,
    ) -> None:
        super().__init__(path, decoder_threads=decoder_threads, keyframes_only=keyframes_only)
        self.loop = loop
        self.realtime = realtime
        self._offset = 0.0
        self.corrupt_run_limit = None  # a corrupt stretch of a file is skipped: the file goes on
        self._first: float | None = None
        self._last: float | None = None

    def frame_pts(self, seconds: float | None) -> float | None:
        """The file's time plus the loops already played; notes the pass's first and last."""
        if seconds is None:
            return None
        if self._first is None:
            self._first = seconds
        self._last = seconds
        return seconds + self._offset

    def frames(self, stop: threading.Event, gate: FrameGate) -> Iterator[DecodedFrame]:
        self._offset = 0.0  # added to the file's pts on each further loop, so pts keeps increasing
        clock = RealtimeClock()
        while not stop.is_set():
            self._first = self._last = None
            for frame, pts in self.admitted(gate, stop):
                if pts is not None and self.realtime and not clock.wait(pts, stop):
                    return
                if stop.is_set():
                    return
                yield to_decoded(frame, pts)
            if not self.loop or self._first is None or self._last is None:
                return
            self._offset += self._last - self._first + self._frame_duration()
            self._rewind()

    def _frame_duration(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return 1.0 / float(rate) if rate else 0.04

    def _rewind(self) -> None:
        try:
            self._container.seek(0)
        except (av.error.FFmpegError, OSError):  # not seekable: reopen instead
            self.open()

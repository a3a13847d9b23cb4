"""Cameras over HTTP(S) that FFmpeg demuxes: MJPEG (multipart/x-mixed-replace, older IP
cameras), HLS playlists (.m3u8, live and VOD, video-management systems and public traffic
feeds) and progressive MP4/TS.

A recording (a stream with a known duration: HLS VOD, a file over HTTP) is paced to its own
timestamps when `realtime` is set and ends like a file. A live stream is paced by the server,
and its end means the camera went away: the capture loop reconnects.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from zstream.errors import SourceError, mask_url
from zstream.sources.base import DEFAULT_DECODING, DecodedFrame, Decoding, FrameGate, RealtimeClock
from zstream.sources.pyav_decode import PyAVSource, to_decoded

# Formats whose timestamps FFmpeg makes up (MJPEG has none): their frames carry pts None, so
# the fps cap and latency figures use the arrival time instead of a fictitious 25 fps.
UNTIMED_FORMATS = frozenset({"mpjpeg", "mjpeg"})


class HttpSource(PyAVSource):
    def __init__(
        self,
        url: str,
        *,
        realtime: bool = True,
        decoding: Decoding = DEFAULT_DECODING,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(url, decoding=decoding, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s)
        self.realtime = realtime

    def open(self) -> None:
        super().open()
        self._timed = self._container.format.name not in UNTIMED_FORMATS

    def frame_pts(self, seconds: float | None) -> float | None:
        return seconds if self._timed else None

    def frames(self, stop: threading.Event, gate: FrameGate) -> Iterator[DecodedFrame]:
        recording = self._container.duration is not None
        self.corrupt_run_limit = None if recording else PyAVSource.corrupt_run_limit
        clock = RealtimeClock()
        for frame, pts in self.admitted(gate, stop):
            if recording and self.realtime and pts is not None and not clock.wait(pts, stop):
                return
            if stop.is_set():
                return
            yield to_decoded(frame, pts)
        if not recording and not stop.is_set():
            raise SourceError(f"{mask_url(self.url)}: the server ended the stream")

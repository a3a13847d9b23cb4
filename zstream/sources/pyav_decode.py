"""Demuxing and decoding with PyAV, shared by the protocols FFmpeg opens for us (file, RTSP).

Frames stay in the decoder's planar format: the planes handed on are views into
PyAV's buffers, so the only copy is the capture worker's copy into shared memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import av
import av.error
import numpy as np

from zstream.errors import SourceError, SourceRejected, mask_url
from zstream.sources.base import DEFAULT_DECODING, DecodedFrame, Decoding, FrameGate

log = logging.getLogger(__name__)

# Layouts that are byte-for-byte I420; yuvj420p differs only in its (full) colour range.
I420_FORMATS = frozenset({"yuv420p", "yuvj420p"})


def open_container(
    url: str,
    options: dict[str, str],
    open_timeout_s: float,
    read_timeout_s: float,
    container_format: str | None = None,
    recording: bool = False,
) -> Any:
    """av.open with timeouts, converting FFmpeg's errors into SourceError with the URL masked.

    Data FFmpeg cannot make sense of is a refusal for a recording (its bytes will be the same on
    the next try); from a network peer it may be a passing fault, so it is retried with back-off."""
    try:
        return av.open(
            url, format=container_format, options=options, timeout=(open_timeout_s, read_timeout_s)
        )
    except REJECTIONS as exc:
        raise SourceRejected(f"cannot open {mask_url(url)}: {_describe(exc)}{_hint(exc)}") from exc
    except av.error.InvalidDataError as exc:
        error = SourceRejected if recording else SourceError
        raise error(f"cannot open {mask_url(url)}: {_describe(exc)}{NOT_VIDEO}") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {mask_url(url)}: {_describe(exc)}") from exc


NOT_VIDEO = " (not a video FFmpeg can read)"
# FFmpeg renders text files (its "tty" demuxer, by extension) as "video" of ANSI art: not a camera.
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


def video_stream(container: Any, url: str, decoding: Decoding) -> Any:
    if not container.streams.video:
        raise SourceRejected(f"{mask_url(url)} has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context.name in TEXT_CODECS:
        raise SourceRejected(
            f"{mask_url(url)}: FFmpeg reads it as text ({stream.codec_context.name}), not video"
        )
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = decoding.threads
    if decoding.keyframes_only:  # the decoder skips the other frames without decoding them
        stream.codec_context.skip_frame = "NONKEY"
    if decoding.skip_loop_filter:  # PyAV has no attribute for it; an unknown name would be ignored
        stream.codec_context.options = {"skip_loop_filter": "all"}
    return stream


def to_decoded(frame: Any, pts: float | None, position: float | None = None) -> DecodedFrame:
    """Plane views of an av.VideoFrame (converted to I420 first only if it is not already)."""
    if frame.format.name not in I420_FORMATS:
        frame = frame.reformat(format="yuv420p")
    y, u, v = (_plane_view(plane) for plane in frame.planes[:3])
    return DecodedFrame(frame.width, frame.height, y, u, v, pts, position)


def _plane_view(plane: Any) -> np.ndarray:
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


# The camera answered and said no: a fast retry cannot help (4xx, a codec or format we lack).
REJECTIONS = (
    av.error.HTTPClientError,
    av.error.DecoderNotFoundError,
    av.error.DemuxerNotFoundError,
    av.error.ProtocolNotFoundError,
)


def _hint(exc: BaseException) -> str:
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return " (authentication refused: check the user and password in the URL)"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return " (no such stream: check the path)"
    return ""


def _describe(exc: BaseException) -> str:
    """FFmpeg's message without the URL it sometimes appends (which may hold a password)."""
    if isinstance(exc, av.error.FFmpegError):
        return exc.strerror or type(exc).__name__
    return str(exc)


class PyAVSource:
    """What every source FFmpeg opens for us shares: opening with timeouts, the decode loop
    that asks the gate first and skips corrupt packets, closing. Subclasses add their
    options, their notion of a frame's time, and their frames()."""

    def __init__(
        self,
        url: str,
        *,
        decoding: Decoding = DEFAULT_DECODING,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.decoding = decoding
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._container: Any = None

    container_format: str | None = None  # FFmpeg's demuxer, when it cannot be guessed from the URL
    ended = "the server ended the stream"  # why a live stream stopped, when it stops by itself
    # A live stream whose packets keep failing to decode, without one frame in between, has
    # changed under the decoder (a camera switched codec, its encoder restarted with other
    # parameters; the decoder rejects some such packets and silently drops the rest): reconnecting
    # probes it afresh. None for recordings: a corrupt stretch of a file is skipped, not re-read.
    corrupt_run_limit: int | None = 25

    def options(self) -> dict[str, str]:
        """FFmpeg options for av.open."""
        return {}

    def frame_pts(self, seconds: float | None) -> float | None:
        """A frame's pts as delivered, from its time in the stream (None when unknown)."""
        return seconds

    def open(self) -> None:
        self.close()
        self._container = open_container(
            self.url,
            self.options(),
            self.open_timeout_s,
            self.read_timeout_s,
            self.container_format,
            recording=self.corrupt_run_limit is None,
        )
        self._stream = video_stream(self._container, self.url, self.decoding)

    def admitted(
        self, gate: FrameGate, stop: threading.Event | None = None
    ) -> Iterator[tuple[Any, float | None]]:
        """(av.VideoFrame, pts) of the frames `gate` admits, until the end of the stream or `stop`.

        Where every packet is a whole picture (MJPEG), the gate is asked before decoding,
        so frames over a camera's fps cap cost no decoding at all. A packet that fails to
        decode is skipped and reported instead of ending the stream; `corrupt_run_limit` of
        them with no frame decoded in between end it (SourceError). `stop` is looked at on every
        packet, so a stream that yields no frame (all corrupt, all over the fps cap) still stops.
        """
        if self._container is None:
            raise SourceError(f"{mask_url(self.url)}: read before open()")
        intra_only = bool(self._stream.codec_context.codec.intra_only)
        jpeg = self._stream.codec_context.name == "mjpeg"
        corrupt_run = 0
        decoded_any = False  # since open(): a stream none of whose data decodes is refused
        try:
            for packet in self._container.demux(self._stream):
                if stop is not None and stop.is_set():
                    return
                if intra_only and packet.size and not gate.admit(self.frame_pts(_packet_time(packet))):
                    continue
                try:
                    # A JPEG cut short decodes "fine": FFmpeg fills what is missing from an older
                    # picture's buffer, a torn frame. It is skipped as corrupt instead.
                    frames = packet.decode() if not (jpeg and packet.size and _cut_jpeg(packet)) else None
                except av.error.InvalidDataError:
                    frames = None
                if frames is None:
                    gate.corrupt()
                    corrupt_run += 1
                    if self.corrupt_run_limit is not None and corrupt_run >= self.corrupt_run_limit:
                        if not decoded_any:
                            raise SourceRejected(
                                f"{mask_url(self.url)}: none of its first {corrupt_run} packets decoded"
                                f"{NOT_VIDEO}"
                            ) from None
                        raise SourceError(
                            f"{mask_url(self.url)}: {corrupt_run} packets did not decode and not one "
                            "frame did in between (did the camera change codec?)"
                        ) from None
                    continue
                if frames:
                    corrupt_run, decoded_any = 0, True
                for frame in frames:
                    pts = self.frame_pts(frame.time)
                    if intra_only or gate.admit(pts):
                        yield frame, pts
        except av.error.InvalidDataError as exc:
            error = SourceRejected if not decoded_any and self.corrupt_run_limit is None else SourceError
            raise error(f"reading {mask_url(self.url)} failed: {_describe(exc)}{NOT_VIDEO}") from exc
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"reading {mask_url(self.url)} failed: {_describe(exc)}") from exc
        if corrupt_run and not decoded_any:  # a recording: read to its end, and nothing decoded
            raise SourceRejected(f"{mask_url(self.url)}: not one of its packets decoded{NOT_VIDEO}")

    def frames(self, stop: threading.Event, gate: FrameGate) -> Iterator[DecodedFrame]:
        """A live stream's frames. It has no end of its own: when it stops, the camera went
        away, and the error makes the capture loop reconnect."""
        for frame, pts in self.admitted(gate, stop):
            if stop.is_set():
                return
            yield to_decoded(frame, pts)
        if stop.is_set():
            return
        raise SourceError(f"{mask_url(self.url)}: {self.ended}")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _cut_jpeg(packet: Any) -> bool:
    """Whether a JPEG lacks its end (EOI) after its last scan (SOS): truncated in transit. Markers
    cannot occur inside entropy-coded data (0xFF is stuffed there), and an EXIF thumbnail's EOI
    comes before the main scan."""
    view = memoryview(packet)
    if view[-2:] == b"\xff\xd9":  # the common case, a whole JPEG: no copy, no scan
        return False
    data = bytes(view)
    scan = data.rfind(b"\xff\xda")
    return scan < 0 or data.rfind(b"\xff\xd9") < scan


def _packet_time(packet: Any) -> float | None:
    if packet.pts is None or packet.time_base is None:
        return None
    return float(packet.pts * packet.time_base)

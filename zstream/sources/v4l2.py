"""V4L2 devices (/dev/videoN): USB and CSI cameras on a roadside edge box, through FFmpeg's
v4l2 demuxer.

A USB camera comes and goes with its cable, so a missing device is a reconnect, not a
failure; a node that is not a capture device, or that we may not open, is refused (no
amount of retrying fixes permissions). The device's own format is kept: MJPEG cameras
decode like any other intra-only stream, so an fps cap skips their decoding too.
"""

from __future__ import annotations

import errno

import av.error

from zstream.errors import SourceError, SourceRejected
from zstream.sources.pyav_decode import PyAVSource

# errno -> (refused for good?, what to tell the operator)
OPEN_ERRORS = {
    errno.ENOENT: (False, "no such device (unplugged?)"),
    errno.ENODEV: (False, "the device went away (unplugged?)"),
    errno.EBUSY: (False, "busy: another program is capturing from it"),
    errno.ENOTTY: (True, "not a V4L2 capture device"),
    errno.EACCES: (True, "permission denied: run as a member of the device's group (usually 'video')"),
    errno.EPERM: (True, "permission denied: run as a member of the device's group (usually 'video')"),
}


class V4l2Source(PyAVSource):
    container_format = "v4l2"
    ended = "the device stopped delivering frames"

    def open(self) -> None:
        try:
            super().open()
        except SourceError as exc:
            raise _explained(self.url, exc) from exc


def _explained(device: str, exc: SourceError) -> SourceError:
    """The open error with what it means for a device, refused or retried by its errno."""
    cause = exc.__cause__
    code = cause.errno if isinstance(cause, av.error.FFmpegError | OSError) else None
    if code not in OPEN_ERRORS:
        return exc
    refused, meaning = OPEN_ERRORS[code]
    return (SourceRejected if refused else SourceError)(f"cannot open {device}: {meaning}")

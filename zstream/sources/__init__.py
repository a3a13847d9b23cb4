"""Camera protocols, one module each, behind the FrameSource interface in `base`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zstream.envrefs import MissingVariable, expand
from zstream.errors import SourceRejected
from zstream.sources.base import AdmitAll, DecodedFrame, FrameGate, FrameSource

if TYPE_CHECKING:
    from zstream.topology import Camera, Topology

__all__ = ["AdmitAll", "DecodedFrame", "FrameGate", "FrameSource", "open_source"]


def open_source(camera: Camera, topology: Topology) -> FrameSource:
    """The source for a camera's URL scheme (the topology has already checked the scheme), with
    the URL's `${NAME}` references to the environment filled in (see zstream.envrefs).

    Modules are imported here, on first use, so a pipeline of RTSP cameras never loads
    the WebRTC stack.
    """
    try:
        camera = camera.model_copy(update={"url": expand(camera.url)})
    except MissingVariable as exc:  # it will not appear in this process: retrying cannot help
        raise SourceRejected(f"camera {camera.id}: its URL needs {exc}") from exc
    capture = topology.capture
    timeouts = {"open_timeout_s": capture.open_timeout_s, "read_timeout_s": capture.read_timeout_s}
    decoding = {
        "decoder_threads": topology.decoder_threads_for(camera),
        "keyframes_only": camera.keyframes_only,
    }
    scheme = camera.scheme
    if scheme == "synthetic":
        from zstream.sources.synthetic import SyntheticSource

        return SyntheticSource(camera.url, camera.id)
    if scheme == "rtsp":
        from zstream.sources.rtsp import RtspSource

        return RtspSource(camera.url, transport=camera.transport or "tcp", **timeouts, **decoding)
    if scheme == "onvif":
        from zstream.sources.onvif import OnvifSource

        return OnvifSource(camera.url, transport=camera.transport or "tcp", **timeouts, **decoding)
    if scheme == "http":
        from zstream.sources.http import HttpSource

        return HttpSource(camera.url, realtime=camera.realtime, **timeouts, **decoding)
    if scheme == "whep":
        from zstream.sources.whep import WhepSource

        return WhepSource(camera.url, **timeouts)
    if scheme == "v4l2":
        from zstream.sources.v4l2 import V4l2Source

        return V4l2Source(camera.url, **timeouts, **decoding)
    from zstream.sources.file import FileSource

    return FileSource(camera.url, loop=camera.loop, realtime=camera.realtime, **decoding)

"""Camera protocols, one module each, behind the FrameSource interface in `base`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zstream.envrefs import MissingVariable, expand
from zstream.errors import SourceRejected
from zstream.sources.base import AdmitAll, DecodedFrame, Decoding, FrameGate, FrameSource, Resumable

if TYPE_CHECKING:
    from zstream.topology import Camera, Topology

__all__ = ["AdmitAll", "DecodedFrame", "FrameGate", "FrameSource", "Resumable", "open_source"]


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
        "decoding": Decoding(
            topology.decoder_threads_for(camera), camera.keyframes_only, camera.skip_loop_filter
        )
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
    if scheme == "zmq":
        from zstream.sources.zmq_hub import ZmqSource, hub_key, message_limit

        key = hub_key(camera.url)
        sizes = [c.max_size or capture.max_size for c in topology.cameras if hub_key(c.url) == key]
        return ZmqSource(
            camera.url,
            camera.id,
            max_size=camera.max_size or capture.max_size,
            curve_keys=topology.security.curve_keys,
            message_limit=message_limit(sizes),
        )
    if scheme == "v4l2":
        from zstream.sources.v4l2 import V4l2Source

        return V4l2Source(camera.url, **timeouts, **decoding)
    from zstream.sources.file import FileSource

    return FileSource(camera.url, loop=camera.loop, realtime=camera.realtime, **decoding)

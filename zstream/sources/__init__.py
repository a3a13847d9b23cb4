"""Camera protocols, one module each, behind the FrameSource interface in `base`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zstream.sources.base import DecodedFrame, FrameSource

if TYPE_CHECKING:
    from zstream.topology import Camera, Topology

__all__ = ["DecodedFrame", "FrameSource", "open_source"]


def open_source(camera: Camera, topology: Topology) -> FrameSource:
    """The source for a camera's URL scheme (the topology has already checked the scheme)."""
    threads = topology.decoder_threads_for(camera)
    if camera.scheme == "synthetic":
        from zstream.sources.synthetic import SyntheticSource

        return SyntheticSource(camera.url, camera.id)
    if camera.scheme == "rtsp":
        from zstream.sources.rtsp import RtspSource

        return RtspSource(
            camera.url,
            open_timeout_s=topology.capture.open_timeout_s,
            read_timeout_s=topology.capture.read_timeout_s,
            decoder_threads=threads,
            keyframes_only=camera.keyframes_only,
        )
    if camera.scheme == "http":
        from zstream.sources.http import HttpSource

        return HttpSource(
            camera.url,
            realtime=camera.realtime,
            decoder_threads=threads,
            keyframes_only=camera.keyframes_only,
            open_timeout_s=topology.capture.open_timeout_s,
            read_timeout_s=topology.capture.read_timeout_s,
        )
    from zstream.sources.file import FileSource

    return FileSource(
        camera.url,
        loop=camera.loop,
        realtime=camera.realtime,
        decoder_threads=threads,
        keyframes_only=camera.keyframes_only,
    )

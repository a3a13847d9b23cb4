"""Camera protocols, one module each, behind the FrameSource interface in `base`.

Sources know nothing of the topology: the capture stage picks and configures one per camera
(`zstream.capture.open_source`).
"""

from __future__ import annotations

from zstream.sources.base import AdmitAll, DecodedFrame, Decoding, FrameGate, FrameSource, Resumable

__all__ = ["AdmitAll", "DecodedFrame", "Decoding", "FrameGate", "FrameSource", "Resumable"]

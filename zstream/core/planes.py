"""The I420 (yuv420p) frame layout, the format frames keep from decoder to Redis.

One frame is its Y plane (height x width) followed by its U and V planes, each
ceil(width/2) x ceil(height/2) (odd sizes round up as FFmpeg does), back to back.
"""

from __future__ import annotations

import numpy as np


def chroma_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of each I420 chroma plane; odd sizes round up as FFmpeg does."""
    return (width + 1) // 2, (height + 1) // 2


def i420_size(width: int, height: int) -> int:
    """Bytes of one I420 frame of this size."""
    cw, ch = chroma_size(width, height)
    return width * height + 2 * cw * ch


def i420_shape(width: int, height: int) -> tuple[int, ...]:
    """numpy shape of a raw I420 payload: 2-D (h*3/2, w) when even, flat otherwise."""
    if width % 2 == 0 and height % 2 == 0:
        return (height * 3 // 2, width)
    return (i420_size(width, height),)


def i420_planes(
    buffer: np.ndarray | bytes | memoryview, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U and V views (no copy) of an I420 frame at the start of `buffer`: an array of any
    shape (cv2's COLOR_BGR2YUV_I420 output, a shared-memory slot longer than the frame) or bytes.

    Split by bytes, not rows: a chroma plane is a quarter of a row short when height % 4 == 2.
    Raises ValueError when the buffer is shorter than the frame.
    """
    flat = np.frombuffer(buffer, np.uint8) if isinstance(buffer, bytes | memoryview) else buffer.reshape(-1)
    cw, ch = chroma_size(width, height)
    y_end = width * height
    u_end = y_end + cw * ch
    v_end = u_end + cw * ch
    if flat.size < v_end:
        raise ValueError(f"{flat.size} bytes are too few for a {width}x{height} I420 frame ({v_end})")
    return (
        flat[:y_end].reshape(height, width),
        flat[y_end:u_end].reshape(ch, cw),
        flat[u_end:v_end].reshape(ch, cw),
    )

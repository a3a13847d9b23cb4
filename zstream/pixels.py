"""Pixel format conversions, done only where frames leave the pipeline (Redis, taps, consumers).

Inside the pipeline frames stay I420 as decoded: converting to BGR costs as much as
decoding (FIELD-NOTES: PyAV to bgr24 halves 720p throughput), so it happens once, at the exit.
"""

from __future__ import annotations

import cv2
import numpy as np
import simplejpeg

_CONVERSIONS = {"bgr24": cv2.COLOR_YUV2BGR_I420, "rgb24": cv2.COLOR_YUV2RGB_I420}


def i420_to_color(y: np.ndarray, u: np.ndarray, v: np.ndarray, pixel_format: str = "bgr24") -> np.ndarray:
    """(h, w, 3) uint8 BGR or RGB. Odd sizes are padded by one edge row/column to the
    even size OpenCV's I420 conversion needs, then cropped back."""
    height, width = y.shape
    even_w, even_h = width + width % 2, height + height % 2
    if (even_w, even_h) != (width, height):
        y = np.pad(y, ((0, even_h - height), (0, even_w - width)), mode="edge")
    stacked = np.concatenate(
        [y.reshape(-1), np.ascontiguousarray(u).reshape(-1), np.ascontiguousarray(v).reshape(-1)]
    )
    color = cv2.cvtColor(stacked.reshape(even_h * 3 // 2, even_w), _CONVERSIONS[pixel_format])
    return color[:height, :width]


# JPEG (JFIF) stores full-range YCbCr; decoders give I420 in video range (luma 16..235,
# chroma 16..240), which OpenCV's I420 conversion also assumes. Expanding the planes' range
# lets libjpeg-turbo encode them as they are: no BGR frame, no colour conversion either way.
# (scale, offset) of that expansion; cv2.addWeighted rounds and saturates as a table built with
# np.round and np.clip would (every value checked in tests/test_pixels.py), at half cv2.LUT's cost.
LUMA_TO_FULL = (255 / 219, -16 * 255 / 219)
CHROMA_TO_FULL = (255 / 224, 128 - 128 * 255 / 224)


def to_full_range(plane: np.ndarray, expansion: tuple[float, float]) -> np.ndarray:
    scale, offset = expansion
    return cv2.addWeighted(plane, scale, plane, 0.0, offset)


def jpeg_encode(y: np.ndarray, u: np.ndarray, v: np.ndarray, quality: int) -> tuple[bytes, tuple[int, ...]]:
    """JPEG bytes of the frame, and the shape cv2.imdecode will give back (BGR)."""
    encoded = simplejpeg.encode_jpeg_yuv_planes(
        to_full_range(y, LUMA_TO_FULL),
        to_full_range(u, CHROMA_TO_FULL),
        to_full_range(v, CHROMA_TO_FULL),
        quality=quality,
    )
    return encoded, (y.shape[0], y.shape[1], 3)


def output_size(width: int, height: int, output_width: int) -> tuple[int, int]:
    """The size a frame is written out at: `output_width` wide, aspect kept, even (I420);
    frames already that narrow are never scaled up, nor are they with output_width 0."""
    if not output_width or output_width >= width:
        return width, height
    return output_width, max(2, round(height * output_width / width / 2) * 2)


def scale_i420(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The planes at `width` x `height` (even); the same views when that is their size.
    Area averaging: what a downscale should do to sensor noise and edges alike."""
    if y.shape == (height, width):
        return y, u, v
    chroma = (width // 2, height // 2)
    return (
        cv2.resize(y, (width, height), interpolation=cv2.INTER_AREA),
        cv2.resize(u, chroma, interpolation=cv2.INTER_AREA),
        cv2.resize(v, chroma, interpolation=cv2.INTER_AREA),
    )


def i420_bytes(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> bytes:
    """The planes back to back, the raw yuv420p payload."""
    return b"".join(np.ascontiguousarray(plane).tobytes() for plane in (y, u, v))

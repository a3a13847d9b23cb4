"""Pixel format conversions, done only where frames leave the pipeline (Redis, taps, consumers).

Inside the pipeline frames stay I420 as decoded: converting to BGR costs as much as
decoding (FIELD-NOTES: PyAV to bgr24 halves 720p throughput), so it happens once, at the exit.
"""

from __future__ import annotations

import cv2
import numpy as np

from zstream.sources.base import chroma_size

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


def jpeg_encode(y: np.ndarray, u: np.ndarray, v: np.ndarray, quality: int) -> tuple[bytes, tuple[int, ...]]:
    """JPEG bytes of the frame, and the shape cv2.imdecode will give back."""
    bgr = i420_to_color(y, u, v, "bgr24")
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding of a {bgr.shape[1]}x{bgr.shape[0]} frame failed")
    return encoded.tobytes(), bgr.shape


def i420_shape(width: int, height: int) -> tuple[int, ...]:
    """numpy shape of a raw I420 payload: 2-D (h*3/2, w) when even, flat otherwise."""
    cw, ch = chroma_size(width, height)
    if width % 2 == 0 and height % 2 == 0:
        return (height * 3 // 2, width)
    return (width * height + 2 * cw * ch,)

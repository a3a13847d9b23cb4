"""Conversions at the pipeline's exits: same pixels as OpenCV's, for even and odd sizes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zstream.pixels import i420_shape, i420_to_color, jpeg_encode
from zstream.sources.base import chroma_size


def planes(width: int, height: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cw, ch = chroma_size(width, height)
    return (
        rng.integers(16, 236, (height, width), dtype=np.uint8),
        rng.integers(16, 240, (ch, cw), dtype=np.uint8),
        rng.integers(16, 240, (ch, cw), dtype=np.uint8),
    )


def test_even_frames_convert_exactly_like_opencv() -> None:
    y, u, v = planes(64, 48)
    stacked = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(72, 64)
    assert np.array_equal(i420_to_color(y, u, v, "bgr24"), cv2.cvtColor(stacked, cv2.COLOR_YUV2BGR_I420))
    assert np.array_equal(i420_to_color(y, u, v, "rgb24"), cv2.cvtColor(stacked, cv2.COLOR_YUV2RGB_I420))


@pytest.mark.parametrize("size", [(33, 17), (64, 31), (15, 64), (17, 17)])
def test_odd_frames_match_the_even_frame_they_are_cropped_from(size: tuple[int, int]) -> None:
    width, height = size
    y, u, v = planes(width + width % 2, height + height % 2)
    even = i420_to_color(y, u, v)
    odd = i420_to_color(np.ascontiguousarray(y[:height, :width]), u, v)
    assert odd.shape == (height, width, 3)
    assert np.array_equal(odd, even[:height, :width])


def test_jpeg_round_trip_is_close_and_shaped() -> None:
    y, u, v = planes(64, 48)
    y[:] = cv2.GaussianBlur(y, (9, 9), 3)  # JPEG is lossy: compare a smooth picture
    data, shape = jpeg_encode(y, u, v, 95)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == shape == (48, 64, 3)
    assert data[:2] == b"\xff\xd8"


def test_raw_shapes() -> None:
    assert i420_shape(64, 48) == (72, 64)
    assert i420_shape(33, 17) == (33 * 17 + 2 * 17 * 9,)

"""Conversions at the pipeline's exits: same pixels as OpenCV's, for even and odd sizes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zstream.core.planes import chroma_size, i420_shape
from zstream.pixels import (
    CHROMA_TO_FULL,
    LUMA_TO_FULL,
    i420_bytes,
    i420_to_color,
    jpeg_encode,
    output_size,
    scale_i420,
    to_full_range,
)


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


@pytest.mark.parametrize(
    ("size", "width", "expected"),
    [
        ((1280, 720), 640, (640, 360)),
        ((1920, 1080), 640, (640, 360)),
        ((1280, 1024), 640, (640, 512)),
        ((704, 576), 640, (640, 524)),  # 523.6: rounded to the nearest even height
        ((320, 240), 640, (320, 240)),  # narrower already: never scaled up
        ((1280, 720), 0, (1280, 720)),  # 0: as captured
    ],
)
def test_output_size_keeps_the_aspect_and_even_sizes(
    size: tuple[int, int], width: int, expected: tuple[int, int]
) -> None:
    assert output_size(*size, width) == expected


def test_scaled_planes_average_areas_and_unscaled_ones_are_the_same_views() -> None:
    y, u, v = planes(64, 48)
    assert all(a is b for a, b in zip(scale_i420(y, u, v, 64, 48), (y, u, v), strict=True))
    small = scale_i420(y, u, v, 32, 24)
    assert [p.shape for p in small] == [(24, 32), (12, 16), (12, 16)]
    expected = y.reshape(24, 2, 32, 2).mean(axis=(1, 3))  # a 2x area reduction averages 2x2 blocks
    assert np.abs(small[0].astype(float) - expected).max() <= 0.5 + 1e-9
    assert i420_bytes(*small) == b"".join(p.tobytes() for p in small)


def test_jpeg_colours_match_opencvs_conversion_of_the_same_video_range_frame() -> None:
    """Encoded straight from the planes, the JPEG decodes to the colours OpenCV's I420 -> BGR
    gives (video range expanded, BT.601), within JPEG's loss; without the range expansion,
    blacks would come back grey (16) and whites dull (235)."""
    height, width = 96, 128
    y = np.tile(np.linspace(16, 235, width).astype(np.uint8), (height, 1))
    u = np.full((height // 2, width // 2), 90, np.uint8)
    v = np.tile(np.linspace(60, 200, height // 2).astype(np.uint8)[:, None], (1, width // 2))
    expected = i420_to_color(y, u, v)
    data, _ = jpeg_encode(y, u, v, 95)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(decoded.astype(int) - expected).mean() < 2.0
    grey = np.full((height // 2, width // 2), 128, np.uint8)  # no colour: the ramp's ends are black, white
    data, _ = jpeg_encode(y, grey, grey, 95)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert decoded[:, :2].mean() < 3 and decoded[:, -2:].mean() > 252


def test_range_expansion_is_exact_for_every_value() -> None:
    """JFIF's full range from video range, rounded and clipped: (v - 16) * 255 / 219 for luma,
    (v - 128) * 255 / 224 + 128 for chroma, values outside video range included."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    luma = np.clip(np.round((values.astype(float) - 16) * 255 / 219), 0, 255)
    chroma = np.clip(np.round((values.astype(float) - 128) * 255 / 224 + 128), 0, 255)
    assert np.array_equal(to_full_range(values, LUMA_TO_FULL), luma.astype(np.uint8))
    assert np.array_equal(to_full_range(values, CHROMA_TO_FULL), chroma.astype(np.uint8))

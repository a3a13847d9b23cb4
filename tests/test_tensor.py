"""Batch.tensor(): batches read from the real Redis become a model's input, and boxes found in
that input map back onto the frames; plus a smoke run of the benchmark."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import redis

from tests.conftest import REDIS_URL
from zstream.consumer import BatchConsumer
from zstream.core.planes import i420_planes
from zstream.core.wire import FrameMeta, encode_batch_entry
from zstream.pixels import i420_bytes, jpeg_encode
from zstream.tensor import Letterbox, fit

RECT = (400, 180, 880, 540)  # x0, y0, x1, y1 of a white box on a 1280x720 frame


def picture(width: int, height: int) -> np.ndarray:
    """A mid-grey BGR frame with one white box and a red, green and blue stripe."""
    bgr = np.full((height, width, 3), 60, np.uint8)
    x0, y0, x1, y1 = (
        round(v * width / 1280) if i % 2 == 0 else round(v * height / 720) for i, v in enumerate(RECT)
    )
    bgr[y0:y1, x0:x1] = 255
    for i, colour in enumerate([(0, 0, 255), (0, 255, 0), (255, 0, 0)]):
        bgr[: height // 10, i * width // 10 : (i + 1) * width // 10] = colour
    return bgr


def entry(bgr: np.ndarray, encoding: str, seq: int) -> tuple[FrameMeta, bytes]:
    height, width = bgr.shape[:2]
    y, u, v = i420_planes(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), width, height)
    if encoding == "jpeg":
        data, shape = jpeg_encode(y, u, v, 95)
        return FrameMeta("cam", seq, None, 0.0, 0.0, width, height, "jpeg", "bgr24", shape, {}), data
    shape = (height * 3 // 2, width)
    return FrameMeta("cam", seq, None, 0.0, 0.0, width, height, "raw", "yuv420p", shape, {}), i420_bytes(
        y, u, v
    )


@pytest.fixture
def batch(redis_client: redis.Redis, streams: tuple[str, str]):  # type: ignore[no-untyped-def]
    frames = [
        entry(picture(1280, 720), "jpeg", 0),
        entry(picture(1280, 720), "raw", 1),
        entry(picture(1920, 1080), "jpeg", 2),
        entry(picture(480, 640), "raw", 3),  # portrait: padded left and right
    ]
    redis_client.xadd(streams[0], encode_batch_entry("b", 1.0, frames))
    with BatchConsumer(REDIS_URL, stream=streams[0], group="g", start="0") as consumer:
        (read,) = consumer.read(block_ms=1000)
    return read


def bright_box(channel_plane: np.ndarray, box: Letterbox) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of the white pixels of the picture below its stripes."""
    ys, xs = np.nonzero(channel_plane > 0.9)
    keep = ys > box.pad_y + 0.17 * box.resized[1]
    return int(xs[keep].min()), int(ys[keep].min()), int(xs[keep].max()) + 1, int(ys[keep].max()) + 1


def test_tensor_letterboxes_every_frame_and_boxes_map_back_to_frame_pixels(batch) -> None:  # type: ignore[no-untyped-def]
    array, letterboxes = batch.tensor(size=(640, 640), letterbox=True, layout="NCHW", dtype="float32")
    assert array.shape == (4, 3, 640, 640) and array.dtype == np.float32
    assert [(b.width, b.height) for b in letterboxes] == [(1280, 720), (1280, 720), (1920, 1080), (480, 640)]
    assert letterboxes[0].pad_y == 140 and letterboxes[0].pad_x == 0 and letterboxes[3].pad_x == 80
    for index, box in enumerate(letterboxes):
        frame = batch.frames[index]
        # Padding is 114 grey (every frame here is padded); the picture is where the letterbox says.
        assert np.allclose(array[index, :, 0, 0], 114 / 255)
        mapped = box.to_original([bright_box(array[index, 1], box)])[0]
        expected = np.array(RECT, float) * np.tile([frame.width / 1280, frame.height / 720], 2)
        assert np.abs(mapped - expected).max() <= 2.5 / box.scale_x, (index, mapped, expected)
        # RGB order: the stripes are red, green, blue from the left.
        top = box.pad_y + 2
        reds = [array[index, c, top, box.pad_x + round(frame.width / 20 * box.scale_x)] for c in range(3)]
        assert reds[0] > 0.9 and reds[2] < 0.1, reds
        assert np.allclose(box.to_original(box.to_input([[1.0, 2.0, 30.0, 40.0]])), [[1, 2, 30, 40]])
    assert batch.frames[0]._image == [], "tensor() decoded a JPEG frame whole"


def test_layouts_dtypes_and_normalisation(batch) -> None:  # type: ignore[no-untyped-def]
    nchw = batch.tensor(size=(320, 256)).array
    nhwc = batch.tensor(size=(320, 256), layout="NHWC", dtype="uint8").array
    assert nhwc.shape == (4, 256, 320, 3) and nhwc.dtype == np.uint8
    assert np.allclose(nchw, nhwc.transpose(0, 3, 1, 2) / 255, atol=1e-6)
    assert np.array_equal(
        batch.tensor(size=(320, 256), color="bgr", dtype="uint8", layout="NHWC").array, nhwc[..., ::-1]
    )
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalised = batch.tensor(size=(320, 256), mean=mean, std=std, dtype="float16").array
    assert normalised.dtype == np.float16
    expected = (nchw - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    assert np.allclose(normalised, expected, atol=1e-2)
    stretched = batch.tensor(size=(320, 256), letterbox=False)
    assert all(b.pad_x == b.pad_y == 0 and b.resized == (320, 256) for b in stretched.letterboxes)
    for bad, message in [
        ({"layout": "CHW"}, "layout"),
        ({"dtype": "int8"}, "dtype"),
        ({"size": (0, 5)}, "size"),
    ]:
        with pytest.raises(ValueError, match=message):
            batch.tensor(**bad)


def test_fit_keeps_the_aspect_ratio_and_centres() -> None:
    box = fit(1920, 1080, (640, 640), letterbox=True)
    assert (box.resized, box.pad_x, box.pad_y) == ((640, 360), 0, 140)
    assert np.allclose(box.to_original([[0, 140, 640, 500]]), [[0, 0, 1920, 1080]])
    assert np.allclose(box.to_original([[-5, 0, 700, 640]]), [[0, 0, 1920, 1080]])  # clipped to the frame

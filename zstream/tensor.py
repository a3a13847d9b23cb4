"""Batches as a detector's input, and the way back for its boxes.

What every ML consumer otherwise writes itself: decode, letterbox resize to the model's input,
colour order, HWC to NCHW, float and normalisation. Done here with the least work per pixel:

- a JPEG frame is decoded by libjpeg-turbo at the smallest DCT scale (1/2, 1/4, 1/8) that still
  covers the target size, so a 1080p frame for a 640 input decodes as 960x540;
- a raw I420 frame is scaled plane by plane first and converted to colour at the target size;
- the letterboxed pictures are painted into one uint8 batch, cast to the tensor once.

Each frame's Letterbox maps boxes (x0, y0, x1, y1 in input pixels) back onto the frame as
delivered (`Frame.width` x `Frame.height`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import cv2
import numpy as np
import simplejpeg

Layout = Literal["NCHW", "NHWC"]
Color = Literal["rgb", "bgr"]
DTYPES = ("float32", "float16", "uint8")


class Picture(Protocol):
    """What a tensor needs of a frame (zstream.consumer.Frame), read only."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def pixel_format(self) -> str: ...

    @property
    def encoding(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def image(self) -> np.ndarray: ...

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def bgr(self) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where one frame lies in the input: input = original * scale + pad."""

    width: int  # the frame as delivered
    height: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    resized: tuple[int, int]  # (width, height) of the picture inside the input

    def to_original(self, boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Boxes (..., 4) as x0, y0, x1, y1 in input pixels -> the frame's pixels, clipped to it."""
        out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
        out[:, 0::2] = ((out[:, 0::2] - self.pad_x) / self.scale_x).clip(0, self.width)
        out[:, 1::2] = ((out[:, 1::2] - self.pad_y) / self.scale_y).clip(0, self.height)
        return out.reshape(np.shape(boxes))

    def to_input(self, boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """The inverse: boxes in the frame's pixels -> input pixels."""
        out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
        out[:, 0::2] = out[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = out[:, 1::2] * self.scale_y + self.pad_y
        return out.reshape(np.shape(boxes))


class TensorBatch(NamedTuple):
    array: np.ndarray  # (N, 3, H, W) or (N, H, W, 3)
    letterboxes: list[Letterbox]  # one per frame, in batch order


def fit(width: int, height: int, size: tuple[int, int], letterbox: bool) -> Letterbox:
    """How a width x height frame goes into a `size` input: aspect kept and centred, or stretched."""
    target_w, target_h = size
    if not letterbox:
        return Letterbox(width, height, target_w / width, target_h / height, 0, 0, (target_w, target_h))
    scale = min(target_w / width, target_h / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
    return Letterbox(width, height, new_w / width, new_h / height, pad_x, pad_y, (new_w, new_h))


def batch_tensor(
    frames: Sequence[Picture],
    size: tuple[int, int] = (640, 640),
    *,
    letterbox: bool = True,
    layout: Layout = "NCHW",
    dtype: str = "float32",
    color: Color = "rgb",
    scale: float = 1 / 255,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    pad_value: int = 114,
) -> TensorBatch:
    """(x - mean) / std of x = pixel * scale, per channel in `color` order; uint8 takes pixels as
    they are. Padding is `pad_value` before scaling (114: what YOLO models are trained with)."""
    _check(size, layout, dtype, color)
    spread = np.asarray(std if std is not None else (1.0, 1.0, 1.0), np.float64)
    gain, offset = scale / spread, np.asarray(mean if mean is not None else (0.0, 0.0, 0.0)) / spread
    if dtype == "uint8":
        gain, offset = np.ones(3), np.zeros(3)
    out = _padded(len(frames), size, layout, np.dtype(dtype), pad_value * gain - offset)
    boxes = []
    for index, frame in enumerate(frames):
        box = fit(frame.width, frame.height, size, letterbox)
        _place(out[index], _resized(frame, box.resized, color), box, layout, gain, offset)
        boxes.append(box)
    return TensorBatch(out, boxes)


def _padded(
    count: int, size: tuple[int, int], layout: Layout, dtype: np.dtype, pad: np.ndarray
) -> np.ndarray:
    width, height = size
    if layout == "NHWC":
        out = np.empty((count, height, width, 3), dtype)
        out[...] = pad.astype(dtype)
        return out
    out = np.empty((count, 3, height, width), dtype)
    for channel in range(3):
        out[:, channel] = pad[channel]
    return out


def _place(
    target: np.ndarray,
    picture: np.ndarray,
    box: Letterbox,
    layout: Layout,
    gain: np.ndarray,
    offset: np.ndarray,
) -> None:
    """Write one resized picture into its place in the tensor, scaled and normalised on the way:
    channel by channel for NCHW, so every read and write is contiguous along rows."""
    (width, height), x, y = box.resized, box.pad_x, box.pad_y
    if layout == "NHWC":
        regions, sources = [target[y : y + height, x : x + width]], [picture]
        gains, offsets = [gain.astype(target.dtype)], [offset.astype(target.dtype)]
    else:
        regions = [target[channel, y : y + height, x : x + width] for channel in range(3)]
        sources, gains, offsets = list(cv2.split(picture)), list(gain), list(offset)
    for region, source, channel_gain, channel_offset in zip(regions, sources, gains, offsets, strict=True):
        if target.dtype == np.uint8:
            region[...] = source
            continue
        np.multiply(source, channel_gain, out=region, dtype=target.dtype, casting="unsafe")
        if np.any(channel_offset):
            region -= channel_offset


def _check(size: tuple[int, int], layout: str, dtype: str, color: str) -> None:
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (width, height), both at least 1, got {size}")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be rgb or bgr, got {color!r}")


def _resized(frame: Picture, size: tuple[int, int], color: Color) -> np.ndarray:
    """The frame as `size` (w, h) in `color`, with the least work for its encoding."""
    if frame.encoding == "jpeg":
        new_w, new_h = size
        try:
            image = simplejpeg.decode_jpeg(
                frame.data, colorspace=color.upper(), min_width=new_w, min_height=new_h
            )
        except ValueError:  # a JPEG libjpeg-turbo refuses but OpenCV reads: the plain way
            image = _ordered(frame.image, "bgr24", color)
        return _scale(image, size)
    if frame.pixel_format == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return _i420_resized(*frame.planes(), size, color)
    if frame.pixel_format == "yuv420p":  # odd sides: OpenCV's I420 conversion wants even ones
        return _scale(_ordered(frame.bgr(), "bgr24", color), size)
    return _scale(_ordered(frame.image, frame.pixel_format, color), size)


def _i420_resized(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, size: tuple[int, int], color: Color
) -> np.ndarray:
    """Scale the planes (a quarter of the work in chroma), then convert the small picture."""
    new_w, new_h = size
    even_w, even_h = new_w + new_w % 2, new_h + new_h % 2
    chroma = (even_w // 2, even_h // 2)
    stacked = np.concatenate(
        [
            _scale(y, (even_w, even_h)).reshape(-1),
            _scale(u, chroma).reshape(-1),
            _scale(v, chroma).reshape(-1),
        ]
    ).reshape(even_h * 3 // 2, even_w)
    code = cv2.COLOR_YUV2RGB_I420 if color == "rgb" else cv2.COLOR_YUV2BGR_I420
    return cv2.cvtColor(stacked, code)[:new_h, :new_w]


def _scale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def _ordered(image: np.ndarray, pixel_format: str, color: Color) -> np.ndarray:
    """`image` (bgr24 or rgb24) in `color` order."""
    return image if pixel_format[:3] == color else image[..., ::-1]

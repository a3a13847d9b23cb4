"""What an imagezmq sender puts on the wire, turned into I420 frames or a reason to refuse.

imagezmq (`ImageSender.send_image` / `send_jpg`) sends two parts: a JSON header, then the
payload. `send_image` puts `{"msg": NAME, "dtype": ..., "shape": [...]}` before the array's
raw bytes; `send_jpg` puts `{"msg": NAME}` before JPEG bytes. Everything here is checked
before any pixel is touched: a hostile peer can claim any shape and send any bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from zstream.core.planes import i420_planes
from zstream.core.vocabulary import DropReason
from zstream.sources.base import DecodedFrame

MAX_HEADER_BYTES = 4096  # imagezmq's header is ~60 bytes; anything large is not one
MAX_NAME_CHARS = 128


class Refused(Exception):
    """A message that is not a usable frame; `reason` is the counter label, `detail` the why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Message:
    """A well-formed message: who sent it, and its payload, not yet decoded."""

    name: str
    payload: memoryview
    shape: tuple[int, ...] | None  # None for JPEG


def parse_message(parts: list[memoryview]) -> Message:
    """The sender's name and payload of a two-part imagezmq message; Refused otherwise."""
    if len(parts) != 2:
        raise Refused(DropReason.BAD_MESSAGE, f"{len(parts)} parts, imagezmq sends 2 (header, payload)")
    header = _header(parts[0])
    name = header.get("msg")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise Refused(
            DropReason.BAD_MESSAGE, f"header 'msg' must be a name of 1 to {MAX_NAME_CHARS} characters"
        )
    if "dtype" not in header and "shape" not in header:
        return Message(name, parts[1], None)
    return Message(name, parts[1], _shape(header))


def _header(raw: memoryview) -> dict[str, object]:
    if len(raw) > MAX_HEADER_BYTES:
        raise Refused(DropReason.BAD_MESSAGE, f"header of {len(raw)} bytes (imagezmq's are under 200)")
    try:
        header = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(DropReason.BAD_MESSAGE, f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise Refused(DropReason.BAD_MESSAGE, "header is not a JSON object")
    return header


def _shape(header: dict[str, object]) -> tuple[int, ...]:
    dtype, shape = header.get("dtype"), header.get("shape")
    if dtype != "uint8":
        raise Refused(DropReason.BAD_SHAPE, f"dtype {str(dtype)[:20]!r}; only uint8 images are taken")
    sides = tuple(shape) if isinstance(shape, list) else ()
    valid = len(sides) in (2, 3) and all(type(side) is int and side > 0 for side in sides)
    if not valid or sides[2:] not in ((), (3,)):
        shown = str(shape)[:40]
        raise Refused(DropReason.BAD_SHAPE, f"shape {shown}; expected [h, w] (gray) or [h, w, 3] (BGR)")
    return sides


def decode(message: Message, max_size: tuple[int, int]) -> DecodedFrame:
    """The message's picture as I420; Refused when it is too large, inconsistent or undecodable."""
    if message.shape is None:
        return _decode_jpeg(message, max_size)
    height, width = message.shape[:2]
    _check_size(width, height, max_size)
    expected = int(np.prod(message.shape))
    if len(message.payload) != expected:
        raise Refused(
            "bad_shape",
            f"{len(message.payload)} bytes for shape {list(message.shape)} ({expected} expected)",
        )
    image = np.frombuffer(message.payload, np.uint8).reshape(message.shape)
    return _to_i420(image)


def _decode_jpeg(message: Message, max_size: tuple[int, int]) -> DecodedFrame:
    """Read the JPEG header first: a 60 kB file can claim 65535 x 65535 pixels."""
    try:
        height, width, _colour, _subsampling = simplejpeg.decode_jpeg_header(message.payload)
        _check_size(width, height, max_size)
        image = simplejpeg.decode_jpeg(message.payload, colorspace="BGR")
    except ValueError as exc:
        raise Refused(DropReason.UNDECODABLE, f"not a JPEG libjpeg-turbo can decode ({exc})") from None
    return _to_i420(image)


def _check_size(width: int, height: int, max_size: tuple[int, int]) -> None:
    if width > max_size[0] or height > max_size[1]:
        raise Refused(
            "too_large", f"{width}x{height} exceeds the camera's max_size {max_size[0]}x{max_size[1]}"
        )
    if width % 2 or height % 2:
        raise Refused(DropReason.BAD_SHAPE, f"{width}x{height}: both sides must be even (frames are I420)")


def _to_i420(image: np.ndarray) -> DecodedFrame:
    height, width = image.shape[:2]
    if image.ndim == 2:  # gray: neutral chroma
        chroma = np.full((height // 2, width // 2), 128, np.uint8)
        return DecodedFrame(width, height, image, chroma, chroma, None)
    y, u, v = i420_planes(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), width, height)
    return DecodedFrame(width, height, y, u, v, None)

"""Test media: H.264 clips made on the spot, and the reference decode of them.

Tests never ship video files: each one makes the clip it needs with PyAV's bundled
libx264, so the pixels are known and the repo stays small. The reference decode is
done with the same FFmpeg that the pipeline uses, so a stream that arrived intact must
decode to the very same bytes: any lost or reordered packet shows up as a mismatch.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def _picture(index: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB frame: a moving gradient, fresh noise and the frame number.

    The gradient moves so that every frame differs from the last; the noise gives the
    encoder real detail to code (a flat picture would hide decoding errors); the
    number makes a frame recognisable by eye when a test fails.
    """
    x = np.arange(width, dtype=np.int32)
    y = np.arange(height, dtype=np.int32)[:, None]
    shift = index * 7
    img = np.empty((height, width, 3), dtype=np.int32)
    img[..., 0] = (x + shift) % 256
    img[..., 1] = (y * 2 + shift) % 256
    img[..., 2] = (x + y + index * 13) % 256
    img += rng.integers(-24, 25, size=img.shape, dtype=np.int32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    scale = max(height / 120, 0.5)
    cv2.putText(
        out,
        f"#{index}",
        (max(width // 20, 2), max(height // 2, 12)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        max(int(scale * 2), 1),
        cv2.LINE_AA,
    )
    return out


def make_h264_clip(
    path: str | Path,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 10,
    frames: int = 30,
    gop: int = 10,
    bframes: int = 0,
    seed: int = 1234,
    marks: bool = False,
) -> Path:
    """Write an H.264 (yuv420p) mp4 of `frames` frames and return its path.

    A keyframe opens every `gop` frames exactly (scene-cut detection is off), so a test
    knows where a decoder can start. B-frames are off by default, as on most IP
    cameras; pass `bframes` to get reordered streams. The same arguments always give
    the same file.
    """
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs even dimensions, got {width}x{height}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    x264_params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"preset": "veryfast", "x264-params": x264_params}
        )
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        for index in range(frames):
            picture = _picture(index, width, height, rng)
            if marks:
                _mark(picture, index)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            # Convert here rather than in the encoder so the colour conversion is fixed.
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


MARK_BITS, MARK_SIZE = 12, 16


def _mark(picture: np.ndarray, index: int) -> None:
    """Write the frame's index in its top-left corner, one black or white block per bit, big
    enough to survive compression: a frame then says which it is, whatever the pipeline did."""
    for bit in range(MARK_BITS):
        value = 255 if index >> bit & 1 else 0
        picture[:MARK_SIZE, bit * MARK_SIZE : (bit + 1) * MARK_SIZE] = value


def read_mark(luma: np.ndarray) -> int:
    """The index _mark wrote into a frame, read from its (decoded) luma plane."""
    blocks = luma[2 : MARK_SIZE - 2, : MARK_BITS * MARK_SIZE].reshape(MARK_SIZE - 4, MARK_BITS, MARK_SIZE)
    bits = blocks[:, :, 2:-2].mean(axis=(0, 2)) > 128
    return sum(1 << bit for bit, on in enumerate(bits) if on)


def frame_to_i420(frame: av.VideoFrame) -> np.ndarray:
    """Copy a decoded 4:2:0 frame into a contiguous (h*3//2, w) I420 array.

    Each plane is copied row by row up to its visible width: a decoder pads its rows
    (line_size > width) for alignment, and that padding must not leak into the pixels.
    Full-range yuvj420p has the same layout, so it is copied as it is, not converted.
    """
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    width, height = frame.width, frame.height
    if width % 2 or height % 2:
        raise ValueError(f"a (h*3//2, w) I420 array needs even dimensions, got {width}x{height}")
    out = np.empty(width * height * 3 // 2, dtype=np.uint8)
    offset = 0
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        visible = rows[:, : plane.width]
        out[offset : offset + visible.size] = visible.reshape(-1)
        offset += visible.size
    assert offset == out.size, "plane sizes do not add up to one I420 frame"
    return out.reshape(height * 3 // 2, width)


def split_i420(frame: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U and V planes of a contiguous even-sized I420 array (as frame_to_i420 makes)."""
    flat = frame.reshape(-1)
    y_size, c_size = width * height, (width // 2) * (height // 2)
    return (
        flat[:y_size].reshape(height, width),
        flat[y_size : y_size + c_size].reshape(height // 2, width // 2),
        flat[y_size + c_size :].reshape(height // 2, width // 2),
    )


def decode_i420_frames(path: str | Path) -> list[np.ndarray]:
    """Decode every video frame of a file, in presentation order, as I420 arrays."""
    with av.open(str(path)) as container:
        return [frame_to_i420(frame) for frame in container.decode(video=0)]


def make_mjpeg_clip(path: str | Path, *, frames: int = 12, garbage_at: int | None = None) -> Path:
    """An MJPEG (intra-only) mkv at 10 fps whose frame i is flat grey of level 20*i, 320x240.

    Packet `garbage_at`, if given, is junk instead of a JPEG: a decoder that tries it
    fails, so a test can tell whether that packet was decoded at all.
    """
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuvj420p"
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 20 * index, np.uint8), format="rgb24")
            for packet in stream.encode(picture):
                out.mux(_junk_like(packet, stream) if index == garbage_at else packet)
        out.mux(stream.encode())
    return Path(path)


def _junk_like(packet: av.Packet, stream: av.VideoStream) -> av.Packet:
    junk = av.Packet(b"\x00not a jpeg" * 40)
    junk.pts, junk.dts, junk.time_base, junk.stream = packet.pts, packet.dts, packet.time_base, stream
    return junk


def make_resolution_switch_clip(
    path: str | Path, sizes: tuple[tuple[int, int], ...], *, frames_each: int = 10, fps: int = 10
) -> Path:
    """An MPEG-TS H.264 stream that changes resolution mid-way, as a camera does when its
    profile is edited: `frames_each` frames at each size, new SPS/PPS in band, pts running on."""
    rng = np.random.default_rng(7)
    index = 0
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *sizes[0], "yuv420p"
        for width, height in sizes:
            encoder = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base, encoder.framerate = Fraction(1, fps), fps
            encoder.options = {
                "preset": "veryfast",
                "x264-params": f"keyint={frames_each}:scenecut=0:bframes=0",
            }
            first = index
            for local in range(frames_each):
                picture = av.VideoFrame.from_ndarray(_picture(index, width, height, rng), format="rgb24")
                frame = picture.reformat(format="yuv420p")
                frame.pts, frame.time_base = local, Fraction(1, fps)
                _mux_shifted(out, stream, encoder.encode(frame), first)
                index += 1
            _mux_shifted(out, stream, encoder.encode(None), first)
    return Path(path)


def _mux_shifted(out: av.container.OutputContainer, stream: av.VideoStream, packets: list, by: int) -> None:
    for packet in packets:
        packet.stream = stream
        packet.pts += by
        packet.dts += by
        out.mux(packet)

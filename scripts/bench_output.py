"""Output benchmark: what writing one frame to Redis costs the batcher before the write itself.

zstream's path (zstream.pixels): scale the I420 planes to the output width (area averaging),
then JPEG-encode them as they are with libjpeg-turbo (video range expanded by a lookup table).
The baseline is the straightforward OpenCV path on the same frames: I420 -> BGR
(cv2.cvtColor), cv2.resize, cv2.imencode. Both on one core, over frames of the synthetic
traffic scene at 720p and 1080p, output 640 px wide (the default) and unscaled; every encoded
frame is decoded back and compared with the reference, so a fast wrong path cannot win.

    .venv/bin/python scripts/bench_output.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from zstream.pixels import i420_to_color, jpeg_encode, output_size, scale_i420  # noqa: E402
from zstream.sources.synthetic import TrafficScene  # noqa: E402

QUALITY = 90
Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def frames(width: int, height: int, count: int) -> list[Planes]:
    scene = TrafficScene(width, height, seed=3, vehicles=8)
    out = []
    for index in range(count):
        i420 = scene.render(index)
        y = i420[:height]
        chroma = i420[height:].reshape(2, height // 2, width // 2)
        out.append((np.ascontiguousarray(y), chroma[0].copy(), chroma[1].copy()))
    return out


def zstream_path(planes: Planes, width: int, height: int) -> bytes:
    return jpeg_encode(*scale_i420(*planes, width, height), QUALITY)[0]


def opencv_path(planes: Planes, width: int, height: int) -> bytes:
    bgr = i420_to_color(*planes)
    if bgr.shape[:2] != (height, width):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    assert ok
    return encoded.tobytes()


def timed(
    path: Callable[[Planes, int, int], bytes], clip: list[Planes], size: tuple[int, int], rounds: int
) -> tuple[float, float, list[bytes]]:
    """Median and p99 ms per frame (per-frame timings over `rounds` passes), and the last outputs."""
    times, outputs = [], []
    for _ in range(rounds):
        for planes in clip:
            start = time.perf_counter()
            outputs.append(path(planes, *size))
            times.append(time.perf_counter() - start)
    p99 = sorted(times)[int(0.99 * (len(times) - 1))]
    return statistics.median(times) * 1000, p99 * 1000, outputs[-len(clip) :]


def error(encoded: list[bytes], clip: list[Planes], size: tuple[int, int]) -> float:
    """Mean absolute difference (grey levels) of the decoded JPEGs to the reference: OpenCV's
    conversion of the unencoded frame, scaled the same way."""
    diffs = []
    for data, planes in zip(encoded, clip, strict=True):
        reference = i420_to_color(*scale_i420(*planes, *size))
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        diffs.append(float(np.abs(decoded.astype(np.int16) - reference).mean()))
    return statistics.mean(diffs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few frames (smoke test)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # one core, as in the batcher
    count, rounds = (4, 1) if args.quick else (24, 8)
    print(f"{count} frames x {rounds} rounds per row, JPEG q{QUALITY}, one core")
    print("| frame | output | OpenCV ms (p99) | zstream ms (p99) | OpenCV / zstream | error OpenCV / ours |")
    print("|---|---|---|---|---|---|")
    worst = float("inf")
    for width, height in ((1280, 720), (1920, 1080)):
        clip = frames(width, height, count)
        for output_width in (640, 0):
            size = output_size(width, height, output_width)
            base_median, base_p99, base_out = timed(opencv_path, clip, size, rounds)
            ours_median, ours_p99, ours_out = timed(zstream_path, clip, size, rounds)
            ratio = base_median / ours_median
            worst = min(worst, ratio)
            print(
                f"| {width}x{height} | {size[0]}x{size[1]} | {base_median:.2f} ({base_p99:.2f}) "
                f"| {ours_median:.2f} ({ours_p99:.2f}) | {ratio:.2f} "
                f"| {error(base_out, clip, size):.2f} / {error(ours_out, clip, size):.2f} |"
            )
    print(f"worst OpenCV / zstream: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

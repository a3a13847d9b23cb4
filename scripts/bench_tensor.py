"""Per-batch cost of turning a batch into a detector's input: Batch.tensor() against the plain
OpenCV way, on the same frames, in the same run.

Frames: the synthetic traffic scene at 1280x720 and 1920x1080, as the batcher writes them
(JPEG q90 from the I420 planes, or raw I420), built into real batch entries and parsed by the
consumer's own code (no Redis: only the tensor preparation is timed). Each batch of 8 frames
becomes a (8, 3, 640, 640) float32 RGB tensor, letterboxed, scaled to 0..1. One OpenCV thread.

The baseline is what a consumer typically writes: cv2.imdecode (or cvtColor I420 -> BGR) at
full size, cv2.resize to the letterbox size, cv2.copyMakeBorder, BGR -> RGB, np.stack,
transpose to NCHW, astype(float32) / 255. Both are compared with a careful reference (full
decode, INTER_AREA downscale): a fast path that got faster by being wrong would show.

    .venv/bin/python scripts/bench_tensor.py [--quick] [--batches N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zstream.consumer import Batch, Frame, _frame
from zstream.core.planes import i420_planes
from zstream.core.wire import FrameMeta
from zstream.pixels import i420_bytes, jpeg_encode
from zstream.sources.synthetic import TrafficScene
from zstream.tensor import fit

BATCH = 8
SIZE = (640, 640)


def make_batch(width: int, height: int, encoding: str) -> Batch:
    """A batch of 8 distinct traffic frames, parsed as a consumer parses them from Redis."""
    scene = TrafficScene(width, height, seed=7, vehicles=12, label="bench")
    frames = []
    for index in range(BATCH):
        y, u, v = i420_planes(scene.render(index * 5), width, height)
        if encoding == "jpeg":
            data, shape = jpeg_encode(y, u, v, 90)
            meta = FrameMeta("bench", index, None, 0.0, 0.0, width, height, "jpeg", "bgr24", shape, {})
        else:
            data, shape = i420_bytes(y, u, v), (height * 3 // 2, width)
            meta = FrameMeta("bench", index, None, 0.0, 0.0, width, height, "raw", "yuv420p", shape, {})
        frames.append(_frame(meta, data))
    return Batch("0-0", 0.0, frames)


def baseline(frames: list[Frame]) -> np.ndarray:
    """The plain OpenCV way, one frame at a time."""
    pictures = []
    for frame in frames:
        if frame.encoding == "jpeg":
            bgr = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
        else:
            bgr = cv2.cvtColor(frame.image, cv2.COLOR_YUV2BGR_I420)
        box = fit(frame.width, frame.height, SIZE, letterbox=True)
        resized = cv2.resize(bgr, box.resized, interpolation=cv2.INTER_LINEAR)
        right = SIZE[0] - box.resized[0] - box.pad_x
        bottom = SIZE[1] - box.resized[1] - box.pad_y
        padded = cv2.copyMakeBorder(
            resized, box.pad_y, bottom, box.pad_x, right, cv2.BORDER_CONSTANT, value=(114, 114, 114)
        )
        pictures.append(cv2.cvtColor(padded, cv2.COLOR_BGR2RGB))
    return np.stack(pictures).transpose(0, 3, 1, 2).astype(np.float32) / 255


def reference(frames: list[Frame]) -> np.ndarray:
    """What both are judged against: full decode, area-averaged downscale (no aliasing)."""
    pictures = []
    for frame in frames:
        box = fit(frame.width, frame.height, SIZE, letterbox=True)
        canvas = np.full((SIZE[1], SIZE[0], 3), 114, np.uint8)
        resized = cv2.resize(frame.bgr(), box.resized, interpolation=cv2.INTER_AREA)
        canvas[box.pad_y : box.pad_y + box.resized[1], box.pad_x : box.pad_x + box.resized[0]] = resized
        pictures.append(canvas[..., ::-1])
    return np.stack(pictures).transpose(0, 3, 1, 2).astype(np.float32) / 255


def fast(frames: list[Frame]) -> np.ndarray:
    return Batch("0-0", 0.0, frames).tensor(size=SIZE, letterbox=True, layout="NCHW", dtype="float32")[0]


def fresh(batch: Batch) -> list[Frame]:
    """The batch's frames as just read: nothing decoded yet (JPEG frames cache their decode)."""
    return [_frame(f, f.data) for f in batch.frames]  # a Frame is its own FrameMeta


def time_both(batch: Batch, batches: int) -> tuple[float, float]:
    """Median ms per batch of tensor() and of the baseline, taken in turns so that a change in
    the machine's load falls on both alike; parsing fresh frames is outside the timed part."""
    samples: dict[str, list[float]] = {"fast": [], "baseline": []}
    for _ in range(batches):
        for name, function in (("fast", fast), ("baseline", baseline)):
            frames = fresh(batch)
            start = time.perf_counter()
            function(frames)
            samples[name].append((time.perf_counter() - start) * 1000)
    return float(np.median(samples["fast"])), float(np.median(samples["baseline"]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 batches per case (a smoke run)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per case and method")
    args = parser.parse_args()
    batches = 3 if args.quick else args.batches
    cv2.setNumThreads(1)  # one core each, as a consumer process would have on a busy machine
    shape = f"({BATCH}, 3, {SIZE[1]}, {SIZE[0]}) float32"
    print(f"batch {BATCH} frames -> {shape}; median of {batches} batches, the two ways in turns")
    versions = f"python {sys.version.split()[0]}, opencv {cv2.__version__}, numpy {np.__version__}"
    print(f"{versions}, {os.cpu_count()} cpus")
    print("PSNR: each tensor against a full decode with area-averaged downscaling (higher is closer)")
    header = f"{'input':<16} {'tensor() ms':>12} {'opencv ms':>10} {'speed-up':>9}"
    print(f"{header} {'PSNR tensor()':>14} {'PSNR opencv':>12}")
    for width, height in ((1280, 720), (1920, 1080)):
        for encoding in ("jpeg", "raw"):
            batch = make_batch(width, height, encoding)
            ours, plain = time_both(batch, batches)
            truth = reference(fresh(batch))
            ours_db, plain_db = psnr(fast(fresh(batch)), truth), psnr(baseline(fresh(batch)), truth)
            label = f"{encoding} {width}x{height}"
            row = f"{label:<16} {ours:>12.1f} {plain:>10.1f} {plain / ours:>8.2f}x"
            print(f"{row} {ours_db:>14.1f} {plain_db:>12.1f}")


if __name__ == "__main__":
    main()

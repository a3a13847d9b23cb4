"""Per-frame cost of the validation stage's quality metrics, on one core.

Times `zstream.quality.measure` on the luma plane of synthetic 1080p I420 frames against
the straightforward full-resolution approach (BGR -> gray, Laplacian variance, mean,
standard deviation, Canny edge density) on the same frames, and times the synthetic
renderer that feeds the pipeline. Frames rotate through a set larger than the L3
cache, as frames arriving through shared memory would.

    .venv/bin/python scripts/bench_validation.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from zstream.quality import measure
from zstream.sources.synthetic import TrafficScene

FRAMES = 24  # 24 x 3 MB of 1080p I420: more than a 32 MB L3, so inputs come from memory


@dataclass(frozen=True, slots=True)
class Timing:
    name: str
    inputs: int | None  # distinct input frames cycled through; None: each call makes a new one
    ms: np.ndarray  # one sample per call

    @property
    def median(self) -> float:
        return float(np.median(self.ms))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.ms, 99))


def baseline(bgr: np.ndarray) -> tuple[float, float, float, float]:
    """What a first version typically does: convert, then every metric at full resolution."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    edge_density = np.count_nonzero(cv2.Canny(gray, 100, 200)) / gray.size
    return sharpness, float(gray.mean()), float(gray.std()), edge_density


def run(
    name: str, fn: Callable[[int], object], inputs: int | None, budget_s: float, max_calls: int
) -> Timing:
    """Call fn(0), fn(1), ... (callers cycle their inputs) until the time budget or max_calls."""
    fn(0)  # warm-up: first-call allocations and lazy initialisation
    samples: list[int] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_calls and (len(samples) < 20 or time.perf_counter() < deadline):
        start = time.perf_counter_ns()
        fn(len(samples))
        samples.append(time.perf_counter_ns() - start)
    return Timing(name, inputs, np.array(samples) / 1e6)


def table(rows: Sequence[Timing], speedup: tuple[float, float]) -> str:
    head = f"{'what':<40}{'inputs':>7}{'calls':>8}{'median ms':>11}{'p99 ms':>9}"
    lines = [head, "-" * len(head)]
    for t in rows:
        inputs = "-" if t.inputs is None else str(t.inputs)
        lines.append(f"{t.name:<40}{inputs:>7}{len(t.ms):>8}{t.median:>11.3f}{t.p99:>9.3f}")
    lines.append(f"{'speed-up, baseline / measure() 1080p':<55}{speedup[0]:>10.1f}x{speedup[1]:>8.1f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a couple of seconds, for a smoke test")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    cv2.setNumThreads(1)

    scenes = {
        h: TrafficScene(w, h, seed=7, vehicles=6, label="cam-01") for w, h in ((1280, 720), (1920, 1080))
    }
    hd = [scenes[1080].render(i * 7) for i in range(FRAMES)]
    hd_luma = [f[:1080] for f in hd]
    hd_bgr = [cv2.cvtColor(f, cv2.COLOR_YUV2BGR_I420) for f in hd]  # baseline input, not timed
    sd_luma = [scenes[720].render(i * 7)[:720] for i in range(FRAMES)]

    rows = [
        run("measure() 1080p luma", lambda i: measure(hd_luma[i % FRAMES]), FRAMES, 3 * scale, 20_000),
        run(
            "baseline 1080p (BGR, full resolution)",
            lambda i: baseline(hd_bgr[i % FRAMES]),
            FRAMES,
            8 * scale,
            2_000,
        ),
        run("measure() 720p luma", lambda i: measure(sd_luma[i % FRAMES]), FRAMES, 2 * scale, 20_000),
        run("TrafficScene.render 720p", scenes[720].render, None, 3 * scale, 20_000),
        run("TrafficScene.render 1080p", scenes[1080].render, None, 3 * scale, 20_000),
    ]
    speedup = (rows[1].median / rows[0].median, rows[1].p99 / rows[0].p99)
    print(
        f"one core (cv2.setNumThreads(1)) of {os.cpu_count()} {platform.machine()}; "
        f"OpenCV {cv2.__version__}, NumPy {np.__version__}, Python {platform.python_version()}"
    )
    print("baseline = BGR->gray, full-res Laplacian var, mean, std, Canny edge density\n")
    print(table(rows, speedup))


if __name__ == "__main__":
    main()

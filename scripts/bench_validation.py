"""Per-frame cost and accuracy of the validation stage's quality metrics, on one core.

Speed: CPU time of this thread (time.thread_time_ns) per call, so that other jobs on a
shared host do not count (they still slow it down through the caches and memory), of
CameraQuality.assess and measure() on the luma plane of synthetic 1080p I420 frames,
against the straightforward full-resolution approach (BGR -> gray with cv2.cvtColor,
Laplacian variance, mean, standard deviation, Canny edge density) on the same frames.
Frames rotate through a set larger than the L3 cache, as frames arriving through shared
memory would.

Accuracy: both on the labelled set of tests/quality_set.py (the baseline is given the luma
as its gray image). zstream uses its default Thresholds. The baseline's thresholds are fitted
on the same set: for each class, of its four metrics and both directions, the rule that
detects most of the class's must-detect frames with its threshold just beyond the most
extreme clean frame (so it rejects no clean frame of the set: fitted in-sample, a best case
for it). The baseline has no frozen detection: it is not run on frozen sequences and its
frozen row says n/a; compare the other classes.

Real pictures (--real): tests/quality_real.py whole (single frames: the absolute limits of
a camera's first frame; fixed cameras: warm-up, then each degradation against the camera's
norm), per class and strength, day and night apart, held-out sources apart.

    .venv/bin/python scripts/bench_validation.py [--quick] [--real]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.quality_set

from tests import quality_real as qr
from tests import quality_set as qs
from tests.quality_set import norm_camera
from zstream.quality import CameraQuality, Thresholds, measure
from zstream.sources.synthetic import TrafficScene

FRAMES = 24  # 24 x 3 MB of 1080p I420: more than a 32 MB L3, so inputs come from memory
BASELINE_METRICS = ("laplacian_var", "mean", "std", "edge_density")


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
    return baseline_gray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def baseline_gray(gray: np.ndarray) -> tuple[float, float, float, float]:
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    edge_density = np.count_nonzero(cv2.Canny(gray, 100, 200)) / gray.size
    return sharpness, float(gray.mean()), float(gray.std()), edge_density


def run(
    name: str, fn: Callable[[int], object], inputs: int | None, budget_s: float, max_calls: int
) -> Timing:
    """Call fn(0), fn(1), ... (callers cycle their inputs) until the time budget (CPU time)
    or max_calls; each call's CPU time."""
    fn(0)  # warm-up: first-call allocations and lazy initialisation
    samples: list[int] = []
    deadline = time.thread_time() + budget_s
    while len(samples) < max_calls and (len(samples) < 20 or time.thread_time() < deadline):
        start = time.thread_time_ns()
        fn(len(samples))
        samples.append(time.thread_time_ns() - start)
    return Timing(name, inputs, np.array(samples) / 1e6)


def timings(scale: float) -> list[Timing]:
    scenes = {
        h: TrafficScene(w, h, seed=7, vehicles=6, label="cam-01") for w, h in ((1280, 720), (1920, 1080))
    }
    hd = [scenes[1080].render(i * 7) for i in range(FRAMES)]
    hd_luma = [f[:1080] for f in hd]
    hd_bgr = [cv2.cvtColor(f, cv2.COLOR_YUV2BGR_I420) for f in hd]  # baseline input, not timed
    sd_luma = [scenes[720].render(i * 7)[:720] for i in range(FRAMES)]
    camera = CameraQuality(Thresholds())
    return [
        run(
            "CameraQuality.assess 1080p",
            lambda i: camera.assess(hd_luma[i % FRAMES], i / 10),
            FRAMES,
            3 * scale,
            20_000,
        ),
        run("measure() 1080p luma", lambda i: measure(hd_luma[i % FRAMES]), FRAMES, 2 * scale, 20_000),
        run(
            "baseline 1080p (BGR, full resolution)",
            lambda i: baseline(hd_bgr[i % FRAMES]),
            FRAMES,
            8 * scale,
            2_000,
        ),
        run("measure() 720p luma", lambda i: measure(sd_luma[i % FRAMES]), FRAMES, 2 * scale, 20_000),
        run("TrafficScene.render 1080p", scenes[1080].render, None, 1 * scale, 20_000),
    ]


def timing_table(rows: Sequence[Timing]) -> str:
    head = f"{'what (CPU time per call)':<40}{'inputs':>7}{'calls':>8}{'median ms':>11}{'p99 ms':>9}"
    lines = [head, "-" * len(head)]
    for t in rows:
        inputs = "-" if t.inputs is None else str(t.inputs)
        lines.append(f"{t.name:<40}{inputs:>7}{len(t.ms):>8}{t.median:>11.3f}{t.p99:>9.3f}")
    base, ours = rows[2], rows[0]
    ratio = f"{base.median / ours.median:>10.1f}x{base.p99 / ours.p99:>8.1f}x"
    lines.append(f"{'speed-up, baseline / CameraQuality.assess':<55}{ratio}")
    return "\n".join(lines)


# --- accuracy ---------------------------------------------------------------------------------


def accuracy(per_kind: int, shares: qs.Shares) -> tuple[str, float]:
    """Run both on the labelled set; the table and the seconds it took."""
    start = time.perf_counter()

    def ours(case: str, view: str) -> qs.Observer[tuple[str, ...]]:
        observe = norm_camera(case, view)
        return lambda luma, t: observe(luma, t).reasons

    def theirs(case: str, view: str) -> qs.Observer[tuple[float, ...]] | None:
        return None if case == "frozen" else lambda luma, t: baseline_gray(luma)

    seen = qs.observe({"ours": ours, "baseline": theirs}, per_kind, shares)
    rules = fit_baseline(seen["baseline"])
    ours_rates = {(r.case, r.must_detect): r for r in qs.rates(seen["ours"], lambda reasons: reasons)}
    base_rates = {(r.case, r.must_detect): r for r in qs.rates(seen["baseline"], lambda v: fired(rules, v))}
    lines = [
        f"{'class':<18}{'strengths':<11}{'frames':>7}{'zstream':>10}{'baseline':>10}   baseline rule",
        "-" * 86,
    ]
    for key in sorted(ours_rates, key=lambda k: (k[0] in ("clean", "live"), k[0], not k[1])):
        case, must = key
        label = f"{case} (rejected)" if case in ("clean", "live") else case
        base = base_rates.get(key)
        rule = rules.get(REASON_OF.get(case, ""), ("", "", 0.0))
        shown = "n/a" if base is None else f"{base.rate:.1%}"
        rule_text = f"{rule[0]} {rule[1]} {rule[2]:.4g}" if rule[0] else ""
        lines.append(
            f"{label:<18}{'must' if must else 'info':<11}{ours_rates[key].frames:>7}"
            f"{ours_rates[key].rate:>10.1%}{shown:>10}   {rule_text}"
        )
    return "\n".join(lines), time.perf_counter() - start


# What a straightforward implementation would judge each reason by: its four metrics, each
# read the obvious way (Laplacian variance and edge density for blur, texture and noise).
CANDIDATES = {
    "blurred": (("laplacian_var", "<"), ("edge_density", "<")),
    "too_dark": (("mean", "<"),),
    "too_bright": (("mean", ">"),),
    "low_contrast": (("std", "<"),),
    "noisy": (("laplacian_var", ">"), ("edge_density", ">")),
    "blank": (("std", "<"), ("edge_density", "<"), ("laplacian_var", "<")),
}


def fit_baseline(seen: list[qs.Observation[tuple[float, ...]]]) -> dict[str, tuple[str, str, float]]:
    """Per reason: (metric, '<' or '>', threshold), the candidate rule detecting most of the
    must-detect frames of that reason while rejecting no clean frame (threshold halfway
    between the clean extreme and the nearest degraded value beyond it)."""
    clean = np.array([o.value for o in seen if o.reason is None])
    rules: dict[str, tuple[str, str, float]] = {}
    for reason, candidates in CANDIDATES.items():
        bad = np.array([o.value for o in seen if o.reason == reason and o.must_detect])
        best: tuple[float, tuple[str, str, float]] | None = None
        for metric, op in candidates:
            i = BASELINE_METRICS.index(metric)
            edge = clean[:, i].min() if op == "<" else clean[:, i].max()
            beyond = bad[:, i][bad[:, i] < edge] if op == "<" else bad[:, i][bad[:, i] > edge]
            limit = edge if not beyond.size else (edge + (beyond.max() if op == "<" else beyond.min())) / 2
            if best is None or beyond.size / len(bad) > best[0]:
                best = (beyond.size / len(bad), (metric, op, float(limit)))
        assert best is not None
        rules[reason] = best[1]
    return rules


def fired(rules: dict[str, tuple[str, str, float]], value: tuple[float, ...]) -> tuple[str, ...]:
    """The reasons whose rule fires: the baseline's verdict."""
    out = []
    for reason, (metric, op, limit) in rules.items():
        x = value[BASELINE_METRICS.index(metric)]
        if (x < limit) if op == "<" else (x > limit):
            out.append(reason)
    return tuple(out)


REASON_OF = {d.case: d.reason for d in qs.DEGRADATIONS} | {"frozen": "frozen"}


def real_accuracy(stride: int) -> str:
    """Per class and strength on real pictures: share detected (clean: rejected), single
    frames and fixed cameras, day / night / held-out sources."""
    tally: dict[tuple[str, str, str], list[int]] = {}

    def count(mode: str, sample: qr.Sample, reasons: tuple[str, ...]) -> None:
        hit = bool(reasons) if not sample.reasons else any(r in reasons for r in sample.reasons)
        groups = ["night" if sample.view.night else "day"] + (["held-out"] if sample.view.held_out else [])
        for group in groups:
            cell = tally.setdefault(
                (mode, f"{sample.case}|{sample.level:08.3f}|{sample.strength}", group), [0, 0]
            )
            cell[0] += hit
            cell[1] += 1

    for sample in qr.labelled(stride):
        count("frame", sample, CameraQuality(Thresholds()).assess(sample.luma, 0.0).reasons)
    cases = tuple(sorted({d.case for d in qr.DEGRADATIONS}))
    for _, steps in qr.camera_runs(stride, cases, must_only=False):
        camera = CameraQuality(Thresholds())
        for step in steps:
            reasons = camera.assess(step.sample.luma, step.t).reasons
            if step.judged:
                count("camera", step.sample, reasons)
    musts = {(d.case, d.strength) for d in qr.DEGRADATIONS if d.must_detect}
    lines = [
        f"{'class':<15}{'strength':<20}{'':>5}{'frame day':>14}{'night':>12}{'held-out':>12}"
        f"{'camera day':>14}{'night':>12}{'held-out':>12}"
    ]
    for key in sorted({k[1] for k in tally}):
        case, _, strength = key.split("|")
        row = f"{case:<15}{strength:<20}{'must' if (case, strength) in musts else '':>5}"
        for mode in ("frame", "camera"):
            for group in ("day", "night", "held-out"):
                hits, n = tally.get((mode, key, group), (0, 0))
                row += f"{(f'{hits / n:.1%} /{n}' if n else '-'):>{14 if group == 'day' else 12}}"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke test")
    parser.add_argument("--real", action="store_true", help="also the real pictures (~10 min; --quick: ~1)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    scale = 0.1 if args.quick else 1.0
    rows = timings(scale)
    quick = qs.Shares(must=4, informational=8, blank=16, frozen=10, live=10)
    per_kind, shares = (1, quick) if args.quick else (8, qs.Shares())
    table, seconds = accuracy(per_kind, shares)
    print(
        f"one core (cv2.setNumThreads(1)) of {os.cpu_count()} {platform.machine()}, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"OpenCV {cv2.__version__}, NumPy {np.__version__}, Python {platform.python_version()}"
    )
    print("baseline = BGR->gray (cv2.cvtColor), full-res Laplacian var, mean, std, Canny edge density\n")
    print(timing_table(rows))
    print(
        f"\naccuracy on the labelled set (tests/quality_set.py, per_kind={per_kind}; {seconds:.0f} s):"
        " share of frames given their\nclass's reason; rejected: share of clean frames (single frames;"
        " frames of live sequences) given any.\nzstream: default Thresholds; baseline: one rule per reason"
        " fitted on this set, none rejecting a clean\nframe of it; the baseline has no frozen detection"
        " (n/a).\n"
    )
    print(table)
    if args.real:
        start = time.perf_counter()
        real = real_accuracy(12 if args.quick else 2)
        print(
            f"\nreal pictures (tests/quality_real.py; {time.perf_counter() - start:.0f} s): share detected,"
            " clean: share rejected, /frames;\nframe: a camera's first frame (absolute limits);"
            " camera: a fixed camera after its warm-up (its norm too)\n"
        )
        print(real)


if __name__ == "__main__":
    main()

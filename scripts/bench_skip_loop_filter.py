#!/usr/bin/env python3
"""What a camera's `skip_loop_filter = true` buys and costs, on one H.264 clip, in one run.

Buys: decoding speed (PyAV on one thread, and `ffmpeg -threads 1 -f null` with and without
`-skip_loop_filter all` as the baseline), timed in alternating turns. Costs: picture quality
against the full decode of the same clip, as luma PSNR by position in the GOP (deblocking is
skipped on reference frames too, so the error grows until the next key frame), and whether
validation's verdicts change (the default thresholds, one CameraQuality per decode, frame by
frame). The clip is the traffic scene encoded here (720p, a key frame every second), or --clip.

    .venv/bin/python scripts/bench_skip_loop_filter.py [--clip FILE] [--quick]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_capture import make_scene_clip

from zstream.quality import CameraQuality, Thresholds
from zstream.sources.base import AdmitAll, Decoding
from zstream.sources.file import FileSource


def lumas(clip: Path, skip: bool) -> list[tuple[np.ndarray, bool]]:
    """Every frame's luma (a copy) and whether it is a key frame."""
    source = FileSource(str(clip), realtime=False, decoding=Decoding(1, False, skip))
    source.open()
    frames = []
    try:
        for frame, _ in source.admitted(AdmitAll(), threading.Event()):
            luma = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, frame.planes[0].line_size)
            frames.append((luma[:, : frame.width].copy(), bool(frame.key_frame)))
    finally:
        source.close()
    return frames


def decode_seconds(clip: Path, skip: bool) -> tuple[float, int]:
    """CPU seconds to decode the whole clip (no conversion, no copy) and its frame count. CPU time,
    not wall-clock time: on a shared machine the other load stretches the latter, not the former."""
    source = FileSource(str(clip), realtime=False, decoding=Decoding(1, False, skip))
    source.open()
    started, count = time.process_time(), 0
    try:
        for _ in source.admitted(AdmitAll(), threading.Event()):
            count += 1
    finally:
        source.close()
    return time.process_time() - started, count


def ffmpeg_seconds(clip: Path, skip: bool) -> float:
    """CPU seconds of one `ffmpeg -threads 1 -f null` of the clip."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-threads", "1"]
    command += [*(["-skip_loop_filter", "all"] if skip else []), "-i", str(clip), "-f", "null", "-"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def speed(clip: Path, turns: int) -> dict[str, float]:
    """Median frames per CPU second of each way over alternating turns."""
    times: dict[str, list[float]] = defaultdict(list)
    frames = 0
    for _ in range(turns):
        for skip in (False, True):
            seconds, frames = decode_seconds(clip, skip)
            times[f"pyav{'_skip' if skip else ''}"].append(seconds)
            times[f"ffmpeg{'_skip' if skip else ''}"].append(ffmpeg_seconds(clip, skip))
    return {name: frames / statistics.median(values) for name, values in times.items()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def quality_cost(clip: Path, fps: float) -> tuple[dict[int, list[float]], int, int, dict[str, int]]:
    """PSNR by GOP position, frames compared, verdicts that differ, and reasons only one way gave."""
    full, skipped = lumas(clip, False), lumas(clip, True)
    assert len(full) == len(skipped), "both decodes must give every frame"
    by_position: dict[int, list[float]] = defaultdict(list)
    judges = (CameraQuality(Thresholds()), CameraQuality(Thresholds()))
    changed, reasons = 0, defaultdict(int)
    position = 0
    for index, ((a, key), (b, _)) in enumerate(zip(full, skipped, strict=True)):
        position = 0 if key else position + 1
        by_position[position].append(psnr(a, b))
        verdicts = [
            set(judge.assess(luma, index / fps).reasons) for judge, luma in zip(judges, (a, b), strict=True)
        ]
        if verdicts[0] != verdicts[1]:
            changed += 1
            for reason in verdicts[0] ^ verdicts[1]:
                reasons[reason] += 1
    return by_position, len(full), changed, dict(reasons)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clip", type=Path, help="an H.264 file (default: the traffic scene, 720p)")
    parser.add_argument("--quick", action="store_true", help="a short clip and one turn: a smoke run")
    args = parser.parse_args(argv)
    fps = 10
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or make_scene_clip(
            Path(tmp) / "scene.mp4", 1280, 720, 60 if args.quick else 300, fps
        )
        rates = speed(clip, 1 if args.quick else 5)
        by_position, frames, changed, reasons = quality_cost(clip, fps)
    print(f"## skip_loop_filter on {clip.name if args.clip else 'the traffic scene, 1280x720'}\n")
    print("| decoder (1 thread) | full: frames per CPU s | skip_loop_filter: frames per CPU s | speed-up |")
    print("|---|---|---|---|")
    for name in ("pyav", "ffmpeg"):
        full_fps, skip_fps = rates[name], rates[f"{name}_skip"]
        print(f"| {name} | {full_fps:.0f} | {skip_fps:.0f} | {skip_fps / full_fps:.2f}x |")
    print("\n| frames after the key frame | luma PSNR vs full decode, mean (min) dB |")
    print("|---|---|")
    for position in sorted(by_position):
        values = by_position[position]
        if position in (0, 1, 2, 5) or position % 10 == 9 or position == max(by_position):
            print(f"| {position} | {statistics.fmean(values):.1f} ({min(values):.1f}) |")
    print(f"\nQC verdicts (default thresholds) that differ: {changed} of {frames} frames", end="")
    print(f" ({', '.join(f'{r} {n}' for r, n in sorted(reasons.items()))})" if reasons else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())

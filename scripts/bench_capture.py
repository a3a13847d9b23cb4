"""Capture benchmark: one camera's capture path against FFmpeg's own decoder on the same file.

zstream's capture path per frame is what a capture worker does: PyAV demux + decode (I420,
no colour conversion) and the copy of the three planes into a shared-memory ring slot. The
baseline is `ffmpeg -threads N -i FILE -f null -`, the decoder alone, with the same thread
count. Both read, as fast as they can, a 1080p H.264 clip of the synthetic traffic scene that
this script encodes with PyAV's libx264 (a scene, not noise: decoding cost depends on content).

    .venv/bin/python scripts/bench_capture.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zstream.capture import _fill
from zstream.ring import SHM_DIR, Ring
from zstream.sources.base import i420_size
from zstream.sources.file import FileSource
from zstream.sources.synthetic import TrafficScene


def make_scene_clip(path: Path, width: int, height: int, frames: int, fps: int = 30) -> Path:
    """An H.264 clip of the traffic scene, a key frame every `fps` frames."""
    scene = TrafficScene(width, height, seed=7, vehicles=8, label="bench", fps=fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": str(fps), "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(scene.render(index), format="yuv420p")))
        container.mux(stream.encode())
    return path


def ffmpeg_fps(clip: Path, frames: int, threads: int, repeats: int) -> float:
    """Best of `repeats` wall-clock runs of ffmpeg decoding to the null muxer."""
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-threads",
        str(threads),
        "-i",
        str(clip),
        "-f",
        "null",
        "-",
    ]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, timeout=300)
        best = min(best, time.perf_counter() - started)
    return frames / best


def zstream_fps(clip: Path, threads: int, repeats: int, keyframes_only: bool = False) -> tuple[float, int]:
    """Best of `repeats` runs of the capture path: decode, then copy each frame into a ring slot."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
    path = SHM_DIR / f"zstream-bench-{uuid.uuid4().hex[:8]}"
    ring = Ring.create(path, slots=8, capacity=i420_size(width, height))
    best, count = float("inf"), 0
    try:
        for _ in range(repeats):
            source = FileSource(
                str(clip), realtime=False, decoder_threads=threads, keyframes_only=keyframes_only
            )
            started = time.perf_counter()
            source.open()
            count = 0
            for frame in source.frames(threading.Event()):
                claimed = ring.claim(frame.width, frame.height, drop_newest=False)
                _fill(claimed.y, frame.y)
                _fill(claimed.u, frame.u)
                _fill(claimed.v, frame.v)
                ring.commit(claimed, frame.pts, 0.0)
                count += 1
            source.close()
            best = min(best, time.perf_counter() - started)
    finally:
        ring.close()
        path.unlink(missing_ok=True)
    return count / best, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small clip, one repeat (smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="decoder threads, for both")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed: run scripts/setup --test", file=sys.stderr)
        return 2
    width, height, frames, repeats = (320, 240, 30, 1) if args.quick else (1920, 1080, 600, 3)
    with tempfile.TemporaryDirectory(prefix="zstream-bench-") as workdir:
        clip = make_scene_clip(Path(workdir) / "clip.mp4", width, height, frames)
        baseline = ffmpeg_fps(clip, frames, args.threads, repeats)
        ours, decoded = zstream_fps(clip, args.threads, repeats)
        keys, key_frames = zstream_fps(clip, args.threads, repeats, keyframes_only=True)
    rows = [
        (f"ffmpeg -threads {args.threads} -f null (decode only)", frames, baseline),
        ("zstream capture (decode + copy into ring)", decoded, ours),
        ("zstream capture, keyframes_only", key_frames, keys),
    ]
    print(
        f"capture benchmark: {width}x{height} H.264, {frames} frames (key frame every 30), "
        f"{args.threads} decoder thread(s), best of {repeats}; numpy {np.__version__}, PyAV {av.__version__}"
    )
    print(f"{'what':<50} {'frames':>7} {'fps':>9}")
    print("-" * 68)
    for name, count, fps in rows:
        print(f"{name:<50} {count:>7} {fps:>9.1f}")
    ratio = ours / baseline
    verdict = (
        "not a measurement: --quick is dominated by ffmpeg's start-up"
        if args.quick
        else ("PASS" if ratio >= 0.95 else "MISS")
    )
    print(f"\nzstream / ffmpeg: {ratio:.2f} (target >= 0.95): {verdict}")
    # One key frame per second of this 30 fps clip: key frames per second = seconds of video per second.
    print(f"keyframes_only covers {keys:.0f} s of video per second ({keys * 30 / ours:.0f}x the full decode)")
    return 0 if decoded == frames else 1


if __name__ == "__main__":
    sys.exit(main())

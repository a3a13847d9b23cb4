"""Capture benchmark: one camera's capture path against FFmpeg's own decoder on the same file.

zstream's capture path per frame is what a capture worker does: PyAV demux + decode (I420,
no colour conversion) and the copy of the three planes into a shared-memory ring slot. The
baseline is `ffmpeg -threads N -i FILE -f null -`, the decoder alone, with the same thread
count. Both read, as fast as they can, a 1080p H.264 clip of the synthetic traffic scene that
this script encodes with PyAV's libx264 (a scene, not noise: decoding cost depends on content).

    .venv/bin/python scripts/bench_capture.py [--quick] [--threads 1 2]
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

from zstream.capture import CameraGate, _fill
from zstream.core.planes import i420_size
from zstream.core.ring import SHM_DIR, Ring
from zstream.sources.base import AdmitAll, Decoding
from zstream.sources.file import FileSource
from zstream.sources.synthetic import TrafficScene
from zstream.stats import Counters


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
            source = FileSource(str(clip), realtime=False, decoding=Decoding(threads, keyframes_only))
            started = time.perf_counter()
            source.open()
            count = 0
            for frame in source.frames(threading.Event(), AdmitAll()):
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


def make_mjpeg_clip(path: Path, width: int, height: int, frames: int, fps: int = 30) -> Path:
    """The traffic scene as MJPEG, what older IP cameras send: every frame a whole JPEG."""
    scene = TrafficScene(width, height, seed=7, vehicles=8, label="bench", fps=fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(scene.render(index), format="yuv420p")
            container.mux(stream.encode(picture.reformat(format="yuvj420p")))
        container.mux(stream.encode())
    return path


def capped_cpu_s(clip: Path, fps: float | None, repeats: int) -> tuple[float, int]:
    """Best CPU seconds of reading the whole clip through a gate capped at `fps` (None: no cap)."""
    best, delivered = float("inf"), 0
    for _ in range(repeats):
        source = FileSource(str(clip), realtime=False)
        gate = CameraGate("bench", fps, Counters()) if fps else AdmitAll()  # the capture worker's cap
        started = time.process_time()
        source.open()
        delivered = sum(1 for _ in source.frames(threading.Event(), gate))
        source.close()
        best = min(best, time.process_time() - started)
    return best, delivered


def decode_rows(clip: Path, frames: int, threads: int, repeats: int) -> tuple[float, float, int, float, int]:
    baseline = ffmpeg_fps(clip, frames, threads, repeats)
    ours, decoded = zstream_fps(clip, threads, repeats)
    keys, key_frames = zstream_fps(clip, threads, repeats, keyframes_only=True)
    return baseline, ours, decoded, keys, key_frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small clip, one repeat (smoke test)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="decoder thread counts, for both"
    )
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed: run scripts/setup --test", file=sys.stderr)
        return 2
    sizes, frames, repeats = ([(320, 240)], 30, 1) if args.quick else ([(1920, 1080), (1280, 720)], 600, 3)
    print(
        f"capture benchmark: H.264 traffic scene, {frames} frames at 30 fps (key frame every 30), "
        f"best of {repeats}; numpy {np.__version__}, PyAV {av.__version__}"
    )
    print(
        f"{'size':<10} {'threads':>7} {'ffmpeg fps':>11} {'zstream fps':>12} {'ratio':>6} "
        f"{'keyframes_only':>15}"
    )
    print("-" * 66)
    worst, complete = float("inf"), True
    with tempfile.TemporaryDirectory(prefix="zstream-bench-") as workdir:
        for width, height in sizes:
            clip = make_scene_clip(Path(workdir) / f"clip-{height}.mp4", width, height, frames)
            for threads in args.threads:
                baseline, ours, decoded, keys, _ = decode_rows(clip, frames, threads, repeats)
                worst = min(worst, ours / baseline)
                complete &= decoded == frames
                print(
                    f"{width}x{height:<5} {threads:>7} {baseline:>11.1f} {ours:>12.1f} "
                    f"{ours / baseline:>6.2f} {keys * 30:>10.0f} fps*"
                )
        mjpeg = make_mjpeg_clip(Path(workdir) / "cam.mkv", *sizes[0], frames)
        full_cpu, full = capped_cpu_s(mjpeg, None, repeats)
        capped_cpu, capped = capped_cpu_s(mjpeg, 5, repeats)
    print("* keyframes_only: frames of video covered per second (one key frame stands for 30)")
    verdict = (
        "not a measurement: --quick is dominated by ffmpeg's start-up"
        if args.quick
        else ("PASS" if worst >= 0.95 else "MISS")
    )
    print(f"\nworst zstream / ffmpeg: {worst:.2f} (target >= 0.95): {verdict}")
    width, height = sizes[0]
    print(
        f"\nfps cap on an MJPEG {width}x{height} camera (30 fps): "
        f"uncapped {full} frames in {full_cpu:.2f} CPU s; "
        f"capped at 5 fps {capped} frames in {capped_cpu:.2f} CPU s = "
        f"{capped_cpu / full_cpu:.2f} of the CPU (frames over the cap are never decoded)"
    )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())

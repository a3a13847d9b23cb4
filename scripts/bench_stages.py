"""Stage ceilings: the frames per second each stage of the pipeline gets through on one core.

Each stage is fed as fast as it takes frames, and its CPU time per frame gives its ceiling on
one core (1000 / ms per frame); a stage with N workers scales by N, the batcher is one.

  capture    PyAV decoding of the 720p H.264 clip of bench_scale (synthetic traffic, 10 fps,
             a key frame every 10) and the copy into a ring slot of the frames the output rate
             sends (the others passed over, as capture does by default), per decoded frame; and
             with every frame copied (validation.frames = "all"); beside them, `ffmpeg -threads 1
             -f null` on the same clip (decoding alone)
  validate   zstream.validation.Validator on those frames in a ring, default settings: the output
             rate (5 of the clip's 10 fps) picks the frames to send; those are measured, then
             scaled to 640 px and JPEG-encoded (q90). Per decoded frame and per frame sent, and
             with `validation.frames = "all"` (every frame measured)
  batch      a real batcher worker process (`python -m zstream.worker batch ...`), fed by
             another process with what validation sends it (Output messages of 640x360 JPEG
             frames of the clip, 50 cameras), writing batches of 8 to the real Redis, until
             every frame is in the stream: its CPU per written frame, and frames/s on the wall
             clock (Redis on the same machine; its CPU is shown apart)

Figures are CPU time (process or thread), so other load on the machine changes them less than
it changes wall-clock rates; run it on a quiet machine all the same.

    .venv/bin/python scripts/bench_stages.py [--frames 20000] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import psutil
import redis
import zmq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_scale import make_clip  # noqa: E402

from zstream.core.planes import i420_planes  # noqa: E402
from zstream.core.ring import Ring, ring_path  # noqa: E402
from zstream.core.wire import FrameMeta, FrameRef, Output, encode  # noqa: E402
from zstream.pixels import jpeg_encode, scale_i420  # noqa: E402
from zstream.quality import CameraQuality, Thresholds  # noqa: E402
from zstream.rate import FpsCap  # noqa: E402
from zstream.rundir import make_private_dir, write_pipeline  # noqa: E402
from zstream.stats import Counters  # noqa: E402
from zstream.topology import Topology, initial_placement, parse_topology  # noqa: E402
from zstream.topology.schema import BatcherSettings  # noqa: E402
from zstream.validation import Validator  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
CAMERAS = 50  # fed to the batcher, round robin
WIDTH, HEIGHT = 1280, 720
OUT_WIDTH, OUT_HEIGHT = 640, 360
WRITE_TIMEOUT_S = 300


def decoded_frames(clip: Path) -> list[np.ndarray]:
    """The clip's frames as I420 arrays (h*3/2, w)."""
    with av.open(str(clip)) as container:
        return [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]


def capture_ms(clip: Path, passes: int, output_fps: float | None) -> float:
    """CPU ms per decoded frame of PyAV decoding + the copy into a ring slot of the frames the
    output rate sends (`output_fps`; 0: every frame, as with validation.frames = "all"), the
    others passed over as capture does; `output_fps` None: decoding alone, nothing copied."""
    ring_file = Path(tempfile.mkdtemp()) / "ring"
    ring = Ring.create(ring_file, slots=4, capacity=WIDTH * HEIGHT * 3 // 2)
    frames = 0
    started = time.thread_time()
    for _ in range(passes):
        unsent = FpsCap(output_fps)
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            for frame in container.decode(stream):
                frames += 1
                if output_fps is None:
                    continue
                if not unsent.admit(frame.time):
                    ring.pass_over(frame.time, frame.time)
                    continue
                slot = ring.claim(frame.width, frame.height, drop_newest=False)
                for plane, target in zip(frame.planes[:3], (slot.y, slot.u, slot.v), strict=True):
                    source = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                    np.copyto(target, source[:, : target.shape[1]])
                _, generation = ring.commit(slot, frame.time, time.time())
                ring.release(slot.slot, generation)
    pyav = (time.thread_time() - started) * 1000 / frames
    ring.close()
    ring.unlink()
    shutil.rmtree(ring_file.parent)
    return pyav


def ffmpeg_ms(clip: Path, passes: int) -> float:
    """CPU ms per frame of `ffmpeg -threads 1 -f null` decoding the clip `passes` times."""
    with av.open(str(clip)) as container:
        frames = passes * sum(1 for _ in container.decode(video=0))
    command = ["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", "-stream_loop", str(passes - 1)]
    child = psutil.Process(os.getpid())
    before = child.cpu_times()
    subprocess.run([*command, "-i", str(clip), "-f", "null", "-"], check=True)
    after = child.cpu_times()
    ffmpeg = (
        after.children_user + after.children_system - before.children_user - before.children_system
    ) * 1000
    return ffmpeg / frames


def topology_for(run_dir: Path, stream: str, frames_mode: str = "output", cameras: int = 1) -> Topology:
    return parse_topology(
        {
            "run_dir": str(run_dir),
            "redis": {
                "url": REDIS_URL,
                "stream": f"{stream}:frames",
                "qc_stream": f"{stream}:qc",
                "maxlen": 1000,
            },
            "validation": {"frames": frames_mode},
            "tap": {"endpoint": "tcp://127.0.0.1:*"},
            "control": {"endpoint": "tcp://127.0.0.1:*"},
            "metrics": {"address": "127.0.0.1:0"},
            "cameras": [
                {"id": f"cam-{i:03d}", "url": "synthetic://traffic?size=1280x720"} for i in range(cameras)
            ],
        },
        base_dir=run_dir,
    )


def validate_ms(frames: list[np.ndarray], mode: str, rounds: int) -> tuple[float, float, int]:
    """CPU ms of Validator.accept per decoded frame and per frame sent, and frames sent. In
    "output" mode it gets what capture announces: the frames the output rate sends on."""
    workdir = Path(tempfile.mkdtemp(prefix="zs-bench-"))
    run_dir = workdir / "run"
    make_private_dir(run_dir)
    topology = topology_for(run_dir, f"bench:{uuid.uuid4().hex[:8]}", mode)
    ring = Ring.create(ring_path(topology.run_id, "cam-000"), slots=8, capacity=WIDTH * HEIGHT * 3 // 2)
    context = zmq.Context.instance()
    sink = context.socket(zmq.PULL)
    sink.setsockopt(zmq.RCVHWM, 100000)
    sink.bind(topology.endpoint("batch"))
    validator = Validator(topology, 0, context, Counters())
    spent = 0.0
    sent = 0
    announced = FpsCap(topology.batcher.output_fps if mode == "output" else 0)
    try:
        for index in range(rounds * len(frames)):
            frame = frames[index % len(frames)]
            if not announced.admit(index / 10):
                continue
            slot = ring.claim(WIDTH, HEIGHT, drop_newest=False)
            planes = i420_planes(frame, WIDTH, HEIGHT)
            for target, plane in zip((slot.y, slot.u, slot.v), planes, strict=True):
                np.copyto(target, plane)
            pts = index / 10
            seq, generation = ring.commit(slot, pts, time.time())
            message = encode(FrameRef("cam-000", seq, slot.slot, generation, WIDTH, HEIGHT, pts, time.time()))
            started = time.thread_time()
            validator.handle(message)
            spent += time.thread_time() - started
            while sink.poll(0):
                sink.recv_multipart()
                sent += 1
        while sink.poll(500):  # the last one may still be on its way
            sink.recv_multipart()
            sent += 1
    finally:
        validator.close()
        sink.close(linger=0)
        ring.close()
        ring.unlink()
        shutil.rmtree(workdir)
    return spent * 1000 / (rounds * len(frames)), spent * 1000 / max(1, sent), sent


def qc_effect(frames: int) -> list[tuple[str, int, int, int]]:
    """What `validation.frames = "output"` changes in the verdicts: real CCTV footage (vtest.avi,
    10 fps, JPEG-encoded like a camera's), clean and with a fault from its middle on, judged by a
    camera that measures every frame ("all") and by one that measures every second frame (5 of
    10 fps sent: "output"). Per case: (frames both judged, verdicts that differ, rejected by all,
    rejected by output) on the frames both judged."""
    from tests import quality_real as qr
    from zstream.quality import CameraQuality, Thresholds

    clip = [luma for luma, _ in qr.live_clip(frames)]
    half = len(clip) // 2
    faults: dict[str, Any] = {
        "clean": lambda k, luma: luma,
        "defocus from the middle": lambda k, luma: cv2.GaussianBlur(luma, (0, 0), 4) if k >= half else luma,
        "frozen from the middle": lambda k, luma: clip[half] if k >= half else luma,
        "covered from the middle": lambda k, luma: np.full_like(luma, 30) if k >= half else luma,
    }
    rows = []
    for name, fault in faults.items():
        every, sent = CameraQuality(Thresholds()), CameraQuality(Thresholds())
        differ = rejected_all = rejected_out = judged = 0
        for k, luma in enumerate(clip):
            picture = fault(k, luma)
            verdict = every.assess(picture, k / qr.FPS).reasons
            if k % 2:
                continue
            other = sent.assess(picture, k / qr.FPS).reasons
            judged += 1
            differ += verdict != other
            rejected_all += bool(verdict)
            rejected_out += bool(other)
        rows.append((name, judged, differ, rejected_all, rejected_out))
    return rows


def feed(endpoint: str, messages: int, payloads: list[bytes], ready: Any) -> None:
    """Run in a process of its own: push `messages` Output messages as the batcher takes them."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1000)
    push.connect(endpoint)
    ready.wait()
    for index in range(messages):
        camera, seq = f"cam-{index % CAMERAS:03d}", index // CAMERAS
        meta = FrameMeta(
            camera, seq, seq / 5, time.time(), time.time(), OUT_WIDTH, OUT_HEIGHT, "jpeg", "bgr24",
            (OUT_HEIGHT, OUT_WIDTH, 3), {"sharpness": 1.0, "brightness": 120.0, "contrast": 0.5},
        )  # fmt: skip
        push.send_multipart([encode(Output(meta)), payloads[index % len(payloads)]])
    push.close(linger=-1)
    context.term()


def find_redis_server() -> psutil.Process | None:
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "redis-server":
            return process
    return None


def cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return times.user + times.system


def batch_ceiling(frames: list[np.ndarray], messages: int) -> tuple[float, float, float, int]:
    """(batcher CPU ms per written frame, wall frames/s, Redis CPU ms per frame, payload bytes)."""
    payloads = [jpeg_encode(*scale_planes(frame), 90)[0] for frame in frames[:20]]
    workdir = Path(tempfile.mkdtemp(prefix="zs-bench-"))
    run_dir = workdir / "run"
    make_private_dir(run_dir)
    stream = f"bench:{uuid.uuid4().hex[:8]}"
    topology = topology_for(run_dir, stream, cameras=CAMERAS)
    write_pipeline(run_dir, topology, initial_placement(topology))
    worker = subprocess.Popen(
        [sys.executable, "-m", "zstream.worker", "batch", "0", str(run_dir), str(os.getpid())], cwd=REPO
    )
    client = redis.Redis.from_url(REDIS_URL)
    ready = multiprocessing.Event()
    feeder = multiprocessing.Process(
        target=feed, args=(topology.endpoint("batch"), messages, payloads, ready)
    )
    try:
        deadline = time.monotonic() + 30
        while not (run_dir / "batch.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        feeder.start()
        time.sleep(1.0)  # the worker idles: its start-up is not measured
        batcher, server = psutil.Process(worker.pid), find_redis_server()
        cpu_before, redis_before, started = cpu(batcher), cpu(server), time.perf_counter()
        ready.set()
        written = 0
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while written < messages and time.monotonic() < deadline:
            time.sleep(0.02)
            with_stream = client.exists(f"{stream}:frames")
            written = client.xinfo_stream(f"{stream}:frames")["entries-added"] * 8 if with_stream else 0
        elapsed = time.perf_counter() - started
        spent, redis_spent = cpu(batcher) - cpu_before, cpu(server) - redis_before
    finally:
        feeder.join(60)
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        client.delete(f"{stream}:frames", f"{stream}:qc")
        client.close()
        shutil.rmtree(workdir)
    if written < messages:
        raise RuntimeError(f"the batcher wrote {written} of {messages} frames in {WRITE_TIMEOUT_S} s")
    payload = sum(len(p) for p in payloads) // len(payloads)
    return spent * 1000 / messages, messages / elapsed, redis_spent * 1000 / messages, payload


def necessary_ms(frames: list[np.ndarray], rounds: int) -> tuple[float, float, float]:
    """CPU ms per decoded frame of the work default settings cannot do without, done bare on the
    frames the output rate sends: the quality measure, and the scaling and JPEG of the output
    (no ring, no copy, no message, no Redis). Returned as (measure, scale, JPEG)."""
    quality = CameraQuality(Thresholds())
    sent = FpsCap(BatcherSettings().output_fps)
    spent = [0.0, 0.0, 0.0]
    for index in range(rounds * len(frames)):
        if not sent.admit(index / 10):
            continue
        planes = i420_planes(frames[index % len(frames)], WIDTH, HEIGHT)
        marks = [time.thread_time()]
        quality.assess(planes[0], index / 10)
        marks.append(time.thread_time())
        scaled = scale_i420(*planes, OUT_WIDTH, OUT_HEIGHT)
        marks.append(time.thread_time())
        jpeg_encode(*scaled, BatcherSettings().jpeg_quality)
        marks.append(time.thread_time())
        for part in range(3):
            spent[part] += marks[part + 1] - marks[part]
    measure, scale, jpeg = (1000 * seconds / (rounds * len(frames)) for seconds in spent)
    return measure, scale, jpeg


def scale_planes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return scale_i420(*i420_planes(frame, WIDTH, HEIGHT), OUT_WIDTH, OUT_HEIGHT)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=20000, help="frames fed to the batcher")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few frames, rough figures")
    args = parser.parse_args()
    messages = 800 if args.quick else args.frames
    rounds, passes = (1, 1) if args.quick else (4, 4)
    workdir = Path(tempfile.mkdtemp(prefix="zs-bench-clip-"))
    try:
        clip = make_clip(workdir / "clip.mp4", 4 if args.quick else 10)
        frames = decoded_frames(clip)
        pyav = capture_ms(clip, passes, BatcherSettings().output_fps)
        pyav_all = capture_ms(clip, passes, 0)
        decode_only = capture_ms(clip, passes, None)
        ffmpeg = ffmpeg_ms(clip, passes)
        per_decoded, per_sent, sent = validate_ms(frames, "output", rounds)
        all_decoded, _, _ = validate_ms(frames, "all", rounds)
        measure, scale, jpeg = necessary_ms(frames, rounds)
        batch_ms, batch_fps, redis_ms, payload = batch_ceiling(frames, messages)
        effect = qc_effect(60 if args.quick else 240)
    finally:
        shutil.rmtree(workdir)
    beyond = pyav - decode_only + per_decoded + batch_ms * sent / (rounds * len(frames))
    rows = [
        ("capture: ffmpeg -threads 1 (decoding alone)", ffmpeg, "decoded frame"),
        ("capture: PyAV decoding alone", decode_only, "decoded frame"),
        ("capture: PyAV decode + copy into the ring of the frames sent", pyav, "decoded frame"),
        ('capture: PyAV decode + copy of every frame (frames = "all")', pyav_all, "decoded frame"),
        ('validate (frames = "output", default)', per_decoded, "decoded frame"),
        ('validate (frames = "output", default)', per_sent, f"frame sent ({sent})"),
        ('validate (frames = "all")', all_decoded, "decoded frame"),
        ("batch (the single writer)", batch_ms, "written frame"),
    ]
    print(f"# Stage ceilings on one core ({platform.machine()}, {os.cpu_count()} cores)")
    print(
        f"clip: {WIDTH}x{HEIGHT} H.264, {len(frames)} frames; out: {OUT_WIDTH}x{OUT_HEIGHT} JPEG q90", end=""
    )
    print(f" (~{payload // 1000} kB)\n")
    print("| stage | CPU ms per frame | frames/s on one core | per |")
    print("|---|---|---|---|")
    for name, ms, per in rows:
        print(f"| {name} | {ms:.3f} | {1000 / ms:,.0f} | {per} |")
    print(
        f"\nbatch, wall clock: {batch_fps:,.0f} frames/s written ({messages} frames; Redis server CPU ",
        end="",
    )
    print(f"{redis_ms:.3f} ms per frame)")
    print(
        f"work beyond decoding, stages measured alone: {beyond:.3f} ms per decoded frame (capture's "
        f"copy {pyav - decode_only:.3f} over PyAV decoding alone, validation, the batcher's share)"
    )
    floor = measure + scale + jpeg
    print(
        f"of it, what default settings cannot do without, done bare: {floor:.3f} ms per decoded frame "
        f"(quality measure {measure:.3f}, scaling {scale:.3f}, range expansion and JPEG {jpeg:.3f}, "
        f"on the frames sent): with nothing else, no pipeline gets past {ffmpeg / (ffmpeg + floor):.2f} "
        "of the ffmpeg ceiling on this clip"
    )
    share = sent / (rounds * len(frames))
    print("\nA model, not a measurement: N cores, the clip's cameras flat out, each stage at its ceiling")
    print("above (capture = PyAV decode + copy; validation per decoded frame; the one batcher per")
    print("written frame, never more than one core). Real runs add the supervisor (~1 % of a core),")
    print("cache contention (validation beside decoders costs up to 1.5x its figure alone) and Redis.\n")
    print("| cores | decoded fps | written fps | batcher busy | of the ffmpeg ceiling |")
    print("|---|---|---|---|---|")
    per_frame = pyav + per_decoded + batch_ms * share  # ms of CPU per decoded frame, all stages
    for cores in (1, 2, 4, 8, 16, 32, 64):
        fps = min(cores * 1000 / per_frame, 1000 / (batch_ms * share))
        busy = fps * share * batch_ms / 1000
        print(
            f"| {cores} | {fps:,.0f} | {fps * share:,.0f} | {busy:.0%} | {fps * ffmpeg / 1000 / cores:.2f} |"
        )
    print('\nQC verdicts, validation.frames = "output" (every second frame measured) against "all",')
    print("on the frames both measured (real CCTV footage, vtest.avi, 10 fps):\n")
    print("| case | frames | verdicts that differ | rejected: all / output |")
    print("|---|---|---|---|")
    for name, judged, differ, rejected_all, rejected_out in effect:
        print(f"| {name} | {judged} | {differ} | {rejected_all} / {rejected_out} |")


if __name__ == "__main__":
    main()

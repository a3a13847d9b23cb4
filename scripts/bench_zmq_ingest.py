"""How long an imagezmq sender waits for a zmq:// camera's answer, against imagezmq's own hub.

A real `imagezmq.ImageSender` (REQ) sends synthetic traffic frames, raw BGR (`send_image`) and
JPEG q90 (`send_jpg`), one at a time, and times each send until its reply. The baseline is
imagezmq's `ImageHub` answering at once (receive, reply: the transport alone). The zmq://
camera answers after its checks and decoding to I420, with a reader thread taking the frames as
the capture worker would. Same frames, same run, loopback TCP.

    .venv/bin/python scripts/bench_zmq_ingest.py [--quick] [--frames N]
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import imagezmq
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zstream.sources.base import AdmitAll
from zstream.sources.synthetic import TrafficScene
from zstream.sources.zmq_hub import ZmqSource, message_limit

Send = Callable[[imagezmq.ImageSender, np.ndarray | bytes], bytes]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def round_trips(port: int, payloads: list[np.ndarray | bytes], send: Send) -> np.ndarray:
    """Milliseconds from each send to its reply."""
    sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
    samples = []
    try:
        for payload in payloads:
            start = time.perf_counter()
            reply = send(sender, payload)
            samples.append((time.perf_counter() - start) * 1000)
            if reply != b"OK":
                raise SystemExit(f"the hub answered {reply[:80]!r}")
    finally:
        sender.close()
    return np.array(samples)


def bare_hub(port: int, count: int, jpeg: bool) -> threading.Thread:
    """imagezmq's ImageHub answering `count` messages at once."""

    def serve() -> None:
        with imagezmq.ImageHub(open_port=f"tcp://127.0.0.1:{port}") as hub:
            for _ in range(count):
                hub.recv_jpg() if jpeg else hub.recv_image()
                hub.send_reply(b"OK")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def zstream_hub(port: int, stop: threading.Event) -> tuple[ZmqSource, threading.Thread]:
    source = ZmqSource(
        f"zmq://127.0.0.1:{port}", "bench", max_size=(1920, 1080), message_limit=message_limit([(1920, 1080)])
    )
    source.open()
    thread = threading.Thread(target=lambda: [None for _ in source.frames(stop, AdmitAll())], daemon=True)
    thread.start()
    return source, thread


def measure(payloads: list[np.ndarray | bytes], send: Send, jpeg: bool) -> tuple[np.ndarray, np.ndarray]:
    port = free_port()
    thread = bare_hub(port, len(payloads), jpeg)
    bare = round_trips(port, payloads, send)
    thread.join(5)
    port, stop = free_port(), threading.Event()
    source, reader = zstream_hub(port, stop)
    try:
        ours = round_trips(port, payloads, send)
    finally:
        stop.set()
        reader.join(5)
        source.close()
    return bare, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 frames per case (a smoke run)")
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    count = 20 if args.quick else args.frames
    cv2.setNumThreads(1)
    print(f"round trip per frame, imagezmq sender -> hub -> reply, {count} frames, ms p50 / p99")
    print(f"{'input':<22} {'imagezmq ImageHub':>18} {'zmq:// camera':>15} {'added p50':>10}")
    for width, height in ((1280, 720), (1920, 1080)):
        scene = TrafficScene(width, height, seed=3, vehicles=10, label="bench")
        frames = [cv2.cvtColor(scene.render(i), cv2.COLOR_YUV2BGR_I420) for i in range(min(count, 20))]
        frames = [frames[i % len(frames)] for i in range(count)]
        jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
        cases = [
            ("raw", frames, lambda s, p: s.send_image("bench", p), False),
            ("jpeg q90", jpegs, lambda s, p: s.send_jpg("bench", p), True),
        ]
        for label, payloads, send, jpeg in cases:
            bare, ours = measure(payloads, send, jpeg)
            name = f"{label} {width}x{height}"
            cells = [f"{np.median(t):.2f} / {np.percentile(t, 99):.2f}" for t in (bare, ours)]
            print(f"{name:<22} {cells[0]:>18} {cells[1]:>15} {np.median(ours) - np.median(bare):>10.2f}")


if __name__ == "__main__":
    main()

"""Capture pieces: the fps cap, scaling straight into a ring slot, and the frames passed over."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import cv2
import numpy as np
import zmq

from zstream.capture import CameraThread, _fill
from zstream.core.planes import i420_size
from zstream.core.ring import SHM_DIR, ResumePoint, Ring, ring_path
from zstream.core.wire import decode
from zstream.rate import FpsCap
from zstream.sources import DecodedFrame
from zstream.stats import Counters
from zstream.topology import parse_topology


def admitted(cap: FpsCap, times: list[float]) -> list[float]:
    return [t for t in times if cap.admit(t)]


def test_fps_cap_keeps_the_configured_rate_of_stream_time() -> None:
    times = [i / 30 for i in range(300)]  # 10 s at 30 fps
    kept = admitted(FpsCap(10), times)
    assert len(kept) == 100
    assert np.allclose(np.diff(kept), 0.1, atol=1e-6)


def test_fps_cap_does_not_lose_rate_to_jitter() -> None:
    rng = np.random.default_rng(1)
    times = sorted(i / 25 + rng.uniform(-0.004, 0.004) for i in range(250))  # 10 s at ~25 fps
    assert 95 <= len(admitted(FpsCap(10), times)) <= 101


def test_fps_cap_restarts_its_schedule_after_a_gap() -> None:
    cap = FpsCap(5)
    assert admitted(cap, [0.0, 0.1, 0.2, 0.3]) == [0.0, 0.2]
    assert admitted(cap, [100.0, 100.05, 100.2]) == [100.0, 100.2]  # e.g. after a reconnect


def test_no_cap_admits_everything() -> None:
    assert admitted(FpsCap(None), [0.0, 0.0, 0.001]) == [0.0, 0.0, 0.001]


def test_resize_writes_into_the_ring_slot_itself() -> None:
    path = SHM_DIR / f"zstream-test-{uuid.uuid4().hex[:8]}"
    ring = Ring.create(path, slots=2, capacity=i420_size(320, 180))
    try:
        source = np.random.default_rng(2).integers(0, 256, (360, 640), dtype=np.uint8)
        strided = np.zeros((360, 704), np.uint8)  # decoder planes have padded rows
        strided[:, :640] = source
        claimed = ring.claim(320, 180, drop_newest=False)
        _fill(claimed.y, strided[:, :640])
        _fill(claimed.u, source[:90, :160])
        expected = cv2.resize(source, (320, 180), interpolation=cv2.INTER_AREA)
        ring.commit(claimed, None, 0.0)
        y, u, _ = ring.planes(claimed.slot)
        assert np.array_equal(y, expected)
        assert np.array_equal(u, source[:90, :160])
    finally:
        ring.close()
        path.unlink()


def test_fps_cap_starts_afresh_when_time_goes_back() -> None:
    cap = FpsCap(5)
    assert admitted(cap, [100.0, 100.2]) == [100.0, 100.2]
    assert admitted(cap, [0.0, 0.1, 0.2]) == [0.0, 0.2]  # a restarted stream: pts from 0 again


def test_frames_the_output_rate_will_not_send_are_passed_over_before_the_ring(run_dir: Path) -> None:
    """validation.frames = "output" (the default): at 5 of 10 fps out, capture copies and announces
    the 5 frames sent on; the others take their seq (the books count them captured and skipped)
    without a slot. With "all", every frame goes on to be measured."""
    run_dir.mkdir(parents=True)
    topology = parse_topology(
        {
            "run_dir": str(run_dir),
            "batcher": {"output_fps": 5},
            "capture": {"queue_depth": 32},
            "cameras": [{"id": "cam", "url": "synthetic://traffic?size=64x64"}],
        },
        base_dir=run_dir,
    )
    ring = Ring.create(ring_path(topology.run_id, "cam"), slots=16, capacity=i420_size(64, 64))
    context = zmq.Context.instance()
    pull = context.socket(zmq.PULL)
    pull.bind(topology.endpoint("validate-0"))
    counters = Counters()
    camera = CameraThread(topology.cameras[0], 0, topology, context, counters, threading.Event())
    plane = np.full((64, 64), 100, np.uint8)
    chroma = np.full((32, 32), 128, np.uint8)

    def play(first: int) -> list[int]:
        for index in range(first, first + 10):
            camera._deliver(DecodedFrame(64, 64, plane, chroma, chroma, pts=index / 10, position=index / 10))
        announced = []
        while pull.poll(500):
            announced.append(decode(pull.recv()).seq)
        return announced

    try:
        assert play(0) == [0, 2, 4, 6, 8]
        assert ring.next_seq == 10 and ring.resume_point() == ResumePoint(9, 0.9, 0.9)
        counts = counters.snapshot()
        assert counts[("captured", "cam", "")] == 10 and counts[("skipped", "cam", "output_rate")] == 5
        every_frame = topology.validation.model_copy(update={"frames": "all"})
        camera.follow_output_rate(topology.model_copy(update={"validation": every_frame}))
        assert play(10) == list(range(10, 20))
    finally:
        camera._push.close(linger=0)
        pull.close(linger=0)
        ring.close()
        ring.unlink()

"""Capture pieces: the fps cap, and scaling straight into a ring slot."""

from __future__ import annotations

import uuid

import cv2
import numpy as np

from zstream.capture import _fill
from zstream.core.planes import i420_size
from zstream.core.ring import SHM_DIR, Ring
from zstream.rate import FpsCap


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

"""Shared-memory rings: frames cross processes intact, overwrites are detected, bad refs refused."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from zstream.core.planes import i420_size
from zstream.core.ring import SHM_DIR, ResumePoint, Ring, ring_segment_size
from zstream.errors import RingError


@pytest.fixture
def ring_file() -> Iterator[Path]:
    path = SHM_DIR / f"zstream-test-{uuid.uuid4().hex[:8]}"
    yield path
    path.unlink(missing_ok=True)


def write(
    ring: Ring, width: int, height: int, value: int, drop_newest: bool = False
) -> tuple[int, int, int] | None:
    claimed = ring.claim(width, height, drop_newest)
    if claimed is None:
        return None
    claimed.y[:] = value
    claimed.u[:] = value + 1
    claimed.v[:] = value + 2
    seq, generation = ring.commit(claimed, pts=value / 10, capture_ts=1000.0 + value)
    return claimed.slot, generation, seq


def test_create_reserves_the_whole_segment(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=4, capacity=i420_size(64, 48))
    assert ring_file.stat().st_size == ring_segment_size(4, i420_size(64, 48))
    assert ring_file.stat().st_blocks * 512 >= ring_file.stat().st_size  # allocated, not sparse
    with pytest.raises(FileExistsError):
        Ring.create(ring_file, slots=4, capacity=100)
    ring.close()


def _reader(path: str, slot: int, generation: int, out: multiprocessing.Queue) -> None:
    ring = Ring.attach(Path(path))
    y, u, v = ring.planes(slot)
    out.put(
        (ring.is_current(slot, generation), int(y.sum()), int(u[0, 0]), int(v[0, 0]), ring.info(slot).seq)
    )
    ring.close()


def test_a_frame_written_in_one_process_is_read_intact_in_another(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=4, capacity=i420_size(64, 48))
    slot, generation, seq = write(ring, 64, 48, 7)
    out: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(
        target=_reader, args=(str(ring_file), slot, generation, out)
    )
    process.start()
    current, y_sum, u0, v0, seen_seq = out.get(timeout=30)
    process.join(30)
    assert current and y_sum == 7 * 64 * 48 and (u0, v0) == (8, 9) and seen_seq == seq == 0
    ring.close()


def test_overwritten_slot_is_detected_by_generation(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=2, capacity=i420_size(32, 32))
    first = write(ring, 32, 32, 1)
    write(ring, 32, 32, 2)
    assert ring.is_current(first[0], first[1])
    write(ring, 32, 32, 3)  # laps the ring: slot of `first` is rewritten
    assert not ring.is_current(first[0], first[1])
    assert ring.info(first[0]).seq == 2


def test_a_slot_being_written_is_never_current(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=2, capacity=i420_size(32, 32))
    claimed = ring.claim(32, 32, drop_newest=False)
    assert claimed.generation % 2 == 1
    assert not ring.is_current(claimed.slot, claimed.generation)
    assert not ring.is_current(claimed.slot, claimed.generation - 1)


def test_drop_newest_refuses_while_frames_are_in_flight_and_resumes_on_release(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=2, capacity=i420_size(32, 32))
    a = write(ring, 32, 32, 1, drop_newest=True)
    b = write(ring, 32, 32, 2, drop_newest=True)
    assert write(ring, 32, 32, 3, drop_newest=True) is None  # both slots unreleased
    assert ring.is_current(a[0], a[1])  # nothing was overwritten
    ring.release(a[0], a[1])
    c = write(ring, 32, 32, 3, drop_newest=True)
    assert c is not None and c[0] == a[0]
    assert ring.is_current(b[0], b[1])


def test_drop_newest_reclaims_a_slot_whose_reader_vanished(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=1, capacity=i420_size(32, 32))
    write(ring, 32, 32, 1, drop_newest=True)
    assert ring.claim(32, 32, drop_newest=True, reclaim_after_s=60) is None
    assert ring.claim(32, 32, drop_newest=True, reclaim_after_s=0) is not None


def test_sequence_numbers_survive_a_new_writer(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=3, capacity=i420_size(32, 32))
    for value in range(4):
        write(ring, 32, 32, value)
    ring.close()
    again = Ring.attach(ring_file)  # a restarted capture worker
    assert write(again, 32, 32, 9)[2] == 4


def test_a_restarted_writer_resumes_after_the_last_frame_given_a_seq_written_or_passed_over(
    ring_file: Path,
) -> None:
    ring = Ring.create(ring_file, slots=3, capacity=i420_size(32, 32))
    assert ring.resume_point() is None
    claimed = ring.claim(32, 32, drop_newest=False)
    assert claimed is not None
    ring.commit(claimed, pts=0.1, capture_ts=1000.0, position=0.1)
    assert ring.resume_point() == ResumePoint(0, 0.1, 0.1)
    assert ring.pass_over(pts=0.2, position=0.2) == 1  # takes a seq, as a written frame would
    assert ring.pass_over(pts=None, position=None) == 2
    ring.close()
    again = Ring.attach(ring_file)  # a restarted capture worker
    assert again.next_seq == 3 and again.frames_in_flight() == 1  # nothing passed over is in flight
    assert again.resume_point() == ResumePoint(2, None, None)
    again.pass_over(pts=0.4, position=0.4)
    assert again.resume_point() == ResumePoint(3, 0.4, 0.4)
    claimed = again.claim(32, 32, drop_newest=False)
    assert claimed is not None
    assert again.commit(claimed, pts=0.5, capture_ts=1000.5, position=0.5)[0] == 4
    assert again.resume_point() == ResumePoint(4, 0.5, 0.5)
    again.claim(32, 32, drop_newest=False)  # the writer dies mid-write: its frame is not the point
    assert again.resume_point() == ResumePoint(4, 0.5, 0.5)


def test_a_writer_killed_half_way_through_a_step_still_leaves_a_resume_point(ring_file: Path) -> None:
    """kill -9 between two header writes: each half-updated state names where to resume."""
    ring = Ring.create(ring_file, slots=3, capacity=i420_size(32, 32))
    ring.pass_over(pts=0.1, position=0.1)
    # Passing over: the note is written, next_seq is not yet.
    ring._header["passed_seq"], ring._header["passed_pts"], ring._header["passed_position"] = 2, 0.2, 0.2
    assert ring.resume_point() == ResumePoint(1, 0.2, 0.2)  # after the frame never counted
    ring.pass_over(pts=0.2, position=0.2)  # what a restarted writer does with the next frame
    assert ring.next_seq == 2
    # Committing: next_seq is counted, writes is not yet.
    claimed = ring.claim(32, 32, drop_newest=False)
    assert claimed is not None
    ring.commit(claimed, pts=0.3, capture_ts=1000.3, position=0.3)
    ring._header["writes"] = int(ring._header["writes"]) - 1
    assert ring.resume_point() == ResumePoint(2, 0.3, 0.3)


def test_bad_references_and_oversized_frames_are_refused(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=2, capacity=i420_size(32, 32))
    for bad_slot in (-1, 2, 10**9):
        with pytest.raises(RingError, match="out of range"):
            ring.is_current(bad_slot, 2)
        with pytest.raises(RingError, match="out of range"):
            ring.planes(bad_slot)
    with pytest.raises(RingError, match="does not fit"):
        ring.claim(64, 64, drop_newest=False)


def test_attach_refuses_what_is_not_a_ring(ring_file: Path) -> None:
    ring_file.write_bytes(b"\x00" * 8192)
    with pytest.raises(RingError, match="not a zstream ring"):
        Ring.attach(ring_file)
    ring_file.unlink()
    with pytest.raises(RingError, match="does not exist"):
        Ring.attach(ring_file)


def test_odd_sizes_use_rounded_up_chroma(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=2, capacity=i420_size(33, 17))
    slot, _, _ = write(ring, 33, 17, 5)
    y, u, v = ring.planes(slot)
    assert y.shape == (17, 33) and u.shape == (9, 17) and v.shape == (9, 17)
    assert ring.frame(slot).shape == (i420_size(33, 17),)
    assert np.all(v == 7)


def test_a_writer_killed_mid_write_does_not_break_the_slot(ring_file: Path) -> None:
    ring = Ring.create(ring_file, slots=1, capacity=i420_size(32, 32))
    ring.claim(32, 32, drop_newest=False)  # claimed, never committed: the writer "died" here
    restarted = Ring.attach(ring_file)
    slot, generation, _ = write(restarted, 32, 32, 4)
    assert generation % 2 == 0 and restarted.is_current(slot, generation)


def _hammer(path: str, seconds: float) -> None:
    """Writer: fill every frame with one byte value, as fast as possible."""
    ring = Ring.attach(Path(path))
    deadline = time.monotonic() + seconds
    value = 0
    while time.monotonic() < deadline:
        claimed = ring.claim(1920, 1080, drop_newest=False)
        value = (value + 1) % 251
        for plane in (claimed.y, claimed.u, claimed.v):
            plane.fill(value)
        ring.commit(claimed, None, 0.0)
    ring.close()


def test_concurrent_reader_never_accepts_a_torn_frame(ring_file: Path) -> None:
    """A writer laps a 2-slot ring of 1080p frames while this process reads: every frame the
    generation check accepts must be uniform, and the check must have caught real overwrites."""
    ring = Ring.create(ring_file, slots=2, capacity=i420_size(1920, 1080))
    writer = multiprocessing.get_context("spawn").Process(target=_hammer, args=(str(ring_file), 3.0))
    writer.start()
    accepted = rejected = 0
    deadline = time.monotonic() + 20
    while writer.is_alive() and time.monotonic() < deadline:
        slot = ring.next_seq % 2
        generation = ring.info(slot).generation
        if not ring.is_current(slot, generation):
            continue
        data = ring.frame(slot).copy()
        if ring.is_current(slot, generation):
            accepted += 1
            assert data.min() == data.max(), "a frame passed the generation check torn"
        else:
            rejected += 1
    writer.join(10)
    assert accepted > 10 and rejected > 0, (accepted, rejected)

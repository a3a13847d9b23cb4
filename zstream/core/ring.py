"""Shared-memory frame rings: one per camera, one writer, any number of readers.

A ring is a file in /dev/shm mapped by every process that touches the camera's frames.
The supervisor creates and unlinks it (so a worker killed with -9 leaks nothing, and a
restarted capture worker finds its ring and sequence numbers where it left them); the
capture worker writes; validation and batching read in place.

Layout: a 64-byte ring header, one 64-byte header per slot, then the slots' pixel data
(I420, page-aligned). Each slot header carries a generation counter used as a sequence
lock: odd while the writer fills the slot, even when the frame is complete, bumped on
every write. A reader holds (slot, generation) from the FrameRef and re-checks it after
reading: a mismatch means the frame was overwritten and must be dropped, so a torn frame
can never leave the pipeline. This relies on stores staying in order with stores and loads
with loads, which x86-64 guarantees (preflight refuses other architectures).

We map files directly instead of using multiprocessing.shared_memory, whose resource
tracker unlinks segments when an attaching process exits (Python < 3.13).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from zstream.core.planes import i420_planes, i420_size
from zstream.errors import RingError

SHM_DIR = Path("/dev/shm")
MAGIC = 0x5A535247  # "ZSRG"
LAYOUT_VERSION = 3
PAGE = 4096

RING_HEADER = np.dtype(
    [
        ("magic", "<u4"),
        ("version", "<u4"),
        ("slots", "<u4"),
        ("_pad", "<u4"),
        ("capacity", "<u8"),
        ("next_seq", "<u8"),
        ("writes", "<u8"),
        # The last frame passed over (decoded, never written: see Ring.pass_over), 1 + its seq
        # (0: none), and where its source can resume after it.
        ("passed_seq", "<u8"),
        ("passed_pts", "<f8"),
        ("passed_position", "<f8"),
    ]
)
SLOT_HEADER = np.dtype(
    [
        ("generation", "<u8"),
        ("released", "<u8"),
        ("seq", "<u8"),
        ("width", "<u4"),
        ("height", "<u4"),
        ("pts", "<f8"),
        ("capture_ts", "<f8"),
        ("written_mono", "<f8"),
        ("position", "<f8"),  # where the source can resume after this frame (NaN: cannot)
    ]
)
assert RING_HEADER.itemsize == 64 and SLOT_HEADER.itemsize == 64


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _align(value: int, to: int = PAGE) -> int:
    return (value + to - 1) // to * to


def _data_offset(slots: int) -> int:
    return _align(RING_HEADER.itemsize + slots * SLOT_HEADER.itemsize)


def ring_segment_size(slots: int, frame_bytes: int) -> int:
    """Bytes of shared memory a ring of `slots` frames of `frame_bytes` needs."""
    return _data_offset(slots) + slots * _align(frame_bytes)


def shm_space() -> tuple[int, int]:
    """(total, free) bytes of the shared memory rings live in."""
    stats = os.statvfs(SHM_DIR)
    return stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize


def ring_path(run_id: str, camera_id: str) -> Path:
    return SHM_DIR / f"zstream-{run_id}-{camera_id}"


def ring_paths_of_run(run_id: str) -> list[Path]:
    """Every segment this pipeline may have left behind (for cleanup after a crash)."""
    return sorted(SHM_DIR.glob(f"zstream-{run_id}-*"))


@dataclass(frozen=True, slots=True)
class WriteSlot:
    """A slot claimed by the writer: fill y/u/v, then commit."""

    slot: int
    generation: int  # odd while writing
    width: int
    height: int
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """What the slot header says about the frame in it: SLOT_HEADER's fields of the same names
    (the frame's are described in core.fields), a NaN there None here."""

    generation: int
    seq: int
    width: int
    height: int
    pts: float | None
    capture_ts: float
    position: float | None = None  # see DecodedFrame.position


# Where each SlotInfo field is in a slot header, and whether it may be None (NaN in the header).
_SLOT_NAMES: tuple[str, ...] = SLOT_HEADER.names or ()
_SLOT_INFO = tuple((_SLOT_NAMES.index(f.name), "None" in str(f.type)) for f in fields(SlotInfo))


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """The last frame a camera's writer gave a seq to, and where its source resumes after it."""

    seq: int
    pts: float | None
    position: float | None


class Ring:
    """A mapped ring segment. Use `create` (supervisor), or `attach` (workers)."""

    def __init__(self, path: Path, mapping: mmap.mmap) -> None:
        self.path = path
        self._map = mapping
        self._header = np.ndarray((), RING_HEADER, buffer=mapping, offset=0)
        self.slots = int(self._header["slots"])
        self.capacity = int(self._header["capacity"])
        self._stride = _align(self.capacity)
        self._slot_headers = np.ndarray(
            (self.slots,), SLOT_HEADER, buffer=mapping, offset=RING_HEADER.itemsize
        )
        self._data = np.ndarray(
            (self.slots, self._stride), np.uint8, buffer=mapping, offset=_data_offset(self.slots)
        )

    # ---- lifecycle ----------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, slots: int, capacity: int, first_seq: int = 0) -> Ring:
        """Create the segment, reserving every page now: a full /dev/shm fails here, cleanly,
        instead of killing a writer with SIGBUS later. `first_seq` continues the sequence of
        a camera whose ring is replaced (a live change of its size), so its seq never goes back."""
        size = ring_segment_size(slots, capacity)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                os.unlink(path)
                raise RingError(
                    f"cannot reserve {size / 2**20:.1f} MiB of shared memory for {path}: {exc}"
                ) from exc
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        header = np.ndarray((), RING_HEADER, buffer=mapping, offset=0)
        header["magic"], header["version"] = MAGIC, LAYOUT_VERSION
        header["slots"], header["capacity"] = slots, capacity
        header["next_seq"] = first_seq
        return cls(path, mapping)

    @classmethod
    def attach(cls, path: Path) -> Ring:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError as exc:
            raise RingError(f"ring {path} does not exist (is the supervisor running?)") from exc
        try:
            size = os.fstat(fd).st_size
            if size < PAGE:
                raise RingError(f"ring {path} is truncated ({size} bytes)")
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        header = np.ndarray((), RING_HEADER, buffer=mapping, offset=0)
        if int(header["magic"]) != MAGIC or int(header["version"]) != LAYOUT_VERSION:
            mapping.close()
            raise RingError(f"{path} is not a zstream ring of layout {LAYOUT_VERSION}")
        if ring_segment_size(int(header["slots"]), int(header["capacity"])) > size:
            mapping.close()
            raise RingError(f"ring {path} is smaller than its header claims")
        return cls(path, mapping)

    def close(self) -> None:
        """Unmap; views handed out earlier must no longer be used."""
        del self._header, self._slot_headers, self._data
        with contextlib.suppress(BufferError):  # a caller still holds a view: unmapped when it goes
            self._map.close()

    @property
    def size(self) -> int:
        """Bytes of shared memory the ring occupies."""
        return len(self._map)

    def unlink(self) -> None:
        self.path.unlink(missing_ok=True)

    # ---- writer ---------------------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        return int(self._header["next_seq"])

    def claim(
        self, width: int, height: int, drop_newest: bool, reclaim_after_s: float = 5.0
    ) -> WriteSlot | None:
        """Claim the next slot for a width x height frame; None when the ring is full and the
        policy is drop_newest. With drop_oldest the slot is overwritten whatever its state."""
        if i420_size(width, height) > self.capacity:
            raise RingError(
                f"a {width}x{height} frame does not fit this ring's slots ({self.capacity} bytes)"
            )
        slot = int(self._header["writes"]) % self.slots
        header = self._slot_headers[slot]
        if drop_newest and self._in_flight(header, reclaim_after_s):
            return None
        previous = int(header["generation"])
        # Odd while being written. A writer killed mid-write left it odd already: step by 2
        # so the parity (odd = incomplete) survives the crash.
        generation = previous + 1 if previous % 2 == 0 else previous + 2
        header["generation"] = generation
        y, u, v = self._planes(slot, width, height)
        return WriteSlot(slot, generation, width, height, y, u, v)

    def commit(
        self, claimed: WriteSlot, pts: float | None, capture_ts: float, position: float | None = None
    ) -> tuple[int, int]:
        """Publish a filled slot; returns (seq, generation) for the FrameRef."""
        header = self._slot_headers[claimed.slot]
        seq = self.next_seq
        header["seq"], header["width"], header["height"] = seq, claimed.width, claimed.height
        header["pts"] = math.nan if pts is None else pts
        header["position"] = math.nan if position is None else position
        header["capture_ts"], header["written_mono"] = capture_ts, time.monotonic()
        generation = claimed.generation + 1  # even: complete
        header["generation"] = generation
        self._header["next_seq"] = seq + 1
        self._header["writes"] = int(self._header["writes"]) + 1
        return seq, generation

    def pass_over(self, pts: float | None, position: float | None) -> int:
        """Give a decoded frame its seq without writing it (the output rate will not send it, so
        nobody would read it): the books count it captured, and a restarted writer resumes after
        it, as after a written frame. Returns its seq."""
        seq = self.next_seq
        self._header["passed_pts"] = math.nan if pts is None else pts
        self._header["passed_position"] = math.nan if position is None else position
        self._header["passed_seq"] = seq + 1
        self._header["next_seq"] = seq + 1
        return seq

    def resume_point(self) -> ResumePoint | None:
        """The last frame given a seq, written or passed over, when what it was is known: where a
        restarted capture worker resumes a recording. A writer killed in the middle of a step
        leaves the header half updated; each such state still names a point:
        - passing over, between its note and next_seq: the note names the frame after the last
          seq, never counted nor announced; resuming after it loses nothing the books know of;
        - committing, between next_seq and writes: the frame is in the slot `writes` points at;
        - writing a slot (odd generation, nothing counted): the frame before it, played again."""
        last = self.next_seq - 1
        passed = int(self._header["passed_seq"]) - 1
        if passed >= 0 and passed in (last, last + 1):
            pts, position = float(self._header["passed_pts"]), float(self._header["passed_position"])
            return ResumePoint(passed, _number(pts), _number(position))
        writes = int(self._header["writes"])
        for slot in (writes - 1, writes):
            info = self.info(slot % self.slots)
            complete = info.generation >= 2 and info.generation % 2 == 0
            if complete and info.seq == last >= 0:
                return ResumePoint(info.seq, info.pts, info.position)
        return None

    def frames_in_flight(self, reclaim_after_s: float = 5.0) -> int:
        """Frames written and not yet released by the batcher: this camera's queue through
        validation and batching (what a lagging stage lets pile up)."""
        return sum(self._in_flight(header, reclaim_after_s) for header in self._slot_headers)

    @staticmethod
    def _in_flight(header: np.void, reclaim_after_s: float) -> bool:
        """A complete frame nobody released yet, and not so old that its reader must be gone."""
        generation = int(header["generation"])
        if generation == 0 or generation % 2 == 1 or int(header["released"]) == generation:
            return False
        return time.monotonic() - float(header["written_mono"]) < reclaim_after_s

    # ---- readers --------------------------------------------------------------------------

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.slots:
            raise RingError(f"slot {slot} out of range for {self.path.name} ({self.slots} slots)")

    def info(self, slot: int) -> SlotInfo:
        self._check_slot(slot)
        header = self._slot_headers[slot].item()  # one copy of the whole header, as Python numbers
        values: list[Any] = [_number(header[i]) if optional else header[i] for i, optional in _SLOT_INFO]
        return SlotInfo(*values)

    def is_current(self, slot: int, generation: int) -> bool:
        """True while the slot still holds the complete frame of that generation."""
        self._check_slot(slot)
        # Generation 0 is a slot never written: nothing there is a frame.
        complete = generation >= 2 and generation % 2 == 0
        return complete and int(self._slot_headers[slot]["generation"]) == generation

    def planes(self, slot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views (no copy) of the slot's Y, U, V planes, sized from the slot header."""
        self._check_slot(slot)
        header = self._slot_headers[slot]
        width, height = int(header["width"]), int(header["height"])
        if i420_size(width, height) > self.capacity:
            raise RingError(f"slot {slot} of {self.path.name} claims {width}x{height}, beyond capacity")
        return self._planes(slot, width, height)

    def frame(self, slot: int) -> np.ndarray:
        """The slot's whole I420 frame as one (h*3/2, w)-shaped view when the size allows it,
        else a flat view; either way the bytes are Y then U then V."""
        info = self.info(slot)
        size = i420_size(info.width, info.height)
        flat = self._data[slot, :size]
        if info.width % 2 == 0 and info.height % 2 == 0:
            return flat.reshape(info.height * 3 // 2, info.width)
        return flat

    def release(self, slot: int, generation: int) -> None:
        """Mark a frame as done with, so drop_newest may reuse its slot."""
        self._check_slot(slot)
        header = self._slot_headers[slot]
        if int(header["generation"]) == generation:
            header["released"] = generation

    def _planes(self, slot: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return i420_planes(self._data[slot], width, height)


class RingCache:
    """The rings of the cameras a reader has seen, attached on first use."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._rings: dict[str, tuple[Ring, int]] = {}  # camera -> (ring, inode of its file)

    def get(self, camera: str) -> Ring:
        cached = self._rings.get(camera)
        if cached is None:
            path = ring_path(self.run_id, camera)
            ring = Ring.attach(path)
            try:
                inode = os.stat(path).st_ino
            except FileNotFoundError:  # removed right after we attached: keep it for now
                inode = -1
            cached = self._rings[camera] = (ring, inode)
        return cached[0]

    def refresh(self) -> None:
        """Let go of rings the supervisor removed or replaced (cameras removed or resized live);
        the next frame of such a camera attaches its current ring."""
        for camera, (ring, inode) in list(self._rings.items()):
            try:
                current = os.stat(ring_path(self.run_id, camera)).st_ino
            except FileNotFoundError:
                current = None
            if current != inode:
                ring.close()
                del self._rings[camera]

    def close(self) -> None:
        for ring, _ in self._rings.values():
            ring.close()
        self._rings.clear()

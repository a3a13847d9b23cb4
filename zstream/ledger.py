"""What a killed worker leaves for the supervisor: its last counts, and its writes in flight.

Both are files of the run dir, created by the worker (mode 0600, never through a link) and read
and removed by the supervisor once it has reaped the worker (see zstream.settle).
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from zstream.core.vocabulary import Metric

log = logging.getLogger(__name__)
CounterKey = tuple[str, str, str]  # (metric, camera, reason), "" where a label does not apply
Count = Callable[[str, str], int]  # a counter's value by (metric, camera)
LEDGER_PREFIX = "counters-"  # RUN_DIR/counters-<worker>-<pid>: a worker's ledger
IN_FLIGHT_PREFIX = "in-flight-"  # RUN_DIR/in-flight-<worker>-<pid>: the writes it has on the wire
# Exclusive and never through a link: a file or link planted under our name is refused.
CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def ledger_path(run_dir: Path, worker: str, pid: int) -> Path:
    return run_dir / f"{LEDGER_PREFIX}{worker}-{pid}"


def in_flight_path(run_dir: Path, worker: str, pid: int) -> Path:
    return run_dir / f"{IN_FLIGHT_PREFIX}{worker}-{pid}"


class Ledger:
    """A worker's counters mirrored, value by value as they change, into a mapped file.

    Reports reach the supervisor once per stats interval, so a worker killed with -9 would take
    the counts of its last fraction of a second with it, and the books would not balance (frames
    in Redis that no counter says were written). Stores into a shared mapping outlive the process
    that made them: after reaping a worker, the supervisor reads its exact last counts here.
    Layout: slots of a key (metric, camera, reason joined by 0x1f, zero-padded) and an int64,
    filled in order; a key is written before its first value, so a slot is never half-made.
    The file's blocks are allocated before they are mapped: a store into a sparse page on a full
    disk would kill the worker with SIGBUS.
    """

    SLOT = 128
    KEY_BYTES = SLOT - 8
    GROW_BY = 1024  # slots

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._slots: dict[CounterKey, int] = {}
        self._map = self._mapped(self.GROW_BY)

    @classmethod
    def create(cls, path: Path) -> Ledger | None:
        """A new ledger, or None (logged) when the run dir cannot hold one: counts then reach the
        supervisor by reports only, and a kill -9 can lose the last interval's."""
        fd = -1
        try:
            fd = os.open(path, CREATE, 0o600)
            return cls(path, fd)
        except OSError as exc:
            log.warning("no counter ledger at %s (%s): a kill -9 may lose recent counts", path, exc)
            if fd >= 0:
                os.close(fd)
            return None

    def _mapped(self, slots: int) -> mmap.mmap:
        os.posix_fallocate(self._fd, 0, slots * self.SLOT)
        return mmap.mmap(self._fd, slots * self.SLOT)

    def store(self, key: CounterKey, value: int) -> bool:
        """Record the key's value; False when the ledger could not grow (it is then closed)."""
        slot = self._slots.get(key)
        if slot is None:
            name = "\x1f".join(key).encode()[: self.KEY_BYTES]
            slot = self._slots[key] = len(self._slots)
            if (slot + 1) * self.SLOT > len(self._map):
                try:
                    grown = self._mapped(len(self._map) // self.SLOT + self.GROW_BY)
                except OSError as exc:
                    log.warning("counter ledger %s cannot grow (%s): reports only from now", self.path, exc)
                    self.close()
                    return False
                self._map.close()
                self._map = grown
            self._map[slot * self.SLOT + 8 : slot * self.SLOT + 8 + len(name)] = name
        struct.pack_into("<q", self._map, slot * self.SLOT, value)
        return True

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    @classmethod
    def read(cls, path: Path) -> dict[CounterKey, int]:
        """The counts a (dead) worker left; empty when it left none or they cannot be read."""
        try:
            data = path.read_bytes()
        except OSError:
            return {}
        counts: dict[CounterKey, int] = {}
        for offset in range(0, len(data) - cls.SLOT + 1, cls.SLOT):
            name = data[offset + 8 : offset + cls.SLOT].rstrip(b"\0")
            if not name:
                break
            parts = name.decode(errors="replace").split("\x1f", 2)
            if len(parts) == 3:
                counts[(parts[0], parts[1], parts[2])] = struct.unpack_from("<q", data, offset)[0]
        return counts


class InFlightWrites:
    """The batcher's note of its writes whose outcome it does not know yet, made before they start.

    A batcher killed after Redis took a write but before it counted it leaves frames in Redis
    that its ledger does not count as written. This note names the entries and the counts they
    settle, so that the supervisor can ask Redis whether they landed (see zstream.settle). At
    most one write of each kind is unsettled at a time (a failed write is retried first), so the
    note holds a record per kind: "batch" {stream, id, name, frames: {camera: n}, base: {camera:
    written before}, batches_base}; "qc" {stream, entries: [[id, camera, seq]], base: {camera:
    qc_written before}}. A note of several pages can be cut short by a kill: its length and CRC
    tell, and such a note is read as none.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, CREATE, 0o600)
        self._records: dict[str, dict[str, Any]] = {}

    def note(self, kind: str, record: dict[str, Any]) -> None:
        self._records[kind] = record
        self._write()

    def note_batch(self, stream: str, entry_id: str, name: str, cameras: list[str], count: Count) -> None:
        """Before a batch's XADD: its id and name, and the counts it settles (`count(metric,
        camera)` reads the batcher's counters)."""
        frames = Counter(cameras)
        record = {
            "stream": stream,
            "id": entry_id,
            "name": name,
            "frames": dict(frames),
            "base": {camera: count(Metric.WRITTEN, camera) for camera in frames},
            "batches_base": count(Metric.BATCHES_WRITTEN, ""),
        }
        self.note("batch", record)

    def note_qc(self, stream: str, entries: list[tuple[str, str, int]], count: Count) -> None:
        """Before a chunk of QC entries goes out: each one's (id, camera, seq)."""
        cameras = {camera for _, camera, _ in entries}
        base = {camera: count(Metric.QC_WRITTEN, camera) for camera in cameras}
        self.note("qc", {"stream": stream, "entries": [list(entry) for entry in entries], "base": base})

    def done(self, kind: str) -> None:
        if self._records.pop(kind, None) is not None:
            self._write()

    def _write(self) -> None:
        data = msgpack.packb(self._records)
        header = len(data).to_bytes(4, "little") + zlib.crc32(data).to_bytes(4, "little")
        os.pwrite(self._fd, header + data, 0)

    def close(self) -> None:
        os.close(self._fd)

    @staticmethod
    def read(path: Path) -> dict[str, dict[str, Any]]:
        try:
            data = path.read_bytes()
        except OSError:
            return {}
        size, crc = int.from_bytes(data[:4], "little"), int.from_bytes(data[4:8], "little")
        body = data[8 : 8 + size]
        if not size or len(body) < size or zlib.crc32(body) != crc:
            return {}
        try:
            records = msgpack.unpackb(body, raw=False)
        except (ValueError, msgpack.UnpackException):
            return {}
        return records if isinstance(records, dict) else {}

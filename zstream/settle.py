"""Settling a dead worker's books: its exact last counts, and the fate of its write in flight.

A worker's reports lag its counters by up to a stats interval; after a `kill -9` that gap is
what made the books not balance (frames in Redis that nobody counted as written, so counted
lost). Once a worker process is reaped, the supervisor settles it: its counts come from its
ledger (zstream.stats.Ledger), which the kernel kept, and if it was the batcher, the write it
had on the wire (zstream.stats.InFlightWrites) is looked up in Redis: entries that landed
count as written. Settling is idempotent (counts are raised to what they settle to, never
added twice), so it may be retried when Redis cannot answer at once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import RedisError

from zstream.core.vocabulary import Metric
from zstream.core.wire import batch_name
from zstream.ledger import CounterKey, InFlightWrites, Ledger, in_flight_path, ledger_path
from zstream.stats import StatsBoard

log = logging.getLogger(__name__)

InFlight = dict[str, dict[str, Any]]  # kind -> record, see InFlightWrites


def read_books(run_dir: Path, worker: str, pid: int) -> tuple[dict[CounterKey, int], InFlight]:
    """A dead worker's last counts and its writes in flight (empty when none), files removed."""
    ledger, in_flight = ledger_path(run_dir, worker, pid), in_flight_path(run_dir, worker, pid)
    counts, records = Ledger.read(ledger), InFlightWrites.read(in_flight)
    ledger.unlink(missing_ok=True)
    in_flight.unlink(missing_ok=True)
    return counts, records


def settle_in_flight(client: redis.Redis, records: InFlight, counts: dict[CounterKey, int]) -> None:
    """Raise `counts` by what of the writes in flight landed in Redis (RedisError if it cannot tell).
    A record that does not read as one (a bug, a file from another version) settles nothing."""
    try:
        _settle_records(client, records, counts)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("a dead batcher's note of its writes in flight is unreadable (%r): ignored", exc)


def _settle_records(client: redis.Redis, records: InFlight, counts: dict[CounterKey, int]) -> None:
    if (record := records.get("batch")) is not None:
        found = client.xrange(record["stream"], min=record["id"], max=record["id"], count=1)
        if found and (stored := found[0][1]) is not None and batch_name(stored) == record["name"]:
            for camera, n in record["frames"].items():
                _raise(counts, (Metric.WRITTEN, camera, ""), record["base"].get(camera, 0) + n)
            _raise(counts, (Metric.BATCHES_WRITTEN, "", ""), record["batches_base"] + 1)
    if (record := records.get("qc")) is not None:
        pipe = client.pipeline(transaction=False)
        for entry_id, _, _ in record["entries"]:
            pipe.xrange(record["stream"], min=entry_id, max=entry_id, count=1)
        landed: Counter[str] = Counter()
        for (_, camera, seq), found in zip(record["entries"], pipe.execute(), strict=True):
            fields = found[0][1] if found else {}
            if fields.get(b"camera") == camera.encode() and fields.get(b"seq") == str(seq).encode():
                landed[camera] += 1
        for camera, n in landed.items():
            _raise(counts, (Metric.QC_WRITTEN, camera, ""), record["base"].get(camera, 0) + n)


class Settlement:
    """The supervisor's settling of reaped workers into its board. Writes in flight wait while
    Redis cannot answer, retried every RETRY_S (with a short timeout: the supervisor's loop
    serves reports and commands meanwhile), and once more, however soon, at exit."""

    RETRY_S = 5.0

    def __init__(self, run_dir: Path, board: StatsBoard, client: Callable[[], redis.Redis]) -> None:
        self.run_dir = run_dir
        self.board = board
        self.client = client
        self.waiting: list[tuple[str, int, dict[CounterKey, int], InFlight]] = []
        self._next_try = 0.0

    def worker_gone(self, name: str, pid: int) -> None:
        counts, in_flight = read_books(self.run_dir, name, pid)
        self.board.settle(name, pid, counts)
        if in_flight:
            self.waiting.append((name, pid, counts, in_flight))
            self.retry(now=True)

    def retry(self, now: bool = False) -> None:
        if not self.waiting or (not now and time.monotonic() < self._next_try):
            return
        try:
            with self.client() as client:
                while self.waiting:
                    name, pid, counts, in_flight = self.waiting[0]
                    settle_in_flight(client, in_flight, counts)
                    self.board.settle(name, pid, counts)
                    self.waiting.pop(0)
        except (RedisError, OSError) as exc:
            self._next_try = time.monotonic() + self.RETRY_S
            log.warning("cannot ask Redis yet what a dead batcher's last write left there: %s", exc)


def _raise(counts: dict[CounterKey, int], key: CounterKey, value: int) -> None:
    counts[key] = max(counts.get(key, 0), value)

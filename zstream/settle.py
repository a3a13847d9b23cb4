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

from collections import Counter
from pathlib import Path
from typing import Any

import redis

from zstream.stats import CounterKey, InFlightWrites, Ledger, in_flight_path, ledger_path
from zstream.wire import batch_name

InFlight = dict[str, dict[str, Any]]  # kind -> record, see InFlightWrites


def read_books(run_dir: Path, worker: str, pid: int) -> tuple[dict[CounterKey, int], InFlight]:
    """A dead worker's last counts and its writes in flight (empty when none), files removed."""
    ledger, in_flight = ledger_path(run_dir, worker, pid), in_flight_path(run_dir, worker, pid)
    counts, records = Ledger.read(ledger), InFlightWrites.read(in_flight)
    ledger.unlink(missing_ok=True)
    in_flight.unlink(missing_ok=True)
    return counts, records


def settle_in_flight(client: redis.Redis, records: InFlight, counts: dict[CounterKey, int]) -> None:
    """Raise `counts` by what of the writes in flight landed in Redis (RedisError if it cannot tell)."""
    if (record := records.get("batch")) is not None:
        found = client.xrange(record["stream"], min=record["id"], max=record["id"], count=1)
        if found and batch_name(found[0][1]) == record["name"]:
            for camera, n in record["frames"].items():
                _raise(counts, ("written", camera, ""), record["base"].get(camera, 0) + n)
            _raise(counts, ("batches_written", "", ""), record["batches_base"] + 1)
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
            _raise(counts, ("qc_written", camera, ""), record["base"].get(camera, 0) + n)


def _raise(counts: dict[CounterKey, int], key: CounterKey, value: int) -> None:
    counts[key] = max(counts.get(key, 0), value)

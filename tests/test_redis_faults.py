"""Redis faults against real Redis servers on loopback: an outage with data loss, a lost
consumer group, a consumer killed before acknowledging, and the batcher's entry-id checks.

The outage tests kill a private `redis-server` of their own (never the shared one at 6379,
which other tests use) and start it again on the same port without persistence, so the
restarted server has lost everything: streams, consumer groups, pending entries.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL, REPO, topology_text, wait_until
from tests.redis_server import PrivateRedis
from tests.test_metrics import scrape, value
from tests.test_pipeline import assert_in_order, frames_by_camera
from zstream import BatchConsumer
from zstream.batch import Batcher, OutgoingBatch, QcEntry
from zstream.core.wire import FrameMeta, decode_batch_entry, encode_batch_entry
from zstream.stats import Counters
from zstream.topology import parse_topology

SYNTH = "synthetic://traffic?size=320x240&fps=25"


def final_rows(log: str) -> dict[str, dict[str, int]]:
    """The per-camera lines of the supervisor's final summary."""
    rows = {}
    parts = ("captured", "written", "qc", "skipped", "dropped", "lost")
    pattern = r"(\S+)\s+\S+\s+" + r"\s+".join(rf"{part}\s+(\d+)" for part in parts)
    for match in re.finditer(pattern, log):
        camera, *counts = match.groups()
        rows[camera] = dict(zip(parts, map(int, counts), strict=True))
    return rows


# ---- the pipeline through a Redis outage --------------------------------------------------


@pytest.mark.parametrize("max_pending", [1000, 5], ids=["buffered", "shed"])
def test_a_redis_restart_that_lost_its_data_costs_no_order_no_duplicate_and_no_uncounted_frame(
    pipeline, run_dir: Path, private_redis: PrivateRedis, max_pending: int
) -> None:
    tag = uuid.uuid4().hex[:8]
    streams = (f"test:{tag}:frames", f"test:{tag}:qc")
    cameras = ["cam-0", "cam-1"]
    batcher = '[batcher]\nbatch_size = 4\nbatch_timeout_ms = 100\nencoding = "raw"\noutput_fps = 0\n'
    batcher += f"max_pending_batches = {max_pending}"
    text = topology_text(run_dir, streams, [{"id": c, "url": SYNTH} for c in cameras], batcher=batcher)
    assert REDIS_URL in text
    running = pipeline(text.replace(REDIS_URL, private_redis.url))
    client = private_redis.client()
    wait_until(
        lambda: all(len(found) >= 10 for found in _per_camera(client, streams[0], cameras).values()),
        60,
        message="frames of both cameras in the private Redis",
    )
    # Freeze writes, so that what Redis holds when it dies is exactly what we read here (the
    # batcher's XADD on the wire then is held, and lost with the server: it must be retried).
    client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    before = frames_by_camera(client, streams[0])
    client.close()
    private_redis.kill()
    time.sleep(10)
    assert "keeping batches" in running.log  # the batcher noticed, and holds on
    private_redis.start()  # same port, nothing kept: no stream, no entries
    returned = time.monotonic()
    client = private_redis.client()
    wait_until(lambda: client.xlen(streams[0]) > 0, 10, message="the first batch after Redis returned")
    back_after = time.monotonic() - returned
    wait_until(
        lambda: all(len(found) >= 20 for found in _per_camera(client, streams[0], cameras).values()),
        30,
        message="frames flowing again",
    )
    address = running.status()["endpoints"]["metrics"]
    metrics = scrape(address)
    errors = value(metrics, "zstream_redis_errors_total")
    shed = value(metrics, "zstream_batches_shed_total")
    assert running.stop() == 0, running.log
    assert "Traceback" not in running.log, running.log
    assert "Redis is back after" in running.log

    assert back_after <= 5.0, f"first batch {back_after:.1f}s after Redis returned"
    assert errors >= 1
    after = frames_by_camera(client, streams[0])
    rows = final_rows(running.log)
    assert set(rows) == set(cameras), running.log
    assert "final: unaccounted 0 " in running.log
    dropped = re.search(r"final: .* dropped (.*) · restarts", running.log)
    assert dropped, running.log
    for camera in cameras:
        frames = before[camera] + after[camera]
        assert_in_order(frames)  # across the outage: no duplicate, no reordering
        # Every frame the batcher counted as written is in Redis, once: the held write landed
        # after the restart, with the id it was given, in its place.
        assert rows[camera]["written"] == len(frames), (camera, rows[camera], len(frames))
        assert rows[camera]["lost"] == 0
        seqs = [meta.seq for meta, _ in frames]
        missing = (seqs[-1] + 1 - seqs[0]) - len(seqs)  # gaps between the first and last written
        assert missing <= rows[camera]["dropped"], (camera, missing, rows[camera])
    if max_pending == 5:
        # 10 s of two 25 fps cameras is ~125 batches of 4: most were shed, and counted.
        assert shed >= 50
        assert int(re.search(r"batch:redis_backlog (\d+)", dropped.group(1)).group(1)) >= 4 * 50
        # The oldest batches were shed: the gap is at the start of the outage (only the batch that
        # was on the wire when Redis went away is kept before it: it might have landed).
        for c in cameras:
            seqs = [meta.seq for meta, _ in after[c]]
            gaps = [b - a for a, b in zip([before[c][-1][0].seq, *seqs], seqs, strict=False)]
            assert max(gaps[:9]) > 50, ("the oldest batches were shed", c, gaps[:9])
    else:
        # Everything waited: the first frames after the restart follow the last ones before it.
        assert shed == 0 and "redis_backlog" not in dropped.group(1)
        assert all(after[c][0][0].seq - before[c][-1][0].seq < 20 for c in cameras)
    client.close()


def _per_camera(client: redis.Redis, stream: str, cameras: list[str]) -> dict[str, list[Any]]:
    found = frames_by_camera(client, stream)
    return {camera: found.get(camera, []) for camera in cameras}


# ---- consumer groups that Redis lost -------------------------------------------------------


def _entry(seq: int, payload: bytes, camera: str = "c") -> dict[str, Any]:
    meta = FrameMeta(camera, seq, seq / 25, 1.0, 1.0, 8, 6, "raw", "yuv420p", (9, 8), {})
    return encode_batch_entry(f"b{seq}", 1.0, [(meta, payload)])


def test_a_consumer_group_lost_in_a_redis_restart_is_recreated_and_reading_goes_on(
    private_redis: PrivateRedis,
) -> None:
    client = private_redis.client()
    stream = "test:frames"
    consumer = BatchConsumer(
        private_redis.url, stream=stream, group="g", consumer="c", start="0", block_ms=200
    )
    client.xadd(stream, _entry(0, bytes(72)))
    client.xadd(stream, _entry(1, bytes(72)))
    first = consumer.read()
    assert [b.frames[0].seq for b in first] == [0]
    consumer.ack(*first)
    held = consumer.read()  # read, not acknowledged when Redis dies
    assert [b.frames[0].seq for b in held] == [1]

    client.close()
    private_redis.kill()
    private_redis.start()  # no stream, no group
    client = private_redis.client()
    assert not client.exists(stream)
    # A batcher writes again before the consumer notices: those entries must not be skipped.
    client.xadd(stream, _entry(2, bytes(72)))
    client.xadd(stream, _entry(3, bytes(72)))
    assert consumer.ack(*held) == 0  # its pending entry went with the data
    got = consumer.read() + consumer.read()  # NOGROUP: created again, after the last entry read
    assert consumer.groups_recreated == 1
    assert [b.frames[0].seq for b in got] == [2, 3]
    assert consumer.ack(*got) == 2
    assert client.xpending(stream, "g")["pending"] == 0
    assert consumer.read() == []
    consumer.close()

    # The same with nothing acknowledged or read in between: the read itself meets NOGROUP.
    reader = BatchConsumer(private_redis.url, stream=stream, group="h", start="$", block_ms=200)
    client.close()
    private_redis.kill()
    private_redis.start()
    client = private_redis.client()
    client.xadd(stream, _entry(4, bytes(72)))
    assert [b.frames[0].seq for b in reader.read()] == [4]
    assert reader.groups_recreated == 1
    reader.close()
    client.close()


def test_iterating_waits_through_a_redis_restart_and_goes_on_with_the_new_data(
    private_redis: PrivateRedis,
) -> None:
    client = private_redis.client()
    stream = "test:frames"
    consumer = BatchConsumer(private_redis.url, stream=stream, group="g", start="0", block_ms=100)
    seen: list[int] = []

    def iterate() -> None:
        for batch in consumer:
            seen.extend(frame.seq for frame in batch.frames)
            if len(seen) >= 4:
                return

    client.xadd(stream, _entry(0, bytes(72)))
    client.xadd(stream, _entry(1, bytes(72)))
    thread = threading.Thread(target=iterate, daemon=True)
    thread.start()
    wait_until(lambda: len(seen) >= 2, 10, message="the first two batches")
    client.close()
    private_redis.kill()
    time.sleep(2)
    private_redis.start()
    client = private_redis.client()
    client.xadd(stream, _entry(2, bytes(72)))
    client.xadd(stream, _entry(3, bytes(72)))
    thread.join(30)
    assert not thread.is_alive(), f"iteration did not resume: {seen}"
    assert seen == [0, 1, 2, 3]
    assert consumer.outages >= 1 and consumer.groups_recreated == 1
    # All acknowledged but the last: the loop left before asking for the next one.
    assert client.xpending(stream, "g")["pending"] == 1
    consumer.close()
    client.close()


# ---- a consumer killed before acknowledging ------------------------------------------------

DYING_CONSUMER = """
import hashlib, sys, time
from zstream import BatchConsumer
url, stream = sys.argv[1], sys.argv[2]
consumer = BatchConsumer(url, stream=stream, group="g", consumer="dying", start="0", count=3)
for batch in consumer.read(block_ms=2000):
    digest = hashlib.sha256(b"".join(f.image.tobytes() for f in batch.frames)).hexdigest()
    print(batch.id, digest, flush=True)
print("read", flush=True)
time.sleep(120)  # killed here, before acknowledging anything
"""


def _digest(batch: Any) -> str:
    return hashlib.sha256(b"".join(f.image.tobytes() for f in batch.frames)).hexdigest()


def test_batches_of_a_consumer_killed_before_acking_go_to_another_consumer_byte_for_byte(
    redis_client: redis.Redis, streams: tuple[str, str]
) -> None:
    stream = streams[0]
    payloads = [os.urandom(72) for _ in range(5)]
    ids = [redis_client.xadd(stream, _entry(i, payloads[i])).decode() for i in range(5)]
    dying = subprocess.Popen(
        [sys.executable, "-c", DYING_CONSUMER, REDIS_URL, stream],
        stdout=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    lines = []
    assert dying.stdout is not None
    for line in dying.stdout:
        if line.strip() == "read":
            break
        lines.append(line.split())
    dying.send_signal(signal.SIGKILL)
    dying.wait(10)
    dying.stdout.close()
    taken = {entry_id: digest for entry_id, digest in lines}
    assert list(taken) == ids[:3]
    pending = redis_client.xpending_range(stream, "g", min="-", max="+", count=10)
    assert [(p["message_id"].decode(), p["consumer"].decode()) for p in pending] == [
        (i, "dying") for i in ids[:3]
    ]

    # A consumer that tolerates a long processing time (the default 30 s) leaves them alone.
    patient = BatchConsumer(REDIS_URL, stream=stream, group="g", consumer="patient", count=10, block_ms=200)
    fresh = patient.read()
    assert [b.id for b in fresh] == ids[3:]
    assert patient.ack(*fresh) == 2 and patient.read() == [] and patient.claimed == 0
    patient.close()
    # One with claim_idle_ms = 500 takes them over once they have been idle that long.
    taker = BatchConsumer(
        REDIS_URL, stream=stream, group="g", consumer="taker", count=10, block_ms=200, claim_idle_ms=500
    )
    claimed: list[Any] = []
    started = time.monotonic()
    wait_until(lambda: claimed.extend(taker.read()) or len(claimed) >= 3, 10, message="the claimed batches")
    assert time.monotonic() - started < 3
    assert [b.id for b in claimed] == ids[:3]  # each once, in order
    for batch, payload in zip(claimed, payloads[:3], strict=True):
        assert batch.frames[0].image.tobytes() == payload  # exactly the bytes written
        assert _digest(batch) == taken[batch.id]  # exactly the bytes the dead consumer read
    assert taker.claimed == 3
    assert taker.ack(*claimed) == 3
    assert redis_client.xpending(stream, "g")["pending"] == 0
    assert taker.read() == []
    taker.close()


# ---- the batcher's entry ids ---------------------------------------------------------------


@pytest.fixture
def batcher_on(run_dir: Path) -> Any:
    run_dir.mkdir(parents=True)

    def make(url: str, stream: str) -> Batcher:
        raw = {
            "run_dir": str(run_dir),
            "redis": {"url": url, "stream": stream, "qc_stream": f"{stream}:qc"},
            "batcher": {"max_pending_batches": 2},
            "cameras": [{"id": "c", "url": "synthetic://traffic?size=64x64"}],
        }
        return Batcher(parse_topology(raw, base_dir=run_dir), Counters(), aioredis.from_url(url))

    return make


def _batch(seq: int) -> OutgoingBatch:
    meta = FrameMeta("c", seq, seq / 25, 1.0, 1.0, 8, 6, "raw", "yuv420p", (9, 8), {})
    return OutgoingBatch(frames=[(meta, bytes([seq]) * 72)])


def _drain(batcher: Batcher) -> None:
    async def run() -> None:
        batcher.wake = asyncio.Event()  # of this event loop
        finish = asyncio.Event()
        finish.set()
        await asyncio.wait_for(batcher.writer(finish), 30)
        await batcher.redis.aclose()

    asyncio.run(run())


def _seqs(client: redis.Redis, stream: str) -> list[int]:
    return [decode_batch_entry(fields)[1][0][0].seq for _, fields in client.xrange(stream)]


def test_a_write_that_landed_is_not_written_twice_and_one_overtaken_is_written_after(
    batcher_on: Any, redis_client: redis.Redis, streams: tuple[str, str]
) -> None:
    stream = streams[0]
    redis_client.delete(f"{stream}:qc")
    batcher = batcher_on(REDIS_URL, stream)
    landed = _batch(0)
    batcher.sealed.append(landed)
    _drain(batcher)
    # As if the reply to that XADD had been lost (a timeout): the same batch is written again.
    batcher.redis = aioredis.from_url(REDIS_URL)
    batcher.sealed.append(landed)
    # Someone else wrote past our ids meanwhile: the next batch's retry must not be taken for
    # a copy of something that landed.
    overtaken = _batch(1)
    overtaken.entry_id, overtaken.name = f"{int(time.time() * 1000) - 1000}-0", "x-1"
    future = f"{int(time.time() * 1000) + 5000}-0"
    redis_client.xadd(stream, _entry(99, bytes(72)), id=future)
    batcher.sealed.append(overtaken)
    entry = QcEntry("c", {"v": "1", "camera": "c", "seq": 7, "reasons": "blurred"})
    batcher.qc.append(entry)
    _drain(batcher)
    assert _seqs(redis_client, stream) == [0, 99, 1]
    assert [e[0].decode() for e in redis_client.xrange(stream)][1] == future
    counts = batcher.counters.snapshot()
    assert counts[("batches_written", "", "")] == 3  # 0 (twice: its reply "was lost"), then 1
    assert counts[("redis_errors", "", "")] == 1  # the overtaken attempt, then a fresh id
    # The QC entry, written, then "retried": still one entry.
    batcher.redis = aioredis.from_url(REDIS_URL)
    batcher.qc.append(entry)
    _drain(batcher)
    assert redis_client.xlen(f"{stream}:qc") == 1
    assert batcher.counters.snapshot()[("qc_written", "c", "")] == 2
    redis_client.delete(f"{stream}:qc")


def test_the_batch_on_the_wire_is_never_shed_and_ids_survive_a_redis_that_restarted_empty(
    batcher_on: Any, private_redis: PrivateRedis
) -> None:
    stream = "test:frames"
    batcher = batcher_on(private_redis.url, stream)

    async def run() -> None:
        release = asyncio.Event()
        real_xadd = batcher.redis.xadd

        async def slow_xadd(*args: Any, **kwargs: Any) -> Any:
            await release.wait()
            return await real_xadd(*args, **kwargs)

        batcher.redis.xadd = slow_xadd  # type: ignore[method-assign]
        finish = asyncio.Event()
        batcher.sealed.append(_batch(0))
        writer = asyncio.create_task(batcher.writer(finish))
        await asyncio.sleep(0.1)
        assert batcher.writing is not None  # batch 0 is on the wire
        for seq in range(1, 6):  # the queue holds 2: batches 1, 2, 3 are shed, never batch 0
            batcher.open = _batch(seq)
            batcher.seal()
        assert [b.frames[0][0].seq for b in batcher.sealed] == [4, 5]
        release.set()
        finish.set()
        await asyncio.wait_for(writer, 10)
        await batcher.redis.aclose()

    asyncio.run(run())
    client = private_redis.client()
    assert _seqs(client, stream) == [0, 4, 5]
    counts = batcher.counters.snapshot()
    assert counts[("batches_written", "", "")] == 3 and batcher.shed == 3
    assert counts[("dropped", "c", "batch:redis_backlog")] == 3
    ids = [e[0].decode() for e in client.xrange(stream)]

    # Redis restarts empty; a batch that was given its id before (a retry) is accepted as it is.
    client.close()
    private_redis.kill()
    private_redis.start()
    batcher.redis = aioredis.from_url(private_redis.url)
    retried = _batch(6)
    retried.entry_id, retried.name = f"{ids[-1].split('-')[0]}-9", "x-6"
    batcher.sealed.append(retried)
    batcher.sealed.append(_batch(7))
    _drain(batcher)
    client = private_redis.client()
    assert client.xrange(stream)[0][0].decode() == retried.entry_id
    assert _seqs(client, stream) == [6, 7]
    client.close()

"""Batching stage: group validated frames into Redis Stream entries, and failures into the QC stream.

The batcher is the one writer of the streams, so it does as little per frame as it can:
frames come already scaled and encoded by the validation workers (zstream.output), and it
groups them, publishes them on the tap and writes them; it never reads shared memory.
Batches are sealed by size or age and written in order by one writer task; while
Redis is down they wait in a bounded queue (retried with capped, jittered exponential
back-off), and when that overflows the oldest batch is shed and counted. When Redis returns,
what waited is written in order, with the entry ids it was given, even to a Redis that
restarted empty.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvloop
import zmq
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from zstream.batch_intake import Intake, take_some
from zstream.core.backoff import backoff
from zstream.core.intake import DRAIN_IDLE_S, MessageIntake
from zstream.core.vocabulary import DropReason, Metric, Stage
from zstream.core.wire import (
    FrameMeta,
    Output,
    Verdict,
    batch_name,
    encode_batch_entry,
    encode_qc_entry,
)
from zstream.errors import mask_url
from zstream.ledger import InFlightWrites, in_flight_path
from zstream.redis_client import connect_async
from zstream.rundir import PipelineWatcher
from zstream.stats import Counters, StatsReporter, latency_bucket
from zstream.tap import TapPublisher
from zstream.topology import Topology

log = logging.getLogger(__name__)
STAGE = Stage.BATCH
QC_BACKLOG = 10000
QC_CHUNK = 200
AHEAD_BATCHES = 4  # sealed batches waiting for a Redis that is up, before intake waits for it
RETRY_FIRST_S = 0.1  # back-off after the first failed write while Redis is down
RETRY_MAX_S = 2.0  # its cap: Redis is written to again within about this long of its return


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failed writes: exponential, capped, and
    jittered (half to all of it) so that many pipelines do not hammer a returning Redis at once."""
    return backoff(failures, RETRY_FIRST_S, RETRY_MAX_S)


@dataclass
class OutgoingBatch:
    """A batch on its way to Redis (what consumers read back is zstream.consumer.Batch)."""

    frames: list[tuple[FrameMeta, bytes]] = field(default_factory=list)
    due: float = math.inf  # monotonic time at which it is sealed, however full (see Batcher.add)
    entry_id: str | None = None  # fixed at the first write attempt; retries reuse it
    name: str | None = None  # the `batch` field of its meta, also fixed at the first attempt


@dataclass
class QcEntry:
    camera: str
    fields: dict[str, Any]
    entry_id: str | None = None

    def same(self, stored: dict[bytes, bytes]) -> bool:
        """Whether `stored` (an entry read back) is this one."""
        return (
            stored.get(b"camera") == self.camera.encode()
            and stored.get(b"seq") == str(self.fields["seq"]).encode()
        )


class EntryIds:
    """Explicit, increasing stream entry ids ("ms-seq").

    A write that timed out may still have landed. Retrying it with the same explicit id
    makes Redis refuse the copy ("equal or smaller than the target stream top item"), so
    a retry can never put a batch in the stream twice; the writer then looks the id up to tell
    "it landed" from "someone else wrote past it". A Redis that restarted empty (or from an
    older snapshot) has a lower top or no stream at all: the ids, based on the clock and never
    decreasing, are accepted as they are.
    """

    def __init__(self) -> None:
        self.ms = 0
        self.seq = 0

    def next(self) -> str:
        now = int(time.time() * 1000)
        if now > self.ms:
            self.ms, self.seq = now, 0
        else:
            self.seq += 1
        return f"{self.ms}-{self.seq}"

    def skip_past(self, entry_id: bytes | str) -> None:
        """Continue after `entry_id` (the stream's top, written by someone else or before a
        clock step back)."""
        text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        ms, seq = (int(part) for part in text.split("-"))
        if (ms, seq) >= (self.ms, self.seq):
            self.ms, self.seq = ms, seq


def _is_duplicate_id(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "equal or smaller" in str(exc)


class Batcher(MessageIntake):
    counters: Counters

    """Turns verdicts into sealed batches and QC entries; `writer` sends them to Redis."""

    STAGE = STAGE
    EXPECTED = (Verdict, Output)

    def __init__(self, topology: Topology, counters: Counters, client: Any) -> None:
        self.apply(topology)
        self.counters = counters
        self.redis = client
        self.open = OutgoingBatch()
        self.sealed: deque[OutgoingBatch] = deque()
        self.writing: OutgoingBatch | None = None  # taken off `sealed` while its XADD is on the wire
        self.qc: deque[QcEntry] = deque()
        self._ids = {"batch": EntryIds(), "qc": EntryIds()}
        self.wake = asyncio.Event()
        self.written = asyncio.Event()  # set at each batch written: intake held back may go on
        self.redis_failing = False
        self._last_seq: dict[str, int] = {}
        self._last_written_ts: dict[str, float] = {}  # capture time of each camera's last written frame
        self._batches = 0
        self.shed = 0  # batches shed because Redis was down too long
        self.tap: TapPublisher | None = None  # validated frames also go to the tap's subscribers
        self.in_flight: InFlightWrites | None = None  # what a kill -9 mid-write must not lose track of

    def apply(self, topology: Topology) -> None:
        """Follow live changes of the batch and Redis settings."""
        self.topology = topology
        self.settings = topology.batcher

    # ---- intake -------------------------------------------------------------------------

    def accept(self, message: Verdict | Output, data: bytes = b"", tap: bytes | None = None) -> None:
        """Batch a frame that passed (an Output, encoded by validation), queue one that failed (a
        Verdict) for QC; per camera, in order."""
        if isinstance(message, Output):
            camera, seq = message.meta.camera, message.meta.seq
        else:
            camera, seq = message.frame.camera, message.frame.seq
        if seq <= self._last_seq.get(camera, -1):
            self.counters.drop(STAGE, DropReason.OUT_OF_ORDER, camera)
            return
        self._last_seq[camera] = seq
        if isinstance(message, Verdict):
            self._queue_qc(QcEntry(camera, encode_qc_entry(message)))
            return
        if self.tap is not None:
            self.tap.publish(message.meta, data, message.tap, tap)
        self.add((message.meta, data))

    def add(self, frame: tuple[FrameMeta, bytes]) -> None:
        """Put a frame in the open batch; seal it when full. The batch timeout counts from its
        oldest frame's capture, not from the batch's opening: a frame that spent 30 ms in
        validation's queue then waits 170 ms more at most, so every frame reaches Redis within
        the timeout (plus the write) of its capture, whatever the load upstream."""
        if not self.open.frames:
            waited = min(max(0.0, time.time() - frame[0].capture_ts), self.settings.batch_timeout_ms / 1000)
            self.open.due = time.monotonic() + self.settings.batch_timeout_ms / 1000 - waited
        self.open.frames.append(frame)
        if len(self.open.frames) >= self.settings.batch_size:
            self.seal()

    def seal(self) -> None:
        """Close the open batch and queue it for Redis; shed the oldest beyond the bound."""
        if not self.open.frames:
            return
        self.sealed.append(self.open)
        self.open = OutgoingBatch()
        self._shed()
        self.wake.set()

    def _shed(self) -> None:
        """At most `max_pending_batches` wait (plus the one being written, which is never shed:
        it may be landing in Redis right now)."""
        while len(self.sealed) > self.settings.max_pending_batches:
            # A batch that went on the wire (it has an id) may have landed: shed the next one.
            index = 1 if self.sealed[0].entry_id is not None else 0
            shed = self.sealed[index]
            del self.sealed[index]
            self.shed += 1
            self.counters.add(Metric.BATCHES_SHED, reason="redis_backlog")
            for meta, _ in shed.frames:
                self.counters.drop(STAGE, DropReason.REDIS_BACKLOG, meta.camera)

    def backlogged(self) -> bool:
        """Redis is up but slower than the frames coming in: stop taking them until a batch is
        written, so that they wait upstream (ZeroMQ's queues, then the cameras' drop policy)
        rather than be shed here, which is for while Redis is down."""
        return not self.redis_failing and len(self.sealed) >= AHEAD_BATCHES

    def seal_if_due(self) -> float:
        """Seal the open batch when it is old enough; returns seconds until it will be."""
        if not self.open.frames:
            return self.settings.batch_timeout_ms / 1000
        remaining = self.open.due - time.monotonic()
        if remaining <= 0:
            self.seal()
            return self.settings.batch_timeout_ms / 1000
        return remaining

    def _queue_qc(self, entry: QcEntry) -> None:
        self.qc.append(entry)
        self._trim_qc()
        self.wake.set()

    def _trim_qc(self) -> None:
        while len(self.qc) > QC_BACKLOG:
            # Entries that went on the wire (they have an id) may have landed: shed after them.
            index = next((i for i, entry in enumerate(self.qc) if entry.entry_id is None), len(self.qc) - 1)
            self.counters.drop(STAGE, DropReason.QC_BACKLOG, self.qc[index].camera)
            del self.qc[index]

    # ---- output -------------------------------------------------------------------------

    async def writer(self, finish: asyncio.Event) -> None:
        """Write QC entries and batches, in order, until `finish` is set and nothing is left."""
        failures = 0
        failing_since = 0.0
        shed_before = 0
        while True:
            if not self.sealed and not self.qc:
                if finish.is_set():
                    return
                self.wake.clear()
                await self._wait_for_work(finish)
                continue
            try:
                await self._write_some()
            except (RedisError, OSError) as exc:
                self.counters.add(Metric.REDIS_ERRORS)
                if not failures:
                    failing_since = time.monotonic()
                    shed_before = self.shed
                    log.error(
                        "Redis at %s: %s; keeping batches (at most %d) and retrying",
                        mask_url(self.topology.redis.url),
                        exc,
                        self.settings.max_pending_batches,
                    )
                failures += 1
                self.redis_failing = True
                await asyncio.sleep(retry_delay(failures))
                continue
            self.redis_failing = False
            if failures:
                log.info(
                    "Redis is back after %.1f s (%d failed writes); %d batches pending, %d shed meanwhile",
                    time.monotonic() - failing_since,
                    failures,
                    len(self.sealed),
                    self.shed - shed_before,
                )
            failures = 0

    async def _wait_for_work(self, finish: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(finish.wait())]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def _write_some(self) -> None:
        if self.qc:
            await self._write_qc()
        if self.sealed:
            # Off the queue while on the wire, so that shedding (intake runs during the await)
            # never takes the batch being written; back at its head if the write failed.
            batch = self.writing = self.sealed.popleft()
            try:
                await self._write_batch(batch)
            except BaseException:
                self.writing = None
                self.sealed.appendleft(batch)
                self._shed()
                raise
            self.writing = None
            self.counters.add(Metric.BATCH_FRAMES, reason=str(len(batch.frames)))  # histogram
            written = time.time()
            for meta, _ in batch.frames:
                self.counters.add(Metric.WRITTEN, meta.camera)
                self.counters.add(Metric.LATENCY_MS, reason=latency_bucket(written - meta.capture_ts))
                self._count_span(meta)
            self.counters.add(Metric.BATCHES_WRITTEN)
            self.written.set()
            if self.in_flight is not None:
                self.in_flight.done("batch")
            latency_ms = sum(max(0.0, written - meta.capture_ts) for meta, _ in batch.frames) * 1000
            self.counters.add(Metric.LATENCY_MS_SUM, n=round(latency_ms))

    def _count_span(self, meta: FrameMeta) -> None:
        """The camera time the written frames cover (capture to capture): fps_out is written frames
        per second of it, so it is right however frames are grouped into batches (see CameraRates)."""
        previous = self._last_written_ts.get(meta.camera)
        if previous is not None and meta.capture_ts > previous:
            self.counters.add(
                Metric.WRITTEN_SPAN_US, meta.camera, n=round((meta.capture_ts - previous) * 1e6)
            )
        self._last_written_ts[meta.camera] = meta.capture_ts

    async def _write_batch(self, batch: OutgoingBatch) -> None:
        settings = self.topology.redis
        batch.entry_id = batch.entry_id or self._ids["batch"].next()
        if batch.name is None:
            self._batches += 1
            batch.name = f"{os.getpid()}-{self._batches}"
        fields = encode_batch_entry(batch.name, time.time(), batch.frames)
        if self.in_flight is not None:
            cameras = [meta.camera for meta, _ in batch.frames]
            self.in_flight.note_batch(settings.stream, batch.entry_id, batch.name, cameras, self.counters.get)
        try:
            await self.redis.xadd(
                settings.stream, fields, id=batch.entry_id, maxlen=settings.maxlen, approximate=True
            )
        except ResponseError as exc:
            if not _is_duplicate_id(exc):
                raise
            if await self._landed(settings.stream, batch.entry_id, lambda f: batch_name(f) == batch.name):
                return  # an earlier attempt landed after all (a timeout): Redis refused the copy
            await self._skip_past_top(settings.stream, "batch")  # someone wrote past our ids
            batch.entry_id = None
            raise

    async def _write_qc(self) -> None:
        """Up to QC_CHUNK entries in one round trip; what landed leaves the queue, even when
        another entry of the chunk failed, and what did not goes back to its head, in order.
        The chunk is off the queue meanwhile, so the backlog bound never trims an entry on the wire."""
        settings = self.topology.redis
        chunk = [self.qc.popleft() for _ in range(min(QC_CHUNK, len(self.qc)))]
        pipe = self.redis.pipeline(transaction=False)
        ids = []  # fixed at the first attempt: retries reuse them
        for entry in chunk:
            entry.entry_id = entry_id = entry.entry_id or self._ids["qc"].next()
            ids.append(entry_id)
            pipe.xadd(
                settings.qc_stream,
                entry.fields,
                id=entry_id,
                maxlen=settings.qc_maxlen,
                approximate=True,
            )
        failed: list[QcEntry] = []
        error: BaseException | None = None
        settled = 0
        if self.in_flight is not None:
            entries = [
                (entry_id, entry.camera, entry.fields["seq"])
                for entry_id, entry in zip(ids, chunk, strict=True)
            ]
            self.in_flight.note_qc(settings.qc_stream, entries, self.counters.get)
        try:
            results = await pipe.execute(raise_on_error=False)
            for entry_id, entry, result in zip(ids, chunk, results, strict=True):
                if isinstance(result, Exception) and not (
                    _is_duplicate_id(result) and await self._landed(settings.qc_stream, entry_id, entry.same)
                ):
                    failed.append(entry)
                    if error is None or _is_duplicate_id(result):
                        error = result
                else:
                    self.counters.add(Metric.QC_WRITTEN, entry.camera)
                settled += 1
        finally:
            back = failed + chunk[settled:]
            if back:
                self.qc.extendleft(reversed(back))
                self._trim_qc()
            elif self.in_flight is not None:
                self.in_flight.done("qc")
        if error is not None:
            if _is_duplicate_id(error):  # someone wrote past our ids: continue after them
                await self._skip_past_top(settings.qc_stream, "qc")
                for waiting in self.qc:
                    waiting.entry_id = None
            raise error

    async def _landed(self, stream: str, entry_id: str, same: Any) -> bool:
        """Whether the entry `entry_id` of `stream` is there and is ours (`same(fields)`)."""
        found = await self.redis.xrange(stream, min=entry_id, max=entry_id, count=1)
        return bool(found) and bool(same(found[0][1]))

    async def _skip_past_top(self, stream: str, kind: str) -> None:
        info = await self.redis.xinfo_stream(stream)
        self._ids[kind].skip_past(info["last-generated-id"])

    def count_unsent(self) -> None:
        """At a forced exit: whatever is still queued is lost, and counted as such. Not the batch on
        the wire: it may be landing now, and the supervisor settles it from its in-flight note
        (written if it landed, lost if not), so counting it dropped too could count it twice."""
        unnoted = [self.writing] if self.writing and self.in_flight is None else []
        for batch in [*unnoted, *self.sealed, self.open]:
            for meta, _ in batch.frames:
                self.counters.drop(STAGE, DropReason.SHUTDOWN_UNSENT, meta.camera)
        for entry in self.qc:
            self.counters.drop(STAGE, DropReason.SHUTDOWN_UNSENT_QC, entry.camera)
        self.sealed.clear()
        self.writing = None
        self.qc.clear()
        self.open = OutgoingBatch()


async def _serve(watcher: PipelineWatcher, index: int, stop: threading.Event, counters: Counters) -> None:
    # The event loop takes over the signal wakeup fd that zstream.worker reads SIGTERM from, so
    # SIGTERM is the loop's to deliver here (as a callback, never re-entered).
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    topology, _ = watcher.read()
    context: zmq.Context = zmq.Context.instance()
    reporter = StatsReporter.for_worker(context, topology, f"batch-{index}", counters)
    client = connect_async(
        topology.redis.url,
        cluster=topology.redis.cluster,
        socket_connect_timeout=topology.redis.connect_timeout_s,
        socket_timeout=10,
        retry=Retry(NoBackoff(), 0),  # the writer retries, with its own back-off and entry-id checks
    )
    batcher = Batcher(topology, counters, client)
    batcher.in_flight = InFlightWrites(in_flight_path(watcher.run_dir, f"batch-{index}", os.getpid()))
    batcher.tap = TapPublisher.open(topology, counters)
    intake = Intake(context, topology.endpoint("batch"))
    finish = asyncio.Event()
    writer = asyncio.create_task(batcher.writer(finish))
    try:
        deadline = await _until_stopped(batcher, intake, watcher, reporter, stop)
        batcher.seal()
        finish.set()
        try:
            await asyncio.wait_for(writer, max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.error("Redis did not take the last batches before the shutdown deadline")
            batcher.count_unsent()
    finally:
        writer.cancel()
        reporter.send()
        reporter.close()
        intake.close()
        if batcher.tap is not None:
            batcher.tap.close()
        await client.aclose()
        context.term()


async def _until_stopped(
    batcher: Batcher, intake: Intake, watcher: PipelineWatcher, reporter: StatsReporter, stop: threading.Event
) -> float:
    """Take frames until stopped and drained; the deadline by which the last writes must be done."""
    last_input = time.monotonic()
    deadline: float | None = None  # set when asked to stop: finish before the supervisor kills us
    while True:
        if stop.is_set() and deadline is None:
            deadline = time.monotonic() + batcher.topology.supervisor.drain_budget_s("batch") - 1.0
        if batcher.tap is not None:  # subscriptions, seen (and announced) before the frames
            batcher.tap.follow_subscriptions()
        if await take_some(batcher, intake, min(batcher.seal_if_due(), 0.1)):
            last_input = time.monotonic()
        elif stop.is_set() and time.monotonic() - last_input >= DRAIN_IDLE_S:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        if (published := watcher.changed()) is not None:  # cameras changed live
            batcher.apply(published[0])
        reporter.maybe_send()
    return deadline if deadline is not None else time.monotonic()


def run(watcher: PipelineWatcher, index: int, stop: threading.Event, counters: Counters) -> None:
    """Body of the batcher worker."""
    uvloop.run(_serve(watcher, index, stop, counters))

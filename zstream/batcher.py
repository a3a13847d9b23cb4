"""Batching stage: group validated frames into Redis Stream entries, and failures into the QC stream.

The batcher is where pixels leave shared memory: it copies (or JPEG-encodes) each frame
out of its ring slot, re-checks the slot's generation so a frame overwritten meanwhile
is dropped rather than sent torn, and releases the slot. Batches are sealed by size or
age and written in order by one writer task; while Redis is down they wait in a bounded
queue, and when that overflows the oldest batch is shed and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import uvloop
import zmq
import zmq.asyncio
from redis.exceptions import RedisError

from zstream.errors import RingError, WireError, mask_url
from zstream.pixels import i420_shape, i420_to_color, jpeg_encode
from zstream.stats import Counters, StatsReporter, latency_bucket
from zstream.topology import Topology
from zstream.validate import DRAIN_IDLE_S, RingCache
from zstream.wire import FrameMeta, Verdict, decode, encode_batch_entry, encode_qc_entry

log = logging.getLogger(__name__)
STAGE = "batch"
QC_BACKLOG = 10000
QC_CHUNK = 200


@dataclass
class Batch:
    frames: list[tuple[FrameMeta, bytes]] = field(default_factory=list)
    opened: float = field(default_factory=time.monotonic)


class Batcher:
    """Turns verdicts into sealed batches and QC entries; `writer` sends them to Redis."""

    def __init__(self, topology: Topology, counters: Counters, client: Any) -> None:
        self.topology = topology
        self.settings = topology.batcher
        self.counters = counters
        self.redis = client
        self.rings = RingCache(topology)
        self.open = Batch()
        self.sealed: deque[Batch] = deque()
        self.qc: deque[dict[str, Any]] = deque()
        self.wake = asyncio.Event()
        self._last_seq: dict[str, int] = {}
        self._batches = 0

    # ---- intake -------------------------------------------------------------------------

    def handle(self, data: bytes) -> None:
        try:
            verdict = decode(data, Verdict)
        except WireError as exc:
            self.counters.drop(STAGE, "bad_message")
            log.warning("rejected a message: %s", exc)
            return
        ref = verdict.frame
        try:
            ring = self.rings.get(ref.camera)
            self._accept(verdict, ring)
            ring.release(ref.slot, ref.generation)  # done with the slot whatever became of the frame
        except RingError as exc:
            self.counters.drop(STAGE, "bad_reference", ref.camera)
            log.warning("camera %s: %s", ref.camera, exc)

    def _accept(self, verdict: Verdict, ring: Any) -> None:
        ref = verdict.frame
        if ref.seq <= self._last_seq.get(ref.camera, -1):
            self.counters.drop(STAGE, "out_of_order", ref.camera)
            return
        self._last_seq[ref.camera] = ref.seq
        if not verdict.passed:
            self._queue_qc(encode_qc_entry(verdict), ref.camera)
            return
        payload = self._read_pixels(ring, verdict)
        if payload is not None:
            self.open.frames.append(payload)
            if len(self.open.frames) >= self.settings.batch_size:
                self.seal()

    def _read_pixels(self, ring: Any, verdict: Verdict) -> tuple[FrameMeta, bytes] | None:
        """Copy or encode the frame out of its slot; None (counted) if it was overwritten."""
        ref = verdict.frame
        if not ring.is_current(ref.slot, ref.generation):
            self.counters.drop(STAGE, "overwritten", ref.camera)
            return None
        y, u, v = ring.planes(ref.slot)
        settings = self.settings
        if settings.encoding == "jpeg":
            data, shape = jpeg_encode(y, u, v, settings.jpeg_quality)
            pixel_format = "bgr24"
        elif settings.pixel_format == "yuv420p":
            # The slot is Y, U, V back to back: one copy out, the one the transport needs.
            data, shape, pixel_format = (
                ring.frame(ref.slot).tobytes(),
                i420_shape(ref.width, ref.height),
                "yuv420p",
            )
        else:
            color = i420_to_color(y, u, v, settings.pixel_format)
            data, shape, pixel_format = color.tobytes(), color.shape, settings.pixel_format
        if not ring.is_current(ref.slot, ref.generation):  # rewritten while we copied: torn
            self.counters.drop(STAGE, "overwritten", ref.camera)
            return None
        meta = FrameMeta(
            ref.camera,
            ref.seq,
            ref.pts,
            ref.capture_ts,
            verdict.validated_ts,
            ref.width,
            ref.height,
            settings.encoding,
            pixel_format,
            tuple(shape),
            verdict.metrics,
        )
        return meta, data

    def seal(self) -> None:
        """Close the open batch and queue it for Redis; shed the oldest beyond the bound."""
        if not self.open.frames:
            return
        self.sealed.append(self.open)
        self.open = Batch()
        while len(self.sealed) > self.settings.max_pending_batches:
            shed = self.sealed.popleft()
            self.counters.add("batches_shed", reason="redis_backlog")
            for meta, _ in shed.frames:
                self.counters.drop(STAGE, "redis_backlog", meta.camera)
        self.wake.set()

    def seal_if_due(self) -> float:
        """Seal the open batch when it is old enough; returns seconds until it will be."""
        if not self.open.frames:
            return self.settings.batch_timeout_ms / 1000
        remaining = self.settings.batch_timeout_ms / 1000 - (time.monotonic() - self.open.opened)
        if remaining <= 0:
            self.seal()
            return self.settings.batch_timeout_ms / 1000
        return remaining

    def _queue_qc(self, fields: dict[str, Any], camera: str) -> None:
        self.qc.append(fields)
        if len(self.qc) > QC_BACKLOG:
            self.qc.popleft()
            self.counters.drop(STAGE, "qc_backlog", camera)
        self.wake.set()

    # ---- output -------------------------------------------------------------------------

    async def writer(self, finish: asyncio.Event) -> None:
        """Write QC entries and batches, in order, until `finish` is set and nothing is left."""
        backoff = 0.1
        failing = False
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
                self.counters.add("redis_errors")
                if not failing:
                    log.error(
                        "Redis at %s: %s; keeping batches (at most %d) and retrying",
                        mask_url(self.topology.redis.url),
                        exc,
                        self.settings.max_pending_batches,
                    )
                failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if failing:
                log.info("Redis is back; %d batches pending", len(self.sealed))
            failing, backoff = False, 0.1

    async def _wait_for_work(self, finish: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(finish.wait())]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def _write_some(self) -> None:
        redis_settings = self.topology.redis
        if self.qc:
            chunk = [self.qc[i] for i in range(min(QC_CHUNK, len(self.qc)))]
            pipe = self.redis.pipeline(transaction=False)
            for fields in chunk:
                pipe.xadd(redis_settings.qc_stream, fields, maxlen=redis_settings.qc_maxlen, approximate=True)
            await pipe.execute()
            for _ in chunk:
                self.qc.popleft()
            self.counters.add("qc_written", n=len(chunk))
        if self.sealed:
            batch = self.sealed[0]
            self._batches += 1
            fields = encode_batch_entry(f"{os.getpid()}-{self._batches}", time.time(), batch.frames)
            await self.redis.xadd(
                redis_settings.stream, fields, maxlen=redis_settings.maxlen, approximate=True
            )
            self.sealed.popleft()
            self.counters.add("batches_written")
            written = time.time()
            for meta, _ in batch.frames:
                self.counters.add("written", meta.camera)
                self.counters.add("latency_ms", reason=latency_bucket(written - meta.capture_ts))

    def count_unsent(self) -> None:
        """At a forced exit: whatever is still queued is lost, and counted as such."""
        for batch in [*self.sealed, self.open]:
            for meta, _ in batch.frames:
                self.counters.drop(STAGE, "shutdown_unsent", meta.camera)
        for fields in self.qc:
            self.counters.drop(STAGE, "shutdown_unsent_qc", str(fields["camera"]))
        self.sealed.clear()
        self.qc.clear()
        self.open = Batch()


async def _serve(topology: Topology, index: int, stop: threading.Event) -> None:
    context = zmq.asyncio.Context()
    counters = Counters()
    reporter = StatsReporter(
        zmq.Context.instance(),
        topology.endpoint("stats"),
        f"batch-{index}",
        counters,
        topology.supervisor.stats_interval_s,
    )
    client = aioredis.from_url(
        topology.redis.url, socket_connect_timeout=topology.redis.connect_timeout_s, socket_timeout=10
    )
    batcher = Batcher(topology, counters, client)
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 10000)
    pull.bind(topology.endpoint("batch"))
    finish = asyncio.Event()
    writer = asyncio.create_task(batcher.writer(finish))
    last_input = time.monotonic()
    try:
        while True:
            timeout_ms = max(1, int(min(batcher.seal_if_due(), 0.1) * 1000))
            if await pull.poll(timeout_ms):
                for _ in range(256):  # take a burst before yielding to the writer
                    try:
                        data = await pull.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    batcher.handle(data)
                last_input = time.monotonic()
                await asyncio.sleep(0)
            elif stop.is_set() and time.monotonic() - last_input >= DRAIN_IDLE_S:
                break
            reporter.maybe_send()
        batcher.seal()
        finish.set()
        deadline = topology.supervisor.shutdown_timeout_s / 2
        try:
            await asyncio.wait_for(writer, deadline)
        except TimeoutError:
            log.error("Redis did not take the last batches within %.0fs", deadline)
            batcher.count_unsent()
    finally:
        writer.cancel()
        reporter.send()
        reporter.close()
        pull.close(linger=0)
        batcher.rings.close()
        await client.aclose()
        context.term()
        zmq.Context.instance().term()


def run(topology: Topology, index: int, stop: threading.Event) -> None:
    """Body of the batcher worker."""
    uvloop.run(_serve(topology, index, stop))

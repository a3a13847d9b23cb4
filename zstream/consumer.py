"""The public client: read validated frame batches from Redis as numpy arrays.

Delivery is at-least-once through a Redis consumer group: a batch is acknowledged only
after the code that received it asked for the next one (or called `ack`), so a consumer
that crashes mid-batch leaves it pending for its group instead of losing it. The same
consumer name gets it again on its next read; any other consumer of the group takes it over
(XAUTOCLAIM) once it has been pending longer than `claim_idle_ms`. A group that Redis lost
(a restart without persistence, the stream deleted) is created again on the spot.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import simplejpeg
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from zstream.core.backoff import backoff
from zstream.core.planes import i420_planes
from zstream.core.wire import FrameMeta, decode_batch_entry
from zstream.errors import ZStreamError, mask_url
from zstream.pixels import i420_to_color
from zstream.redis_client import connect, is_cluster, slot_groups
from zstream.shard import shard_streams_pattern
from zstream.tensor import TensorBatch, batch_tensor

log = logging.getLogger(__name__)
CLAIM_EVERY_MAX_S = 15.0  # the longest pause between sweeps of the group's pending entries
BLOCK_CHUNK_MS = 5000  # one XREADGROUP waits at most this long (well within the socket timeout)
DISCOVER_EVERY_S = 5.0  # how often Redis is searched for new shard streams
POLL_S = 0.05  # pause between looks when the streams are in several slots of a cluster


class ConsumerError(ZStreamError):
    """Redis could not be reached or answered with an error (URL masked in the message)."""

    @property
    def unreachable(self) -> bool:
        """Whether Redis was down or did not answer in time (as opposed to refusing a command)."""
        cause = self.__cause__
        refused = isinstance(cause, (AuthenticationError, AuthorizationError))  # waiting will not help
        return not refused and isinstance(cause, (RedisConnectionError, RedisTimeoutError, OSError))


@dataclass(frozen=True, slots=True)
class Frame(FrameMeta):
    """One validated frame: its metadata as the batch entry has it (camera, seq, pts, capture_ts,
    validated_ts, width, height, encoding, pixel_format, shape, metrics: see FrameMeta) and `data`,
    its payload as written to Redis. `image` is I420 (h*3/2, w) for raw yuv420p, else (h, w, 3).

    A JPEG frame is decoded on first use of `image` (its header was checked on arrival):
    `Batch.tensor` never decodes it whole, it has libjpeg-turbo decode it at reduced scale."""

    data: bytes
    _image: list[np.ndarray] = field(default_factory=list, repr=False, compare=False)  # decoded, once

    @property
    def image(self) -> np.ndarray:
        if not self._image:
            decoded = cv2.imdecode(np.frombuffer(self.data, np.uint8), cv2.IMREAD_COLOR)
            if decoded is None:
                raise ConsumerError(f"camera {self.camera} frame {self.seq}: JPEG payload does not decode")
            self._image.append(decoded)
        return self._image[0]

    def bgr(self) -> np.ndarray:
        """The frame as BGR (h, w, 3), converting only if it is not BGR already."""
        if self.pixel_format == "bgr24":
            return self.image
        if self.pixel_format == "rgb24":
            return self.image[..., ::-1]
        return i420_to_color(*self.planes(), "bgr24")

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Y, U and V of a yuv420p frame, as views."""
        return i420_planes(self.image, self.width, self.height)


@dataclass(frozen=True, slots=True)
class Batch:
    id: str  # the Redis stream entry id
    created_ts: float
    frames: list[Frame] = field(default_factory=list)
    stream: str = ""  # the stream it was read from (consumers may read several)

    def tensor(self, size: tuple[int, int] = (640, 640), **options: Any) -> TensorBatch:
        """The frames as one model input of `size` (width, height) and each frame's Letterbox to
        map boxes back. Options (letterbox, layout, dtype, color, scale, mean, std, pad_value)
        as zstream.tensor.batch_tensor takes them:

            array, boxes = batch.tensor(size=(640, 640), letterbox=True, layout="NCHW", dtype="float32")
        """
        return batch_tensor(self.frames, size, **options)


class BatchConsumer:
    """Reads batches through consumer group `group` of `stream`.

        with BatchConsumer("redis://127.0.0.1:6379/0", group="detector") as consumer:
            for batch in consumer:          # blocks for new batches; ends never
                for frame in batch.frames:
                    detect(frame.bgr())     # the previous batch is acked when the next is asked for

    `start` is where a newly created group begins: "$" (only new batches) or "0" (all kept).

    Several pipelines: `stream` may be a list of streams, and with `discover` (the default)
    the streams of sharded pipelines (`STREAM:{shard-I}`, see zstream.shard) are found in
    Redis and read too, every `DISCOVER_EVERY_S`, with no configuration; a stream found after
    the consumer started is read from its first entry. `cluster` says whether the URL names a
    node of a Redis Cluster (None: ask the server); there, streams in different hash slots are
    read by separate commands, polled every `POLL_S` when there is more than one slot.

    Delivery is at-least-once. Batches this consumer name read and never acknowledged come
    first on its next read; batches pending on another consumer of the group for longer than
    `claim_idle_ms` (it died, or hangs) are claimed with XAUTOCLAIM and delivered here, the same
    entry with the same bytes (None: never claim). The sweep does not tell consumers apart: a
    batch this consumer itself holds unacknowledged that long comes back too. Keep
    `claim_idle_ms` above the longest time a batch can take to process, or a slow consumer's
    batches are processed twice.

    If Redis lost the group (restarted without persistence), it is created again, after the
    last entry this consumer received (or from "0" if it received none), counted in
    `groups_recreated`. Iterating survives Redis being down (it waits and retries); `read` and
    `ack` raise ConsumerError then, and work again once Redis is back.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        stream: str | Sequence[str] = "zstream:frames",
        group: str = "zstream",
        consumer: str | None = None,
        start: str = "$",
        block_ms: int = 1000,
        count: int = 1,
        claim_idle_ms: int | None = 30000,
        discover: bool = True,
        cluster: bool | None = None,
    ) -> None:
        self.url = url
        self.bases = [stream] if isinstance(stream, str) else list(stream)
        if not self.bases:
            raise ValueError("stream: give at least one stream name")
        self.stream = self.bases[0]
        self.streams: list[str] = []  # every stream read: the bases, then those discovered
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.block_ms = block_ms
        self.count = count
        if claim_idle_ms is not None and claim_idle_ms < 1:
            raise ValueError(f"claim_idle_ms must be at least 1 (or None), got {claim_idle_ms}")
        self.claim_idle_ms = claim_idle_ms
        self.discover = discover
        timeouts = {"socket_connect_timeout": 5, "socket_timeout": max(10, block_ms / 500)}
        self.cluster = self._call(_detect_cluster, url, timeouts) if cluster is None else cluster
        self._redis = self._call(connect, url, cluster=self.cluster, **timeouts)
        self._unchecked: set[str] = set()  # streams whose entries pending on this consumer are not yet read
        self._last_ids: dict[str, str] = {}  # per stream, the newest entry delivered to this consumer
        self._claim_cursors: dict[str, str] = {}
        self._next_claim = 0.0  # monotonic time of the next sweep for other consumers' stale entries
        self._next_discovery = 0.0
        self.trimmed = 0  # pending entries MAXLEN removed before they were processed
        self.malformed = 0  # entries that could not be decoded (skipped and acknowledged)
        self.claimed = 0  # entries taken over from other consumers of the group (XAUTOCLAIM)
        self.groups_recreated = 0  # times Redis had lost the group and it was created again
        self.outages = 0  # times iterating found Redis unreachable and waited for it
        for name in self.bases:
            self._add_stream(name, start)
        self._discover()

    def _add_stream(self, stream: str, start: str) -> None:
        self._call(self._ensure_group, stream, start)
        self.streams.append(stream)
        self._unchecked.add(stream)
        self._claim_cursors[stream] = "0-0"

    def _discover(self) -> None:
        """Read the shard streams of every base stream that appeared since the last look."""
        if not self.discover or time.monotonic() < self._next_discovery:
            return
        self._next_discovery = time.monotonic() + DISCOVER_EVERY_S
        for base in self.bases:
            found = self._call(_scan_streams, self._redis, shard_streams_pattern(base))
            for stream in sorted(set(found) - set(self.streams)):
                log.info("reading %s too (a shard of %s)", stream, base)
                self._add_stream(stream, "0")

    def _ensure_group(self, stream: str, start: str) -> bool:
        """Create the group (and the stream) unless it exists; whether it was created."""
        try:
            self._redis.xgroup_create(stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    def _recreate_groups(self) -> None:
        for stream in self.streams:
            start = self._last_ids.get(stream, "0")
            if self._ensure_group(stream, start):
                self.groups_recreated += 1
                log.warning(
                    "group %s of %s was gone from Redis at %s (restarted without its data?); created it "
                    "again from entry %s",
                    self.group,
                    stream,
                    mask_url(self.url),
                    start,
                )
            self._claim_cursors[stream] = "0-0"  # (a new group has nothing pending: no need to look again)

    def read(self, block_ms: int | None = None) -> list[Batch]:
        """One read, waiting up to `block_ms` (0: until there is one): first batches delivered to
        this consumer earlier but never acked, then other consumers' stale ones, then new ones."""
        self._discover()
        for stream in sorted(self._unchecked):
            while True:
                entries = self._group_call(
                    self._redis.xreadgroup, self.group, self.consumer, {stream: "0"}, count=self.count
                )
                if not entries or not entries[0][1]:
                    self._unchecked.discard(stream)  # no pending entries left at all
                    break
                batches = self._parse(entries)
                if batches:
                    return batches
        block = self.block_ms if block_ms is None else block_ms
        deadline = None if block == 0 else time.monotonic() + block / 1000
        while True:
            batches = self._claim_stale()
            if batches:
                return batches
            wait_ms = BLOCK_CHUNK_MS if deadline is None else (deadline - time.monotonic()) * 1000
            if self.claim_idle_ms is not None:
                wait_ms = min(wait_ms, (self._next_claim - time.monotonic()) * 1000)
            batches = self._read_new(max(1, min(BLOCK_CHUNK_MS, round(wait_ms))))
            if batches or (deadline is not None and time.monotonic() >= deadline):
                return batches
            self._discover()

    def _read_new(self, wait_ms: int) -> list[Batch]:
        """New entries of every stream: one blocking read when one command can take them all,
        else a quick look at each slot's streams, then a short pause."""
        groups = slot_groups(self.streams, self.cluster)
        if len(groups) == 1:
            return self._parse(self._read_group(groups[0], wait_ms))
        for streams in groups:
            batches = self._parse(self._read_group(streams, None))
            if batches:
                return batches
        time.sleep(min(POLL_S, wait_ms / 1000))
        return []

    def _read_group(self, streams: list[str], block: int | None) -> Any:
        return self._group_call(
            self._redis.xreadgroup,
            self.group,
            self.consumer,
            dict.fromkeys(streams, ">"),
            count=self.count,
            block=block,
        )

    def _claim_stale(self) -> list[Batch]:
        """Take over entries pending on any consumer for longer than `claim_idle_ms`: a sweep of
        the group's pending lists every `claim_idle_ms` / 2 (at most every 15 s)."""
        if self.claim_idle_ms is None or time.monotonic() < self._next_claim:
            return []
        for stream in self.streams:
            while True:
                reply = self._group_call(
                    self._redis.xautoclaim,
                    stream,
                    self.group,
                    self.consumer,
                    self.claim_idle_ms,
                    start_id=self._claim_cursors[stream],
                    count=self.count,
                )
                cursor, entries = _text(reply[0]), reply[1]
                self.trimmed += len(reply[2]) if len(reply) > 2 else 0  # Redis 7 drops those from the list
                if entries:
                    self.claimed += len(entries)
                    log.info(
                        "claimed %d entries of %s that other consumers of group %s left pending over %d ms",
                        len(entries),
                        stream,
                        self.group,
                        self.claim_idle_ms,
                    )
                self._claim_cursors[stream] = cursor
                batches = self._parse([(stream, entries)])
                if batches:
                    return batches  # the sweep goes on at the next read
                if cursor == "0-0":
                    break
        self._next_claim = time.monotonic() + min(CLAIM_EVERY_MAX_S, self.claim_idle_ms / 2000)
        return []

    def ack(self, *batches: Batch) -> int:
        """Acknowledge processed batches; returns how many Redis had pending."""
        acked = 0
        for stream in dict.fromkeys(batch.stream or self.stream for batch in batches):
            ids = [b.id for b in batches if (b.stream or self.stream) == stream]
            acked += int(self._group_call(self._redis.xack, stream, self.group, *ids))
        return acked

    def __iter__(self) -> Iterator[Batch]:
        failures = 0
        while True:
            try:
                batches = self.read()
            except ConsumerError as exc:
                if not exc.unreachable:
                    raise
                failures += 1
                self._wait_for_redis(exc, failures)
                continue
            failures = 0
            for batch in batches:
                yield batch
                try:
                    self.ack(batch)
                except ConsumerError as exc:  # it stays pending (or was lost with Redis' data)
                    if not exc.unreachable:
                        raise
                    log.warning("could not acknowledge batch %s: %s", batch.id, exc)

    def _wait_for_redis(self, exc: ConsumerError, failures: int) -> None:
        if failures == 1:
            self.outages += 1
            log.warning("%s; retrying until it answers", exc)
        time.sleep(backoff(failures, 0.1, 5.0))

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> BatchConsumer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise ConsumerError(f"Redis at {mask_url(self.url)}: {exc}") from exc

    def _group_call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """A command on the group; if Redis answers NOGROUP (it lost the group), create the
        group again and repeat the command once."""
        try:
            return self._call(function, *args, **kwargs)
        except ConsumerError as exc:
            if not (isinstance(exc.__cause__, ResponseError) and "NOGROUP" in str(exc.__cause__)):
                raise
        self._call(self._recreate_groups)
        return self._call(function, *args, **kwargs)

    def _parse(self, entries: Any) -> list[Batch]:
        batches = []
        for name, items in entries or []:
            stream = _text(name)
            for entry_id, fields in items:
                last = self._last_ids.get(stream)
                if last is None or _id_key(entry_id) > _id_key(last):
                    self._last_ids[stream] = _text(entry_id)
                batch = self._batch(stream, entry_id, fields)
                if batch is None:  # nothing usable will ever come of it: ack, so it cannot block us
                    self._group_call(self._redis.xack, stream, self.group, entry_id)
                else:
                    batches.append(batch)
        return batches

    def _batch(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes] | None) -> Batch | None:
        if not fields:  # a pending entry MAXLEN trimmed away
            self.trimmed += 1
            return None
        try:
            meta, frames = decode_batch_entry(fields)
            created = float(meta["created_ts"])
            return Batch(_text(entry_id), created, [_frame(m, data) for m, data in frames], stream)
        except (ZStreamError, KeyError, TypeError, ValueError) as exc:
            self.malformed += 1
            log.warning("skipping malformed entry %s of %s: %s", _text(entry_id), stream, exc)
            return None


def _detect_cluster(url: str, timeouts: dict[str, Any]) -> bool:
    with connect(url, **timeouts) as probe:
        try:
            return is_cluster(probe)
        except ResponseError:  # INFO not allowed to this user: take it for a single server
            return False


def _scan_streams(client: Any, pattern: str) -> list[str]:
    return [_text(key) for key in client.scan_iter(match=pattern, count=1000, _type="stream")]


def _frame(meta: FrameMeta, data: bytes) -> Frame:
    """Raw payloads are shaped here (a view, no copy); a JPEG's header is checked, its pixels
    are decoded when first asked for."""
    frame = Frame(**FrameMeta.FIELDS.as_dict(meta), data=data)
    if meta.encoding == "jpeg":
        try:
            simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise ConsumerError(
                f"camera {meta.camera} frame {meta.seq}: JPEG payload does not decode"
            ) from exc
    else:
        frame._image.append(np.frombuffer(data, np.uint8).reshape(meta.shape))
    return frame


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)

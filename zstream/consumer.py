"""The public client: read validated frame batches from Redis as numpy arrays.

Delivery is at-least-once through a Redis consumer group: a batch is acknowledged only
after the code that received it asked for the next one (or called `ack`), so a consumer
that crashes mid-batch leaves it pending for its group instead of losing it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import redis
from redis.exceptions import RedisError, ResponseError

from zstream.errors import ZStreamError, mask_url
from zstream.pixels import i420_to_color
from zstream.sources.base import chroma_size
from zstream.wire import FrameMeta, decode_batch_entry

log = logging.getLogger(__name__)


class ConsumerError(ZStreamError):
    """Redis could not be reached or answered with an error (URL masked in the message)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One validated frame. `image` is I420 (h*3/2, w) for raw yuv420p, else (h, w, 3)."""

    camera: str
    seq: int
    pts: float | None
    capture_ts: float
    width: int
    height: int
    pixel_format: str  # yuv420p | bgr24 | rgb24
    image: np.ndarray
    metrics: dict[str, float]

    def bgr(self) -> np.ndarray:
        """The frame as BGR (h, w, 3), converting only if it is not BGR already."""
        if self.pixel_format == "bgr24":
            return self.image
        if self.pixel_format == "rgb24":
            return self.image[..., ::-1]
        flat = self.image.reshape(-1)
        cw, ch = chroma_size(self.width, self.height)
        y_end = self.width * self.height
        y = flat[:y_end].reshape(self.height, self.width)
        u = flat[y_end : y_end + cw * ch].reshape(ch, cw)
        v = flat[y_end + cw * ch :].reshape(ch, cw)
        return i420_to_color(y, u, v, "bgr24")


@dataclass(frozen=True, slots=True)
class Batch:
    id: str  # the Redis stream entry id
    created_ts: float
    frames: list[Frame] = field(default_factory=list)


class BatchConsumer:
    """Reads batches through consumer group `group` of `stream`.

        with BatchConsumer("redis://127.0.0.1:6379/0", group="detector") as consumer:
            for batch in consumer:          # blocks for new batches; ends never
                for frame in batch.frames:
                    detect(frame.bgr())     # the previous batch is acked when the next is asked for

    `start` is where a newly created group begins: "$" (only new batches) or "0" (all kept).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        stream: str = "zstream:frames",
        group: str = "zstream",
        consumer: str | None = None,
        start: str = "$",
        block_ms: int = 1000,
        count: int = 1,
    ) -> None:
        self.url = url
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.block_ms = block_ms
        self.count = count
        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=max(10, block_ms / 500)
        )
        self._pending_checked = False
        self.trimmed = 0  # pending entries MAXLEN removed before they were processed
        self.malformed = 0  # entries that could not be decoded (skipped and acknowledged)
        self._call(self._ensure_group, start)

    def _ensure_group(self, start: str) -> None:
        try:
            self._redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, block_ms: int | None = None) -> list[Batch]:
        """One read: first batches delivered to this consumer earlier but never acked, then new ones."""
        while not self._pending_checked:
            entries = self._call(
                self._redis.xreadgroup, self.group, self.consumer, {self.stream: "0"}, count=self.count
            )
            if not entries or not entries[0][1]:
                self._pending_checked = True  # no pending entries left at all
                break
            batches = self._parse(entries)
            if batches:
                return batches
        entries = self._call(
            self._redis.xreadgroup,
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=self.count,
            block=self.block_ms if block_ms is None else block_ms,
        )
        return self._parse(entries)

    def ack(self, *batches: Batch) -> int:
        """Acknowledge processed batches; returns how many Redis had pending."""
        if not batches:
            return 0
        return int(self._call(self._redis.xack, self.stream, self.group, *(b.id for b in batches)))

    def __iter__(self) -> Iterator[Batch]:
        while True:
            for batch in self.read():
                yield batch
                self.ack(batch)

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

    def _parse(self, entries: Any) -> list[Batch]:
        batches = []
        for _stream, items in entries or []:
            for entry_id, fields in items:
                batch = self._batch(entry_id, fields)
                if batch is None:  # nothing usable will ever come of it: ack, so it cannot block us
                    self._call(self._redis.xack, self.stream, self.group, entry_id)
                else:
                    batches.append(batch)
        return batches

    def _batch(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> Batch | None:
        if not fields:  # a pending entry MAXLEN trimmed away
            self.trimmed += 1
            return None
        try:
            meta, frames = decode_batch_entry(fields)
            return Batch(_text(entry_id), float(meta["created_ts"]), [_frame(m, data) for m, data in frames])
        except (ZStreamError, KeyError, TypeError, ValueError) as exc:
            self.malformed += 1
            log.warning("skipping malformed entry %s of %s: %s", _text(entry_id), self.stream, exc)
            return None


def _frame(meta: FrameMeta, data: bytes) -> Frame:
    if meta.encoding == "jpeg":
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ConsumerError(f"camera {meta.camera} frame {meta.seq}: JPEG payload does not decode")
    else:
        image = np.frombuffer(data, np.uint8).reshape(meta.shape)
    return Frame(
        meta.camera,
        meta.seq,
        meta.pts,
        meta.capture_ts,
        meta.width,
        meta.height,
        meta.pixel_format,
        image,
        dict(meta.metrics),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

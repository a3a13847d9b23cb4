"""BatchConsumer against the real Redis and a real pipeline: arrays, metadata, acknowledgement."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import redis

import zstream
from tests.conftest import REDIS_URL, topology_text, wait_until
from tests.media import decode_i420_frames, make_h264_clip
from zstream import BatchConsumer, ConsumerError


def test_public_api_is_what_was_meant() -> None:
    assert set(zstream.__all__) == {
        "Batch",
        "BatchConsumer",
        "ConsumerError",
        "Frame",
        "PreflightError",
        "SourceError",
        "Topology",
        "TopologyError",
        "WireError",
        "ZStreamError",
        "__version__",
        "load_topology",
    }
    assert issubclass(ConsumerError, zstream.ZStreamError)


def test_raw_batches_come_back_as_the_decoded_arrays_and_are_acked(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=320, height=240, frames=24, gop=8)
    reference = decode_i420_frames(clip)
    consumer = BatchConsumer(REDIS_URL, stream=streams[0], group="detector", consumer="c1", start="0")
    running = pipeline(topology_text(run_dir, streams, [{"id": "f", "url": str(clip), "realtime": False}]))
    frames: list[zstream.Frame] = []

    def consume() -> bool:
        for batch in consumer.read(block_ms=200):
            frames.extend(batch.frames)
            consumer.ack(batch)
        return len(frames) >= 24

    wait_until(consume, 60, message="24 frames through the consumer")
    running.stop()
    assert [f.seq for f in frames] == list(range(24))
    for frame in frames:
        assert frame.camera == "f" and frame.pixel_format == "yuv420p" and frame.image.shape == (360, 320)
        assert np.array_equal(frame.image, reference[frame.seq])
        assert frame.bgr().shape == (240, 320, 3)
        assert frame.metrics["brightness"] > 0
    assert redis_client.xpending(streams[0], "detector")["pending"] == 0
    consumer.close()


def test_unacked_batches_are_redelivered_to_the_same_consumer(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    batcher = '[batcher]\nbatch_size = 2\nbatch_timeout_ms = 50\nencoding = "jpeg"\njpeg_quality = 80'
    running = pipeline(
        topology_text(
            run_dir, streams, [{"id": "s", "url": "synthetic://traffic?size=320x240"}], batcher=batcher
        )
    )
    wait_until(lambda: redis_client.xlen(streams[0]) >= 3, 60, message="3 batches")
    running.stop()

    first = BatchConsumer(REDIS_URL, stream=streams[0], group="g", consumer="worker-1", start="0")
    taken = first.read(block_ms=100)
    assert len(taken) == 1 and len(taken[0].frames) in (1, 2)
    frame = taken[0].frames[0]
    assert frame.pixel_format == "bgr24" and frame.image.shape == (240, 320, 3)
    first.close()  # "crashed" before acknowledging

    again = BatchConsumer(REDIS_URL, stream=streams[0], group="g", consumer="worker-1")
    redelivered = again.read(block_ms=100)
    assert [b.id for b in redelivered] == [taken[0].id]
    assert again.ack(*redelivered) == 1
    following = again.read(block_ms=100)
    assert following and following[0].id != taken[0].id
    again.close()


def test_iterating_acknowledges_the_previous_batch_when_the_next_is_asked_for(
    redis_client: redis.Redis, streams: tuple[str, str]
) -> None:
    from zstream.core.wire import FrameMeta, encode_batch_entry

    meta = FrameMeta("c", 0, 0.0, 1.0, 1.0, 4, 2, "raw", "yuv420p", (3, 4), {})
    for _ in range(3):
        redis_client.xadd(streams[0], encode_batch_entry("b", 1.0, [(meta, bytes(12))]))
    consumer = BatchConsumer(REDIS_URL, stream=streams[0], group="it", start="0", block_ms=100)
    iterator = iter(consumer)
    next(iterator)
    assert redis_client.xpending(streams[0], "it")["pending"] == 1
    next(iterator)
    assert redis_client.xpending(streams[0], "it")["pending"] == 1  # the first one was acked
    consumer.close()


def test_unreachable_redis_is_a_consumer_error_with_the_password_masked() -> None:
    with pytest.raises(ConsumerError) as caught:
        BatchConsumer("redis://:topsecret@127.0.0.1:9/0")
    assert "topsecret" not in str(caught.value) and "redis://:****@127.0.0.1:9/0" in str(caught.value)


def test_trimmed_and_malformed_pending_entries_do_not_hide_the_rest(
    redis_client: redis.Redis, streams: tuple[str, str]
) -> None:
    from zstream.core.wire import FrameMeta, encode_batch_entry

    meta = FrameMeta("c", 0, 0.0, 1.0, 1.0, 4, 2, "raw", "yuv420p", (3, 4), {})
    good = encode_batch_entry("b", 1.0, [(meta, bytes(12))])
    ids = [
        redis_client.xadd(streams[0], fields) for fields in (good, {"v": "1", "meta": b"\xc1"}, good, good)
    ]
    first = BatchConsumer(REDIS_URL, stream=streams[0], group="g", consumer="w", start="0", count=10)
    delivered = first._call(first._redis.xreadgroup, "g", "w", {streams[0]: ">"}, count=10)
    assert len(delivered[0][1]) == 4  # all four now pending for consumer "w", none acked
    first.close()
    redis_client.xdel(streams[0], ids[0])  # as MAXLEN would trim the oldest

    again = BatchConsumer(REDIS_URL, stream=streams[0], group="g", consumer="w", count=1)
    got = [again.read(block_ms=50) for _ in range(3)]
    assert [[b.id for b in batches] for batches in got] == [
        [ids[2].decode()],
        [ids[2].decode()],
        [ids[2].decode()],
    ]
    again.ack(*got[0])
    assert [b.id for b in again.read(block_ms=50)] == [ids[3].decode()]
    assert (again.trimmed, again.malformed) >= (1, 1)
    again.close()


def test_one_group_reads_every_shard_stream_found_and_acks_each_in_its_own(
    redis_client: redis.Redis, streams: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single server: the base stream and its shards' streams (one created after the consumer
    started, read from its first entry) are read in one blocking XREADGROUP."""
    from zstream import consumer as module
    from zstream.core.wire import FrameMeta, encode_batch_entry
    from zstream.shard import Shard

    monkeypatch.setattr(module, "DISCOVER_EVERY_S", 0.1)
    shards = [Shard(index, 2).stream(streams[0]) for index in range(2)]

    def entry(camera: str) -> dict[str, bytes]:
        meta = FrameMeta(camera, 0, 0.0, 1.0, 1.0, 4, 2, "raw", "yuv420p", (3, 4), {})
        return encode_batch_entry(camera, 1.0, [(meta, bytes(12))])

    try:
        redis_client.xadd(shards[0], entry("from-shard-0"))
        consumer = BatchConsumer(REDIS_URL, stream=streams[0], group="all", start="0", block_ms=100)
        assert consumer.streams == [streams[0], shards[0]]
        redis_client.xadd(shards[1], entry("from-shard-1"))  # a shard that starts later
        redis_client.xadd(streams[0], entry("unsharded"))
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            got += consumer.read(block_ms=200)
        assert sorted(b.frames[0].camera for b in got) == ["from-shard-0", "from-shard-1", "unsharded"]
        assert {b.stream for b in got} == {streams[0], *shards}
        assert consumer.ack(*got) == 3
        assert all(redis_client.xpending(s, "all")["pending"] == 0 for s in [streams[0], *shards])
        consumer.close()
        only = BatchConsumer(REDIS_URL, stream=[shards[1]], group="one", start="0", discover=False)
        assert only.streams == [shards[1]] and only.read(block_ms=100)[0].frames[0].camera == "from-shard-1"
        only.close()
    finally:
        redis_client.delete(*shards)

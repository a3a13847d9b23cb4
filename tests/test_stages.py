"""Validation and batching stages fed hostile or stale messages directly: each is rejected and
counted with its reason, the stage survives, and good frames still pass."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from zstream.batcher import Batcher
from zstream.ring import Ring, ring_path
from zstream.stats import Counters
from zstream.topology import Topology, parse_topology
from zstream.validate import Validator
from zstream.wire import PROTOCOL_VERSION, FrameRef, Verdict, encode


@pytest.fixture
def setup(run_dir: Path) -> Iterator[tuple[Topology, Ring]]:
    run_dir.mkdir(parents=True)
    topology = parse_topology(
        {"run_dir": str(run_dir), "cameras": [{"id": "cam", "url": "synthetic://traffic?size=64x64"}]},
        base_dir=run_dir,
    )
    ring = Ring.create(ring_path(topology.run_id, "cam"), slots=4, capacity=64 * 96)
    yield topology, ring
    ring.close()
    ring.unlink()


def written(ring: Ring, value: int = 128) -> FrameRef:
    claimed = ring.claim(64, 64, drop_newest=False)
    claimed.y[:] = value
    claimed.y[::2, ::2] = 0  # some texture
    claimed.u[:] = claimed.v[:] = 128
    seq, generation = ring.commit(claimed, 0.0, 1.0)
    return FrameRef("cam", seq, claimed.slot, generation, 64, 64, 0.0, 1.0)


def drops(counters: Counters, stage: str) -> dict[str, int]:
    return {
        r.split(":")[1]: n
        for (m, _, r), n in counters.snapshot().items()
        if m == "dropped" and r.startswith(stage)
    }


def test_validator_rejects_and_counts_every_kind_of_bad_message(setup: tuple[Topology, Ring]) -> None:
    topology, ring = setup
    counters = Counters()
    validator = Validator(topology, 0, zmq.Context.instance(), counters)
    try:
        good = written(ring)
        validator.handle(b"\x00garbage")
        validator.handle(msgpack.packb([PROTOCOL_VERSION + 1, FrameRef.TYPE]))
        validator.handle(encode(FrameRef("nobody", 0, 0, 2, 64, 64, None, 1.0)))
        validator.handle(encode(FrameRef("cam", 0, 10**6, 2, 64, 64, None, 1.0)))  # slot out of range
        validator.handle(encode(FrameRef("cam", 0, 3, 2, 64, 64, None, 1.0)))  # slot never written
        validator.handle(
            encode(FrameRef("cam", 99, good.slot, good.generation, 64, 64, None, 1.0))
        )  # not its seq
        validator.handle(encode(good))
        assert drops(counters, "validate") == {
            "bad_message": 2,
            "unknown_camera": 1,
            "bad_reference": 2,
            "overwritten": 1,
        }
        assert counters.snapshot()[("validated", "cam", "")] == 1
    finally:
        validator.close()


def test_batcher_rejects_bad_verdicts_and_batches_good_ones(setup: tuple[Topology, Ring]) -> None:
    topology, ring = setup
    counters = Counters()
    batcher = Batcher(topology, counters, client=None)
    good, dark = written(ring), written(ring, value=5)
    metrics = {"brightness": 100.0}
    batcher.handle(msgpack.packb([PROTOCOL_VERSION, Verdict.TYPE, good._fields(), {"a": "x"}, [], 1.0]))
    batcher.handle(msgpack.packb([PROTOCOL_VERSION, Verdict.TYPE, good._fields(), {(1,): 1}, [], 1.0]))
    never_written = FrameRef("cam", 7, 3, 2, 64, 64, None, 1.0)
    empty_slot = FrameRef("cam", 0, 3, 2, 64, 64, None, 1.0)
    batcher.handle(encode(Verdict(never_written, metrics, (), 1.0)))
    batcher.handle(encode(Verdict(empty_slot, metrics, (), 1.0)))
    batcher.handle(encode(Verdict(good, metrics, (), 2.0)))
    batcher.handle(encode(Verdict(good, metrics, (), 2.0)))  # the same frame again: out of order
    batcher.handle(encode(Verdict(dark, {"brightness": 5.0}, ("too_dark",), 2.0)))
    expected = {"bad_message": 2, "bad_reference": 1, "overwritten": 1, "out_of_order": 1}
    assert drops(counters, "batch") == expected
    assert [meta.seq for meta, _ in batcher.open.frames] == [good.seq]
    assert [entry.fields["reasons"] for entry in batcher.qc] == ["too_dark"]
    batcher.rings.close()


def test_batch_timeout_counts_from_the_oldest_frames_capture(setup: tuple[Topology, Ring]) -> None:
    """A partial batch is sealed batch_timeout_ms (200) after its oldest frame was captured, not
    after the batch opened: time a frame spent upstream is not waited again at the batcher."""
    topology, ring = setup
    batcher = Batcher(topology, Counters(), client=None)
    try:

        def verdict(captured_ago: float) -> bytes:
            ref = dataclasses.replace(written(ring), capture_ts=time.time() - captured_ago)
            return encode(Verdict(ref, {"brightness": 100.0}, (), time.time()))

        batcher.handle(verdict(0.0))
        assert 0.15 < batcher.seal_if_due() <= 0.2  # a fresh frame: nearly the whole timeout
        batcher.seal()
        batcher.handle(verdict(0.15))
        batcher.handle(verdict(0.0))  # a younger frame joining does not move the deadline
        assert 0.0 < batcher.seal_if_due() <= 0.05
        assert len(batcher.sealed) == 1 and len(batcher.open.frames) == 2
        batcher.seal()
        batcher.handle(verdict(1.0))  # already older than the timeout: sealed at the next look
        batcher.seal_if_due()
        assert not batcher.open.frames and [len(b.frames) for b in batcher.sealed] == [1, 2, 1]
    finally:
        batcher.rings.close()


def test_a_frame_rewritten_while_validation_reads_its_header_counts_as_overwritten(
    setup: tuple[Topology, Ring], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot passes the first generation check, then capture rewrites it before its header
    is read: the frame was overwritten (drop_oldest), not a bad reference."""
    topology, ring = setup
    counters = Counters()
    validator = Validator(topology, 0, zmq.Context.instance(), counters)
    try:
        stale = written(ring)
        for _ in range(4):  # a lap of the 4-slot ring: the stale frame's slot holds a newer one
            written(ring)
        looks = []
        real = Ring.is_current

        def first_look_misses_the_rewrite(self: Ring, slot: int, generation: int) -> bool:
            looks.append(slot)
            return len(looks) == 1 or real(self, slot, generation)

        monkeypatch.setattr(Ring, "is_current", first_look_misses_the_rewrite)
        validator.handle(encode(stale))
        assert drops(counters, "validate") == {"overwritten": 1}
        assert len(looks) == 2 and ("validated", "cam", "") not in counters.snapshot()
    finally:
        validator.close()

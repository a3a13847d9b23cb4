"""Validation and batching stages fed hostile or stale messages directly: each is rejected and
counted with its reason, the stage survives, and good frames still pass."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest
import zmq

from zstream.batch import Batcher
from zstream.core.ring import Ring, ring_path
from zstream.core.wire import PROTOCOL_VERSION, FrameMeta, FrameRef, Output, Verdict, decode, encode
from zstream.stats import Counters
from zstream.topology import Topology, parse_topology
from zstream.validation import Validator


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


def output(ref: FrameRef, captured_ago: float = 0.0) -> tuple[bytes, bytes]:
    """What validation sends for a frame that passed: [Output header, its payload]."""
    meta = FrameMeta(
        ref.camera, ref.seq, ref.pts, time.time() - captured_ago, time.time(), 64, 64, "jpeg", "bgr24",
        (64, 64, 3), {"brightness": 100.0},
    )  # fmt: skip
    return encode(Output(meta)), b"jpeg bytes"


def test_batcher_rejects_bad_messages_and_batches_good_ones(setup: tuple[Topology, Ring]) -> None:
    topology, ring = setup
    counters = Counters()
    batcher = Batcher(topology, counters, client=None)
    good, later, dark = written(ring), written(ring), written(ring, value=5)
    batcher.handle(msgpack.packb([PROTOCOL_VERSION, Verdict.TYPE, good._fields(), {"a": "x"}, [], 1.0]))
    batcher.handle(msgpack.packb([PROTOCOL_VERSION, Verdict.TYPE, good._fields(), {(1,): 1}, [], 1.0]))
    batcher.handle(msgpack.packb([PROTOCOL_VERSION, Output.TYPE, ["cam", 1], 0]))  # a short meta
    batcher.handle(encode(good))  # a FrameRef is validation's, not the batcher's
    batcher.handle(*output(good))
    batcher.handle(*output(good))  # the same frame again: out of order
    batcher.handle(encode(Verdict(dark, {"brightness": 5.0}, ("too_dark",), 2.0)))
    batcher.handle(*output(later))  # older than the last frame handled: out of order
    assert drops(counters, "batch") == {"bad_message": 4, "out_of_order": 2}
    assert [(meta.seq, data) for meta, data in batcher.open.frames] == [(good.seq, b"jpeg bytes")]
    assert [entry.fields["reasons"] for entry in batcher.qc] == ["too_dark"]


def test_validation_sends_passing_frames_encoded_and_releases_every_slot(
    setup: tuple[Topology, Ring],
) -> None:
    """The output work happens in validation: what reaches the batcher is a JPEG at the output
    size (or a Verdict, for QC), and no slot stays held for the batcher."""
    topology, ring = setup
    topology = topology.model_copy(
        update={"batcher": topology.batcher.model_copy(update={"output_fps": 0, "output_width": 32})}
    )
    counters = Counters()
    context = zmq.Context.instance()
    batch = context.socket(zmq.PULL)
    batch.bind(topology.endpoint("batch"))
    validator = Validator(topology, 0, context, counters)
    try:
        good, dark = written(ring), written(ring, value=5)
        blocks = np.random.default_rng(1).integers(40, 220, (16, 16), dtype=np.uint8)
        ring.planes(good.slot)[0][:] = cv2.resize(blocks, (64, 64), interpolation=cv2.INTER_NEAREST)
        validator.handle(encode(good))
        validator.handle(encode(dark))
        assert batch.poll(2000)
        header, payload = batch.recv_multipart()
        sent = decode(header)
        assert isinstance(sent, Output) and (sent.meta.seq, sent.meta.width, sent.meta.height) == (
            good.seq,
            32,
            32,
        )
        picture = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert picture.shape == (32, 32) and sent.meta.shape == (32, 32, 3)
        assert batch.poll(2000)
        failed = decode(batch.recv())
        assert isinstance(failed, Verdict) and failed.reasons and failed.frame.seq == dark.seq
        assert ring.frames_in_flight() == 0
    finally:
        validator.close()
        batch.close(linger=0)


@pytest.mark.parametrize(("frames", "validated", "skipped"), [("output", 10, 0), ("all", 10, 5)])
def test_validation_measures_the_frames_sent_on_or_all_of_them(
    setup: tuple[Topology, Ring], frames: str, validated: int, skipped: int
) -> None:
    """At 5 of 10 fps out, "all" measures every frame (for frozen detection and the norm) and
    sends 5, the other 5 skipped; with "output" capture has chosen the frames (it passes over the
    others: tests/test_capture.py), so validation measures and sends every frame it gets, here
    10 in a row, even where the output rate would have kept fewer."""
    topology, ring = setup
    topology = topology.model_copy(
        update={
            "batcher": topology.batcher.model_copy(update={"output_fps": 5}),
            "validation": topology.validation.model_copy(update={"frames": frames}),
        }
    )
    counters = Counters()
    batch = zmq.Context.instance().socket(zmq.PULL)
    batch.bind(topology.endpoint("batch"))
    validator = Validator(topology, 0, zmq.Context.instance(), counters)
    try:
        for index in range(10):
            ref = dataclasses.replace(written(ring), pts=index / 10)
            validator.handle(encode(ref))
        sent = 0
        while batch.poll(500):
            batch.recv_multipart()
            sent += 1
    finally:
        validator.close()
        batch.close(linger=0)
    counts = counters.snapshot()
    assert counts[("validated", "cam", "")] == validated
    assert counts.get(("skipped", "cam", "output_rate"), 0) == skipped
    assert sent == 10 - skipped
    assert ring.frames_in_flight() == 0


def test_batch_timeout_counts_from_the_oldest_frames_capture(setup: tuple[Topology, Ring]) -> None:
    """A partial batch is sealed batch_timeout_ms (200) after its oldest frame was captured, not
    after the batch opened: time a frame spent upstream is not waited again at the batcher."""
    topology, ring = setup
    batcher = Batcher(topology, Counters(), client=None)
    batcher.handle(*output(written(ring)))
    assert 0.15 < batcher.seal_if_due() <= 0.2  # a fresh frame: nearly the whole timeout
    batcher.seal()
    batcher.handle(*output(written(ring), captured_ago=0.15))
    batcher.handle(*output(written(ring)))  # a younger frame joining does not move the deadline
    assert 0.0 < batcher.seal_if_due() <= 0.05
    assert len(batcher.sealed) == 1 and len(batcher.open.frames) == 2
    batcher.seal()
    batcher.handle(
        *output(written(ring), captured_ago=1.0)
    )  # older than the timeout: sealed at the next look
    batcher.seal_if_due()
    assert not batcher.open.frames and [len(b.frames) for b in batcher.sealed] == [1, 2, 1]


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

"""Message formats: round trips, and refusal of anything malformed or of another version."""

from __future__ import annotations

import msgpack
import pytest

from zstream.core.wire import (
    PROTOCOL_VERSION,
    FrameMeta,
    FrameRef,
    Verdict,
    WorkerStats,
    decode,
    decode_batch_entry,
    encode,
    encode_batch_entry,
    encode_qc_entry,
)
from zstream.errors import WireError

REF = FrameRef("cam-1", 41, 3, 84, 1280, 720, 4.1, 1_700_000_000.25)


def test_messages_round_trip() -> None:
    verdict = Verdict(REF, {"sharpness": 120.5, "brightness": 90.0}, ("too_dark",), 1_700_000_000.5)
    stats = WorkerStats(
        "capture-0", 1234, {("dropped", "cam-1", "capture:queue_full"): 7}, {"cam-1": ("streaming", "")}
    )
    for message in (REF, verdict, stats):
        assert decode(encode(message)) == message
    assert decode(encode(REF), FrameRef) == REF


def test_frame_ref_carries_no_pixels() -> None:
    assert len(encode(REF)) < 100


def test_wrong_version_unknown_type_and_garbage_are_rejected() -> None:
    fields = encode(REF)
    other_version = msgpack.packb([PROTOCOL_VERSION + 1, *msgpack.unpackb(fields)[1:]])
    with pytest.raises(WireError, match="protocol version"):
        decode(other_version)
    with pytest.raises(WireError, match="unknown message type"):
        decode(msgpack.packb([PROTOCOL_VERSION, 99, "x"]))
    with pytest.raises(WireError, match="not msgpack"):
        decode(b"\xc1\xc1\xc1")
    with pytest.raises(WireError, match="expected Verdict"):
        decode(fields, Verdict)
    with pytest.raises(WireError, match="exceeds"):
        decode(b"\x00" * (2 << 20))


@pytest.mark.parametrize(
    "values",
    [
        ["cam", -1, 0, 2, 10, 10, None, 1.0],  # negative seq
        ["cam", 1, "3", 2, 10, 10, None, 1.0],  # slot not an int
        ["cam", 1, 3, 2, 10, 10, None],  # missing field
        [7, 1, 3, 2, 10, 10, None, 1.0],  # camera not a string
        ["cam", 1, True, 2, 10, 10, None, 1.0],  # bool is not an int here
    ],
)
def test_malformed_frame_refs_are_rejected(values: list[object]) -> None:
    with pytest.raises(WireError):
        decode(msgpack.packb([PROTOCOL_VERSION, FrameRef.TYPE, *values]))


def test_batch_entry_round_trip() -> None:
    meta = FrameMeta("cam-1", 5, 0.5, 10.0, 10.1, 4, 2, "raw", "yuv420p", (3, 4), {"sharpness": 1.5})
    fields = encode_batch_entry("b-1", 11.0, [(meta, b"\x01" * 12), (meta, b"\x02" * 12)])
    as_redis = {
        key.encode(): value if isinstance(value, bytes) else str(value).encode()
        for key, value in fields.items()
    }
    header, frames = decode_batch_entry(as_redis)
    assert header["batch"] == "b-1" and len(frames) == 2
    assert frames[0] == (meta, b"\x01" * 12) and frames[1][1] == b"\x02" * 12


def test_batch_entry_of_another_format_is_rejected() -> None:
    with pytest.raises(WireError, match="format"):
        decode_batch_entry({b"v": b"99", b"meta": b""})


def test_qc_entry_is_flat_and_readable() -> None:
    fields = encode_qc_entry(Verdict(REF, {"brightness": 3.0}, ("too_dark", "low_contrast"), 2.0))
    assert fields["camera"] == "cam-1" and fields["seq"] == 41
    assert fields["reasons"] == "too_dark,low_contrast"
    assert fields["metric.brightness"] == "3.0"

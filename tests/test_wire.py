"""Message formats: round trips, and refusal of anything malformed or of another version."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from zstream.core.fields import FieldCodec
from zstream.core.wire import (
    PROTOCOL_VERSION,
    FrameMeta,
    FrameRef,
    Output,
    TapFrame,
    TapPart,
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


# The bytes of every frame format as version 1 wrote them: a change here is a format change.
META = FrameMeta(
    "cam-1", 5, 0.5, 10.0, 10.1, 4, 2, "raw", "yuv420p", (3, 4), {"sharpness": 1.5, "score": 2.0}
)
JPEG_META = FrameMeta("cam-1", 6, None, 10.0, 10.1, 640, 360, "jpeg", "bgr24", (360, 640, 3), {})
GOLDEN = {
    "ref": "9a0101a563616d2d31290354cd0500cd02d0cb4010666666666666cb41d954fc40100000",
    "ref_without_pts": "9a0101a563616d2d320000024040c0cb3ff0000000000000",
    "verdict": "96010298a563616d2d31290354cd0500cd02d0cb4010666666666666cb41d954fc4010000082aa62726967"
    "68746e657373cb4008000000000000a973686172706e657373cb402900000000000092a8746f6f5f6461726bac6c"
    "6f775f636f6e7472617374cb4000000000000000",
    "output": "9401069ba563616d2d3105cb3fe0000000000000cb4024000000000000cb40243333333333330402a37261"
    "77a77975763432307092030482a973686172706e657373cb3ff8000000000000a573636f7265cb400000000000000001",
    "jpeg_output": "9401069ba563616d2d3106c0cb4024000000000000cb4024333333333333cd0280cd0168a46a706567a5"
    "626772323493cd0168cd0280038000",
    "tap": "8ca17601a663616d657261a563616d2d31a373657107a3707473cb3fd1eb851eb851ecaa636170747572655f74"
    "73cb41d954fc40000000ac76616c6964617465645f7473cb41d954fc4000a3d7a57769647468cd0140a668656967"
    "6874ccf0a77061796c6f6164a3726177ac706978656c5f666f726d6174a779757634323070a5736861706592cd01"
    "68cd0140a76d65747269637381a573636f7265cb3feccccccccccccd",
    "tap_meta": "8ca17601a663616d657261a563616d2d31a373657107a3707473c0aa636170747572655f7473cb41d954fc"
    "40000000ac76616c6964617465645f7473cb41d954fc4000a3d7a57769647468cd0140a6686569676874ccf0a770"
    "61796c6f6164a46d657461ac706978656c5f666f726d6174c0a57368617065c0a76d65747269637381a573636f72"
    "65cb3feccccccccccccd",
    "batch_meta": "83a56261746368a3622d31aa637265617465645f7473cb4026000000000000a66672616d6573928ca6"
    "63616d657261a563616d2d31a373657105a3707473cb3fe0000000000000aa636170747572655f7473cb40240000"
    "00000000ac76616c6964617465645f7473cb4024333333333333a5776964746804a668656967687402a8656e636f"
    "64696e67a3726177ac706978656c5f666f726d6174a779757634323070a56474797065a575696e7438a573686170"
    "65920304a76d65747269637382a973686172706e657373cb3ff8000000000000a573636f7265cb40000000000000"
    "008ca663616d657261a563616d2d31a373657106a3707473c0aa636170747572655f7473cb4024000000000000ac"
    "76616c6964617465645f7473cb4024333333333333a57769647468cd0280a6686569676874cd0168a8656e636f64"
    "696e67a46a706567ac706978656c5f666f726d6174a56267723234a56474797065a575696e7438a5736861706593"
    "cd0168cd028003a76d65747269637380",
}


def test_every_frame_format_is_byte_for_byte_version_1() -> None:
    verdict = Verdict(REF, {"brightness": 3.0, "sharpness": 12.5}, ("too_dark", "low_contrast"), 2.0)
    tap = TapFrame(
        "cam-1", 7, 0.28, 1.7e9, 1.7e9 + 0.01, 320, 240, "raw", "yuv420p", (360, 320), {"score": 0.9}
    )
    tap_meta = TapFrame("cam-1", 7, None, 1.7e9, 1.7e9 + 0.01, 320, 240, "meta", None, None, {"score": 0.9})
    batch = encode_batch_entry("b-1", 11.0, [(META, b"\x01"), (JPEG_META, b"\x02")])
    made = {
        "ref": encode(REF),
        "ref_without_pts": encode(FrameRef("cam-2", 0, 0, 2, 64, 64, None, 1.0)),
        "verdict": encode(verdict),
        "output": encode(Output(META, TapPart.ATTACHED)),
        "jpeg_output": encode(Output(JPEG_META)),
        "tap": tap.encode(),
        "tap_meta": tap_meta.encode(),
        "batch_meta": batch["meta"],
    }
    assert {name: data.hex() for name, data in made.items()} == GOLDEN
    assert list(batch) == ["v", "meta", "f0", "f1"]
    for name in ("ref", "ref_without_pts", "verdict", "output", "jpeg_output"):
        assert encode(decode(made[name])) == made[name]
    assert TapFrame.decode(made["tap"]) == tap and TapFrame.decode(made["tap_meta"]) == tap_meta
    assert list(encode_qc_entry(verdict).items()) == [
        ("v", "1"),
        ("camera", "cam-1"),
        ("seq", 41),
        ("pts", "4.1"),
        ("capture_ts", "1700000000.25"),
        ("width", 1280),
        ("height", 720),
        ("reasons", "too_dark,low_contrast"),
        ("metric.brightness", "3.0"),
        ("metric.sharpness", "12.5"),
    ]
    qc = encode_qc_entry(Verdict(FrameRef("cam-2", 0, 0, 2, 64, 64, None, 1.0), {}, ("x",), 1.0))
    assert (qc["pts"], qc["capture_ts"]) == ("", "1.0")


def test_a_frame_field_is_declared_once_and_checked_alike_wherever_it_travels() -> None:
    @dataclasses.dataclass
    class Renamed:
        camera_id: str

    @dataclasses.dataclass
    class Retyped:
        camera: int

    for cls in (Renamed, Retyped):
        with pytest.raises(TypeError, match="FRAME_FIELDS"):
            FieldCodec(cls)
    tap = TapFrame("cam-1", 7, None, 1.0, 2.0, 4, 2, "meta", None, None, {})
    for name, bad in (("seq", -1), ("seq", "7"), ("camera", 3), ("metrics", {"sharpness": "high"})):
        array = FrameMeta.FIELDS.pack(META)
        array[FrameMeta.FIELDS.names.index(name)] = bad
        with pytest.raises(WireError, match=name):
            decode(msgpack.packb([PROTOCOL_VERSION, Output.TYPE, array, 0]))
        header = {**msgpack.unpackb(tap.encode()), name: bad}
        with pytest.raises(WireError, match=name):
            TapFrame.decode(msgpack.packb(header))
    assert TapFrame.of(META, "meta", None, None) == TapFrame(
        "cam-1", 5, 0.5, 10.0, 10.1, 4, 2, "meta", None, None, {"sharpness": 1.5, "score": 2.0}
    )

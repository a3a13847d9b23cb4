"""Every message zstream sends, and the Redis entry formats, in one place.

Internal messages (between processes on one host, over ZeroMQ) are msgpack arrays
`[PROTOCOL_VERSION, type, *fields]`. Up to validation they carry references to
shared-memory slots, never pixels; from validation to the batcher a passing frame's
encoded output (a 640 px JPEG, by default) follows its header as a message part of its
own. A message of another version or an unknown type is rejected with WireError instead
of being guessed at.

Redis entries (what leaves the pipeline) carry their own format version in field `v`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Self, TypeVar

import msgpack

from zstream.core.fields import FieldCodec, check_field, pack_field
from zstream.errors import WireError

PROTOCOL_VERSION = 1
BATCH_FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20  # a header; pixel parts have MAX_PAYLOAD_BYTES
MAX_PAYLOAD_BYTES = 1 << 28  # one raw frame (an unscaled 8K BGR frame is 100 MB)


class _FrameMessage:
    """A message of frame fields only: packed and checked as core.fields declares each field,
    in the order of the dataclass's fields (see `_frame_message`)."""

    __slots__ = ()
    FIELDS: ClassVar[FieldCodec[Any]]

    def _fields(self) -> list[Any]:
        return self.FIELDS.pack(self)

    @classmethod
    def _from(cls, values: list[Any]) -> Self:
        return cls.FIELDS.unpack(values)


M = TypeVar("M", bound=_FrameMessage)


def _frame_message(cls: type[M]) -> type[M]:
    """Give a dataclass of frame fields its codec (FieldCodec refuses a field FRAME_FIELDS lacks),
    whose pack is the class's `_fields` itself: a call less per message."""
    cls.FIELDS = FieldCodec(cls)
    cls._fields = cls.FIELDS.pack  # type: ignore[method-assign,assignment]
    return cls


@_frame_message
@dataclass(frozen=True, slots=True)
class FrameRef(_FrameMessage):
    """capture → validation: a frame is ready in `slot` of the camera's ring.

    `generation` is the slot's generation when written: a reader that finds another
    generation there knows the frame was overwritten and must drop it. Its fields, and those
    of the other frame messages, are described in core.fields.FRAME_FIELDS.
    """

    TYPE: ClassVar[int] = 1
    camera: str
    seq: int
    slot: int
    generation: int
    width: int
    height: int
    pts: float | None
    capture_ts: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """validation → batcher: the frame's quality metrics and why it failed (empty = passed)."""

    TYPE: ClassVar[int] = 2
    frame: FrameRef
    metrics: dict[str, float]
    reasons: tuple[str, ...]
    validated_ts: float

    @property
    def passed(self) -> bool:
        return not self.reasons

    def _fields(self) -> list[Any]:
        return [
            self.frame._fields(),
            pack_field("metrics", self.metrics),
            list(self.reasons),
            self.validated_ts,
        ]

    @classmethod
    def _from(cls, values: list[Any]) -> Verdict:
        frame, metrics, reasons, validated_ts = values
        _expect(frame, list, "frame")
        _expect(reasons, list, "reasons")
        for reason in reasons:
            _expect(reason, str, "reasons")
        return cls(
            FrameRef._from(frame),
            check_field("metrics", metrics),
            tuple(reasons),
            check_field("validated_ts", validated_ts),
        )


@dataclass(frozen=True, slots=True)
class _ValidatedFrame(_FrameMessage):
    """The fields of a validated frame wherever it goes (a batch entry, the tap), first in each."""

    camera: str
    seq: int
    pts: float | None
    capture_ts: float
    validated_ts: float
    width: int
    height: int


@_frame_message
@dataclass(frozen=True, slots=True)
class FrameMeta(_ValidatedFrame):
    """Metadata of one frame inside a batch entry; `data` is its pixel payload."""

    encoding: str
    pixel_format: str
    shape: tuple[int, ...]
    metrics: dict[str, float]


class TapPart(IntEnum):
    """What an Output says about the tap's own payload (one the batch payload cannot serve)."""

    NONE = 0  # none made: the tap needs none, or nobody watched the camera when it was validated
    ATTACHED = 1  # in the message's third part
    SHED = 2  # the validation worker shed it (counted there): the tap shows nothing of this frame


@dataclass(frozen=True, slots=True)
class Output:
    """validation → batcher: a frame that passed, scaled and encoded for Redis.

    Sent as a multipart message [header, payload] or [header, payload, tap payload]: the
    pixels (JPEG or raw bytes, FrameMeta says which) travel as parts of their own, never
    packed into the header. The validation workers do this per-frame output work, so that
    it scales with their number; the batcher only groups and writes.
    """

    TYPE: ClassVar[int] = 6
    meta: FrameMeta
    tap: TapPart = TapPart.NONE

    def _fields(self) -> list[Any]:
        return [self.meta._fields(), int(self.tap)]

    @classmethod
    def _from(cls, values: list[Any]) -> Output:
        meta, tap = values
        _expect(meta, list, "meta")
        _expect(tap, int, "tap")
        return cls(FrameMeta._from(meta), TapPart(tap))


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """any worker → supervisor: cumulative counters since the worker process started.

    `counters` maps (metric, camera, reason) to a count; camera and reason may be "".
    `states` maps camera id to (state, detail) for the cameras a capture worker runs.
    """

    TYPE: ClassVar[int] = 3
    worker: str
    pid: int
    counters: dict[tuple[str, str, str], int] = field(default_factory=dict)
    states: dict[str, tuple[str, str]] = field(default_factory=dict)

    def _fields(self) -> list[Any]:
        counters = [[m, c, r, n] for (m, c, r), n in self.counters.items()]
        states = {camera: list(state) for camera, state in self.states.items()}
        return [self.worker, self.pid, counters, states]

    @classmethod
    def _from(cls, values: list[Any]) -> WorkerStats:
        worker, pid, counters, states = values
        _expect(worker, str, "worker")
        _expect(pid, int, "pid")
        return cls(
            worker,
            pid,
            {(str(m), str(c), str(r)): int(n) for m, c, r, n in counters},
            {str(camera): (str(s[0]), str(s[1])) for camera, s in states.items()},
        )


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """CLI → supervisor (control endpoint): run `command` with `args` (plain msgpack values)."""

    TYPE: ClassVar[int] = 4
    command: str
    args: dict[str, Any] = field(default_factory=dict)

    def _fields(self) -> list[Any]:
        return [self.command, self.args]

    @classmethod
    def _from(cls, values: list[Any]) -> ControlRequest:
        command, args = values
        _expect(command, str, "command")
        _expect(args, dict, "args")
        return cls(command, args)


@dataclass(frozen=True, slots=True)
class ControlReply:
    """supervisor → CLI: the command's result, or why it was refused (nothing changed then)."""

    TYPE: ClassVar[int] = 5
    ok: bool
    result: Any = None
    error: str = ""

    def _fields(self) -> list[Any]:
        return [self.ok, self.result, self.error]

    @classmethod
    def _from(cls, values: list[Any]) -> ControlReply:
        ok, result, error = values
        if not isinstance(ok, bool):
            raise WireError(f"field 'ok' has type {type(ok).__name__}")
        _expect(error, str, "error")
        return cls(ok, result, error)


Message = FrameRef | Verdict | Output | WorkerStats | ControlRequest | ControlReply
MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls for cls in (FrameRef, Verdict, Output, WorkerStats, ControlRequest, ControlReply)
}


def encode(message: Message) -> bytes:
    return msgpack.packb([PROTOCOL_VERSION, message.TYPE, *message._fields()], use_bin_type=True)


def decode(data: bytes, expected: type[Message] | tuple[type[Message], ...] | None = None) -> Message:
    """Decode one message; WireError on anything malformed, of another version, or unexpected."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        values = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # TypeError: unhashable map key
        raise WireError(f"not msgpack: {exc}") from exc
    if not isinstance(values, list) or len(values) < 2:
        raise WireError("not a zstream message")
    version, kind, *fields = values
    if version != PROTOCOL_VERSION:
        raise WireError(f"protocol version {version!r}, this zstream speaks {PROTOCOL_VERSION}")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise WireError(f"unknown message type {kind!r}")
    wanted = () if expected is None else expected if isinstance(expected, tuple) else (expected,)
    if wanted and cls not in wanted:
        raise WireError(f"expected {' or '.join(kind.__name__ for kind in wanted)}, got {cls.__name__}")
    try:
        return cls._from(fields)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise WireError(f"malformed {cls.__name__}: {exc}") from exc


def _expect(value: Any, kind: type | tuple[type, ...], name: str) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WireError(f"field {name!r} has type {type(value).__name__}")


# ---- Redis entries -------------------------------------------------------------------------


def encode_batch_entry(
    batch_id: str, created_ts: float, frames: list[tuple[FrameMeta, bytes]]
) -> dict[str, Any]:
    """Fields of one XADD: `v`, `meta` (msgpack) and one `f{i}` payload field per frame."""
    meta = {"batch": batch_id, "created_ts": created_ts, "frames": [_entry_frame(m) for m, _ in frames]}
    fields: dict[str, Any] = {"v": str(BATCH_FORMAT_VERSION), "meta": msgpack.packb(meta, use_bin_type=True)}
    for index, (_, data) in enumerate(frames):
        fields[f"f{index}"] = data
    return fields


# A frame's map in a batch entry: FrameMeta's fields by name, and `dtype` (always uint8), which
# format 1 has after `pixel_format`.
_DTYPE_AT = FrameMeta.FIELDS.names.index("pixel_format") + 1
_entry_frame = FrameMeta.FIELDS.mapper(
    (*FrameMeta.FIELDS.names[:_DTYPE_AT], ("dtype", "uint8"), *FrameMeta.FIELDS.names[_DTYPE_AT:])
)


def batch_name(fields: Mapping[Any, Any]) -> str | None:
    """The `batch` name in a stored batch entry's meta (who wrote it), None if it has none."""
    try:
        return msgpack.unpackb(fields[b"meta"], raw=False)["batch"]
    except (KeyError, TypeError, ValueError, msgpack.UnpackException):
        return None


def decode_batch_entry(fields: dict[bytes, bytes]) -> tuple[dict[str, Any], list[tuple[FrameMeta, bytes]]]:
    """Inverse of encode_batch_entry, for consumers; WireError on another format version."""
    version = fields.get(b"v")
    if version != str(BATCH_FORMAT_VERSION).encode():
        raise WireError(f"batch entry format {version!r}, this zstream reads {BATCH_FORMAT_VERSION}")
    try:
        meta = msgpack.unpackb(fields[b"meta"], raw=False)
        frames = [
            (FrameMeta.FIELDS.from_map(m), fields[f"f{index}".encode()])
            for index, m in enumerate(meta["frames"])
        ]
    except (WireError, KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise WireError(f"malformed batch entry: {exc}") from exc
    return meta, frames


def encode_qc_entry(verdict: Verdict) -> dict[str, Any]:
    """A failed frame in the QC stream: flat string fields, readable with redis-cli."""
    fields: dict[str, Any] = {"v": str(BATCH_FORMAT_VERSION)}
    for name in QC_FRAME_FIELDS:
        fields[name] = _redis_text(getattr(verdict.frame, name))
    fields["reasons"] = ",".join(verdict.reasons)
    for name, value in verdict.metrics.items():
        fields[f"metric.{name}"] = repr(float(value))
    return fields


# A failed frame's entry names what a written frame's metadata would, as far as its FrameRef
# knows it: FrameRef's fields in FrameMeta's order (camera, seq, pts, capture_ts, width, height).
QC_FRAME_FIELDS = tuple(name for name in FrameMeta.FIELDS.names if name in FrameRef.FIELDS.names)


def _redis_text(value: Any) -> Any:
    """A field as redis-cli shows it: floats by repr (all their digits), None as ""."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value


# ---- Tap messages ---------------------------------------------------------------------------

TAP_FORMAT_VERSION = 1


@_frame_message
@dataclass(frozen=True, slots=True)
class TapFrame(_ValidatedFrame):
    """Header of one tap message: [camera id, header (msgpack map), payload].

    A map rather than an array so that plain subscribers read it by name; `v` is the format
    version. Keys may be added within a version; removing or changing one bumps `v`. The
    frame's fields are its FrameMeta's; `pixel_format` and `shape` describe the tap's payload
    (None for "meta", which has no pixels).
    """

    payload: str
    pixel_format: str | None
    shape: tuple[int, ...] | None
    metrics: dict[str, float]

    @classmethod
    def of(
        cls, meta: FrameMeta, payload: str, pixel_format: str | None, shape: tuple[int, ...] | None
    ) -> TapFrame:
        """The header of a frame on its way to Redis (`meta`), with a payload of its own."""
        own: dict[str, Any] = {"payload": payload, "pixel_format": pixel_format, "shape": shape}
        shared = FrameMeta.FIELDS.as_dict(meta)
        return cls(**{name: own[name] if name in own else shared[name] for name in cls.FIELDS.names})

    def encode(self) -> bytes:
        return msgpack.packb(_tap_header(self), use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> TapFrame:
        """WireError on anything malformed or of another format version; unknown keys are ignored."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise WireError(f"tap header of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            values = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise WireError(f"not msgpack: {exc}") from exc
        if not isinstance(values, dict):
            raise WireError("not a tap header")
        if values.get("v") != TAP_FORMAT_VERSION:
            raise WireError(f"tap format {values.get('v')!r}, this zstream reads {TAP_FORMAT_VERSION}")
        try:
            return cls.FIELDS.from_map(values)
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed tap header: {exc}") from exc


_tap_header = TapFrame.FIELDS.mapper((("v", TAP_FORMAT_VERSION), *TapFrame.FIELDS.names))

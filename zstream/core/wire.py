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
from typing import Any, ClassVar

import msgpack

from zstream.errors import WireError

PROTOCOL_VERSION = 1
BATCH_FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20  # a header; pixel parts have MAX_PAYLOAD_BYTES
MAX_PAYLOAD_BYTES = 1 << 28  # one raw frame (an unscaled 8K BGR frame is 100 MB)


@dataclass(frozen=True, slots=True)
class FrameRef:
    """capture → validation: a frame is ready in `slot` of the camera's ring.

    `generation` is the slot's generation when written: a reader that finds another
    generation there knows the frame was overwritten and must drop it.
    """

    TYPE: ClassVar[int] = 1
    camera: str
    seq: int  # per camera, strictly increasing, survives worker restarts
    slot: int
    generation: int
    width: int
    height: int
    pts: float | None  # seconds, from the stream
    capture_ts: float  # wall clock (time.time()) when the frame entered the ring

    def _fields(self) -> list[Any]:
        return [
            self.camera,
            self.seq,
            self.slot,
            self.generation,
            self.width,
            self.height,
            self.pts,
            self.capture_ts,
        ]

    @classmethod
    def _from(cls, values: list[Any]) -> FrameRef:
        camera, seq, slot, generation, width, height, pts, capture_ts = values
        _expect(camera, str, "camera")
        for name, value in (
            ("seq", seq),
            ("slot", slot),
            ("generation", generation),
            ("width", width),
            ("height", height),
        ):
            _expect(value, int, name)
            if value < 0:
                raise WireError(f"FrameRef.{name} must be >= 0, got {value}")
        if pts is not None:
            _expect(pts, (int, float), "pts")
        _expect(capture_ts, (int, float), "capture_ts")
        return cls(camera, seq, slot, generation, width, height, pts, float(capture_ts))


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
        metrics = {name: float(value) for name, value in self.metrics.items()}
        return [self.frame._fields(), metrics, list(self.reasons), self.validated_ts]

    @classmethod
    def _from(cls, values: list[Any]) -> Verdict:
        frame, metrics, reasons, validated_ts = values
        _expect(frame, list, "frame")
        _expect(metrics, dict, "metrics")
        _expect(reasons, list, "reasons")
        if len(frame) != 8:
            raise WireError(f"Verdict.frame has {len(frame)} fields, expected 8")
        for name, value in metrics.items():
            _expect(name, str, "metrics key")
            _expect(value, (int, float), f"metrics[{name!r}]")
        for reason in reasons:
            _expect(reason, str, "reasons")
        _expect(validated_ts, (int, float), "validated_ts")
        return cls(FrameRef._from(frame), metrics, tuple(reasons), float(validated_ts))


@dataclass(frozen=True, slots=True)
class FrameMeta:
    """Metadata of one frame inside a batch entry; `data` is its pixel payload."""

    camera: str
    seq: int
    pts: float | None
    capture_ts: float
    validated_ts: float
    width: int
    height: int
    encoding: str  # "raw" or "jpeg"
    pixel_format: str  # raw: yuv420p | bgr24 | rgb24; jpeg: what decoding gives ("bgr24")
    shape: tuple[int, ...]  # numpy shape of the decoded array
    metrics: dict[str, float]

    def _fields(self) -> list[Any]:
        return [
            self.camera,
            self.seq,
            self.pts,
            self.capture_ts,
            self.validated_ts,
            self.width,
            self.height,
            self.encoding,
            self.pixel_format,
            list(self.shape),
            {name: float(value) for name, value in self.metrics.items()},
        ]

    @classmethod
    def _from(cls, values: list[Any]) -> FrameMeta:
        camera, seq, pts, capture_ts, validated_ts, width, height, encoding, pixel_format, shape, metrics = (
            values
        )
        _expect(camera, str, "camera")
        for name, value in (("seq", seq), ("width", width), ("height", height)):
            _expect(value, int, name)
        for name, text in (("encoding", encoding), ("pixel_format", pixel_format)):
            _expect(text, str, name)
        _expect(shape, list, "shape")
        _expect(metrics, dict, "metrics")
        if pts is not None:
            _expect(pts, (int, float), "pts")
        return cls(
            camera,
            seq,
            pts,
            float(capture_ts),
            float(validated_ts),
            width,
            height,
            encoding,
            pixel_format,
            tuple(int(n) for n in shape),
            metrics,
        )


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
    meta = {
        "batch": batch_id,
        "created_ts": created_ts,
        "frames": [
            {
                "camera": m.camera,
                "seq": m.seq,
                "pts": m.pts,
                "capture_ts": m.capture_ts,
                "validated_ts": m.validated_ts,
                "width": m.width,
                "height": m.height,
                "encoding": m.encoding,
                "pixel_format": m.pixel_format,
                "dtype": "uint8",
                "shape": list(m.shape),
                "metrics": m.metrics,
            }
            for m, _ in frames
        ],
    }
    fields: dict[str, Any] = {"v": str(BATCH_FORMAT_VERSION), "meta": msgpack.packb(meta, use_bin_type=True)}
    for index, (_, data) in enumerate(frames):
        fields[f"f{index}"] = data
    return fields


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
            (
                FrameMeta(
                    camera=m["camera"],
                    seq=m["seq"],
                    pts=m["pts"],
                    capture_ts=m["capture_ts"],
                    validated_ts=m["validated_ts"],
                    width=m["width"],
                    height=m["height"],
                    encoding=m["encoding"],
                    pixel_format=m["pixel_format"],
                    shape=tuple(m["shape"]),
                    metrics=m["metrics"],
                ),
                fields[f"f{index}".encode()],
            )
            for index, m in enumerate(meta["frames"])
        ]
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise WireError(f"malformed batch entry: {exc}") from exc
    return meta, frames


def encode_qc_entry(verdict: Verdict) -> dict[str, Any]:
    """A failed frame in the QC stream: flat string fields, readable with redis-cli."""
    frame = verdict.frame
    fields: dict[str, Any] = {
        "v": str(BATCH_FORMAT_VERSION),
        "camera": frame.camera,
        "seq": frame.seq,
        "pts": "" if frame.pts is None else repr(frame.pts),
        "capture_ts": repr(frame.capture_ts),
        "width": frame.width,
        "height": frame.height,
        "reasons": ",".join(verdict.reasons),
    }
    for name, value in verdict.metrics.items():
        fields[f"metric.{name}"] = repr(float(value))
    return fields


# ---- Tap messages ---------------------------------------------------------------------------

TAP_FORMAT_VERSION = 1
TAP_PAYLOADS = ("meta", "jpeg", "raw")


@dataclass(frozen=True, slots=True)
class TapFrame:
    """Header of one tap message: [camera id, header (msgpack map), payload].

    A map rather than an array so that plain subscribers read it by name; `v` is the format
    version. Keys may be added within a version; removing or changing one bumps `v`.
    """

    camera: str
    seq: int
    pts: float | None
    capture_ts: float
    validated_ts: float
    width: int
    height: int
    payload: str  # "meta" (no pixels), "jpeg" (a JPEG file) or "raw" (I420 bytes)
    pixel_format: str | None  # what the payload decodes to: raw "yuv420p", jpeg "bgr24", meta None
    shape: tuple[int, ...] | None  # numpy shape of the decoded payload; None for meta
    metrics: dict[str, float]

    def encode(self) -> bytes:
        return msgpack.packb(
            {
                "v": TAP_FORMAT_VERSION,
                "camera": self.camera,
                "seq": self.seq,
                "pts": self.pts,
                "capture_ts": self.capture_ts,
                "validated_ts": self.validated_ts,
                "width": self.width,
                "height": self.height,
                "payload": self.payload,
                "pixel_format": self.pixel_format,
                "shape": None if self.shape is None else list(self.shape),
                "metrics": self.metrics,
            },
            use_bin_type=True,
        )

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
            frame = cls(
                camera=values["camera"],
                seq=values["seq"],
                pts=values["pts"],
                capture_ts=float(values["capture_ts"]),
                validated_ts=float(values["validated_ts"]),
                width=values["width"],
                height=values["height"],
                payload=values["payload"],
                pixel_format=values["pixel_format"],
                shape=None if values["shape"] is None else tuple(values["shape"]),
                metrics=dict(values["metrics"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed tap header: {exc}") from exc
        _expect(frame.camera, str, "camera")
        for name in ("seq", "width", "height"):
            _expect(getattr(frame, name), int, name)
        if frame.payload not in TAP_PAYLOADS:
            raise WireError(f"unknown tap payload {frame.payload!r}")
        return frame

"""A frame's fields, each declared once: its type, what it means, and how the wire checks it.

The messages that carry a frame's metadata (`wire.FrameRef`, `wire.FrameMeta`, the tap's
`wire.TapFrame`; `consumer.Frame` is a FrameMeta) are dataclasses whose fields are named from
`FRAME_FIELDS`. How each of them is packed and checked is derived from its dataclass fields by
`FieldCodec`, in their order (the order of the wire arrays), never listed again by hand: a new
field is a line here and a line in the dataclass. A dataclass field this table does not declare,
or declares with another type, fails at import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from zstream.errors import WireError

TAP_PAYLOADS = ("meta", "jpeg", "raw")

Check = Callable[[Any, str], Any]  # (a decoded value, its field's name) -> the value the dataclass holds


def _text(value: Any, name: str) -> str:
    if type(value) is not str:
        raise WireError(f"field {name!r} has type {type(value).__name__}")
    return value


def _index(value: Any, name: str) -> int:
    """A count, an index or a size: an int (not a bool), never negative."""
    if type(value) is not int:
        raise WireError(f"field {name!r} has type {type(value).__name__}")
    if value < 0:
        raise WireError(f"field {name!r} must be >= 0, got {value}")
    return value


def _number(value: Any, name: str) -> float:
    """A number as it came (an int stays one)."""
    if type(value) is not float and type(value) is not int:
        raise WireError(f"field {name!r} has type {type(value).__name__}")
    return value


def _seconds(value: Any, name: str) -> float:
    return float(_number(value, name))


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if type(value) is not list:
        raise WireError(f"field {name!r} has type {type(value).__name__}")
    return tuple(_index(n, f"{name}[{i}]") for i, n in enumerate(value))


def _metrics(value: Any, name: str) -> dict[str, float]:
    if type(value) is not dict:
        raise WireError(f"field {name!r} has type {type(value).__name__}")
    for key, number in value.items():
        if type(key) is not str or (type(number) is not float and type(number) is not int):
            _text(key, f"{name} key")
            _number(number, f"{name}[{key!r}]")
    return value


def _payload(value: Any, name: str) -> str:
    if _text(value, name) not in TAP_PAYLOADS:
        raise WireError(f"unknown tap payload {value!r}")
    return value


def _floats(value: dict[str, float]) -> dict[str, float]:
    return {name: float(number) for name, number in value.items()}


@dataclass(frozen=True, slots=True)
class FrameField:
    type: str  # as the dataclasses annotate it; a field that may be absent adds " | None" there
    check: Check  # decoding: refuses (WireError) what the field cannot hold
    pack: Callable[[Any], Any] | None = None  # encoding: the value as msgpack carries it (None: as is)
    doc: str = ""


FRAME_FIELDS: dict[str, FrameField] = {
    "camera": FrameField("str", _text, doc="the camera's id"),
    "seq": FrameField("int", _index, doc="per camera, strictly increasing, survives worker restarts"),
    "slot": FrameField("int", _index, doc="the slot of the camera's ring the frame is in"),
    "generation": FrameField("int", _index, doc="the slot's generation when written (see core.ring)"),
    "width": FrameField("int", _index, doc="pixels"),
    "height": FrameField("int", _index, doc="pixels"),
    "pts": FrameField("float", _number, doc="seconds, from the stream (None: it has none)"),
    "capture_ts": FrameField(
        "float", _seconds, doc="wall clock (time.time()) when the frame entered the ring"
    ),
    "validated_ts": FrameField("float", _seconds, doc="wall clock when validation passed the frame"),
    "encoding": FrameField("str", _text, doc='how the payload holds the picture: "raw" or "jpeg"'),
    "pixel_format": FrameField(
        "str", _text, doc='what the payload decodes to: raw yuv420p | bgr24 | rgb24, jpeg "bgr24"'
    ),
    "shape": FrameField(
        "tuple[int, ...]", _shape, doc="numpy shape of the decoded payload (a msgpack array)"
    ),
    "metrics": FrameField("dict[str, float]", _metrics, _floats, doc="quality metrics by name"),
    "payload": FrameField("str", _payload, doc='the tap\'s payload: "meta" (no pixels), "jpeg" or "raw"'),
}

T = TypeVar("T")


def check_field(name: str, value: Any) -> Any:
    """A decoded value of frame field `name`, checked (for messages that hold a few frame fields)."""
    return FRAME_FIELDS[name].check(value, name)


def pack_field(name: str, value: Any) -> Any:
    pack = FRAME_FIELDS[name].pack
    return value if pack is None else pack(value)


class FieldCodec(Generic[T]):
    """Packs and checks the frame fields of dataclass `cls`, in the order of its fields.

    Its functions are generated from the fields once per class, as dataclasses generates
    `__init__`: a FrameRef crosses two sockets per frame, and code written out field by field
    (attribute loads the interpreter specialises) costs what the hand-written lists did, where
    a loop over the fields costs up to twice that.
    """

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        self.names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        self._scope: dict[str, Any] = {"cls": cls, "WireError": WireError}
        self._packed: dict[str, str] = {}  # field name -> the expression that packs it
        checks: list[str] = []  # per field, the expression that checks values[{}]
        for index, f in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
            declared = FRAME_FIELDS.get(f.name)
            kind = str(f.type).removesuffix(" | None")
            if declared is None or declared.type != kind:
                raise TypeError(f"{cls.__name__}.{f.name}: {f.type} is no field of core.fields.FRAME_FIELDS")
            optional = kind != f.type  # None passes unchecked, unpacked
            self._scope[f"check{index}"] = declared.check
            check = f"check{index}(values[{{0}}], {f.name!r})"
            checks.append(f"(None if values[{{0}}] is None else {check})" if optional else check)
            self._packed[f.name] = f"self.{f.name}"
            if declared.pack is not None:
                self._scope[f"pack{index}"] = declared.pack
                pack = f"pack{index}(self.{f.name})"
                self._packed[f.name] = f"(None if self.{f.name} is None else {pack})" if optional else pack
        count = len(self.names)
        by_index = ", ".join(check.format(index) for index, check in enumerate(checks))
        by_name = ", ".join(check.format(repr(name)) for name, check in zip(self.names, checks, strict=True))
        # The message as a msgpack array, and back; its fields by name, as they are; back from a map.
        self.pack: Callable[[T], list[Any]] = self._generate(
            "self", f"return [{', '.join(self._packed.values())}]"
        )
        self.unpack: Callable[[list[Any]], T] = self._generate(
            "values",
            f"if len(values) != {count}:",
            f"    raise WireError(f'{cls.__name__} has {{len(values)}} fields, expected {count}')",
            f"return cls({by_index})",
        )
        self.as_dict: Callable[[Any], dict[str, Any]] = self._generate(
            "self", f"return {{{', '.join(f'{name!r}: self.{name}' for name in self.names)}}}"
        )
        self.from_map: Callable[[Mapping[str, Any]], T] = self._generate("values", f"return cls({by_name})")

    def mapper(self, layout: Sequence[str | tuple[str, Any]]) -> Callable[[T], dict[str, Any]]:
        """A function from a message to a map (for formats read by name) in the order of
        `layout`: field names, packed, and (key, constant) pairs where a format has keys of its own."""
        items, constants = [], {}
        for index, item in enumerate(layout):
            if isinstance(item, str):
                items.append(f"{item!r}: {self._packed[item]}")
            else:
                constants[f"constant{index}"] = item[1]
                items.append(f"{item[0]!r}: constant{index}")
        return self._generate("self", f"return {{{', '.join(items)}}}", **constants)

    def _generate(self, argument: str, *body: str, **names: Any) -> Any:
        """A function of `argument` with these lines, over the checks and packs of the fields
        (whose names and types were checked against FRAME_FIELDS) and `names`."""
        scope = {**self._scope, **names}
        exec("\n    ".join((f"def generated({argument}):", *body)), scope)
        return scope["generated"]

"""How a stage takes messages from its internal sockets: decoded strictly, and anything
malformed, of another version or unforeseen counted as a dropped frame, never fatal."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Protocol

from zstream.core.vocabulary import DropReason
from zstream.core.wire import Message, decode
from zstream.errors import WireError

DRAIN_IDLE_S = 0.3  # while stopping: input quiet this long means upstream has nothing left

log = logging.getLogger(__name__)


class DropCounter(Protocol):
    """What the intake counts with (a worker's `zstream.stats.Counters`)."""

    def drop(self, stage: str, reason: str, camera: str = ..., n: int = ...) -> None: ...


class MessageIntake:
    """A stage subclasses this, names its STAGE and EXPECTED message type(s) and implements
    accept(message, *parts), where `parts` are the message parts after its header (the pixels
    of an Output)."""

    STAGE: ClassVar[str]
    EXPECTED: ClassVar[type[Message] | tuple[type[Message], ...]]
    counters: DropCounter

    def handle(self, data: bytes, *parts: Any) -> None:
        try:
            message = decode(data, self.EXPECTED)
        except WireError as exc:
            self.counters.drop(self.STAGE, DropReason.BAD_MESSAGE)
            log.warning("%s rejected a message: %s", self.STAGE, exc)
            return
        try:
            self.accept(message, *parts)
        except Exception:  # a message we did not foresee must cost one frame, not the worker
            self.counters.drop(self.STAGE, DropReason.BAD_MESSAGE)
            log.exception("%s rejected a message that failed unexpectedly", self.STAGE)

    def accept(self, message: Any, *parts: Any) -> None:
        raise NotImplementedError

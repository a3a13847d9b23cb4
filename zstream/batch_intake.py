"""How the batcher takes frames in: its PULL socket, read in bursts from the event loop, and
held back while Redis is behind (frames then wait upstream, in the validation workers)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import zmq

from zstream.core.wire import MAX_PAYLOAD_BYTES
from zstream.topology.schema import BatcherSettings

GATHER_S = 0.02  # after a burst of intake, frames gather this long before the next
INTAKE_HWM = 200  # frames queued from each validation worker (each up to a raw frame's size)


class Receiver(Protocol):
    """What intake hands frames to: the batcher (zstream.batch.Batcher)."""

    settings: BatcherSettings
    written: asyncio.Event  # set at every batch Redis takes

    def handle(self, data: bytes, *parts: Any) -> None: ...

    def backlogged(self) -> bool: ...

    def seal_if_due(self) -> float: ...


class Intake:
    """The batcher's PULL socket, read in bursts from the event loop.

    Its file descriptor is watched once, for the whole run: zmq.asyncio's poll() registers and
    removes it at every call, which cost about 0.5 ms of CPU per wake-up (at 200 frames/s, more
    than the frames themselves). ZeroMQ signals that descriptor on edges, so the callback reads
    the socket's events (which re-arms it) and only then says whether frames wait.
    """

    def __init__(self, context: zmq.Context, endpoint: str) -> None:
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.RCVHWM, INTAKE_HWM)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_PAYLOAD_BYTES)  # per part: headers are checked on decoding
        self.socket.bind(endpoint)
        self.readable = asyncio.Event()
        self._fd = self.socket.getsockopt(zmq.FD)
        asyncio.get_running_loop().add_reader(self._fd, self._wake)

    def ready(self) -> bool:
        return bool(self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN)

    def _wake(self) -> None:
        if self.ready():
            self.readable.set()

    async def wait(self, timeout_s: float) -> bool:
        """Whether frames wait, within `timeout_s`."""
        self.readable.clear()
        if self.ready():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.readable.wait(), timeout_s)
        return self.ready()

    def take(self, batcher: Receiver, limit: int = 256) -> int:
        """Hand the batcher what waits, up to `limit` frames or until it is backlogged."""
        taken = 0
        while taken < limit and self.ready():
            batcher.handle(*self.socket.recv_multipart(zmq.NOBLOCK))
            taken += 1
            if batcher.backlogged():
                break
        return taken

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        self.socket.close(linger=0)


async def take_some(batcher: Receiver, intake: Intake, timeout_s: float) -> bool:
    """One round of intake; whether the upstream stages may still have frames for us."""
    if batcher.backlogged():  # Redis is behind: frames wait upstream until a batch is written
        batcher.written.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(batcher.written.wait(), timeout_s)
        return True
    if not await intake.wait(timeout_s):
        return False
    taken = intake.take(batcher)
    # A short burst: let frames gather, for a wake-up per frame costs more than the frame,
    # and a batch waits for batch_timeout_ms anyway.
    gather = GATHER_S if taken < batcher.settings.batch_size else 0.0
    await asyncio.sleep(min(gather, batcher.seal_if_due()))
    return True

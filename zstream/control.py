"""The control plane of a running `zstream up`: one ZeroMQ request/reply endpoint.

The supervisor answers on a ROUTER socket polled from its own loop (so a command sees and
changes its state without locks), one request at a time, never blocking on a client that
went away. The CLI asks with a REQ socket and a deadline, so an absent pipeline is one
clear line, not a hang. Requests and replies are `wire.ControlRequest`/`ControlReply`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from zstream.core.wire import ControlReply, ControlRequest, decode, encode
from zstream.errors import WireError, ZStreamError
from zstream.rundir import ENDPOINTS_FILE
from zstream.security import CurveServer, curve_client

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 5.0


class ControlError(ZStreamError):
    """The supervisor refused a command (nothing was changed), or could not be reached."""


Handler = Callable[[str, dict[str, Any]], Any]


class ControlServer:
    """The supervisor's side: bind, and answer whatever requests are waiting."""

    def __init__(self, context: zmq.Context, endpoint: str, curve: CurveServer | None = None) -> None:
        self.socket = context.socket(zmq.ROUTER)
        if curve is not None:
            curve.protect(self.socket)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a client gone: its reply is dropped
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close()
            raise ZStreamError(f"cannot bind the control endpoint {endpoint}: {exc}") from exc
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def serve_pending(self, handler: Handler, limit: int = 16) -> None:
        """Answer up to `limit` waiting requests; returns at once when there are none."""
        for _ in range(limit):
            try:
                identity, empty, payload = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:  # not a REQ envelope: nothing to answer
                continue
            reply = self._answer(handler, payload)
            try:
                self.socket.send_multipart([identity, empty, encode(reply)], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.debug("control reply not sent: %s", exc)

    def _answer(self, handler: Handler, payload: bytes) -> ControlReply:
        try:
            request = decode(payload, ControlRequest)
        except WireError as exc:
            return ControlReply(False, None, f"bad request: {exc}")
        assert isinstance(request, ControlRequest)
        try:
            return ControlReply(True, handler(request.command, request.args))
        except ControlError as exc:
            return ControlReply(False, None, str(exc))
        except Exception as exc:  # a bug must cost one reply, not the pipeline
            log.exception("control command %r failed", request.command)
            return ControlReply(False, None, f"{request.command} failed: {exc!r}")

    def close(self) -> None:
        self.socket.close(linger=0)


class ControlClient:
    """The CLI's side: one request, one reply, within a deadline."""

    def __init__(self, endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S, keys: Path | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.keys = keys  # CURVE client keys (see zstream.security), for a protected endpoint

    def call(self, command: str, **args: Any) -> Any:
        """The command's result; ControlError when refused or when nobody answers."""
        context: zmq.Context = zmq.Context.instance()
        socket = context.socket(zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            if self.keys is not None:
                curve_client(socket, self.keys)
            socket.connect(self.endpoint)
            socket.send(encode(ControlRequest(command, args)))
            if not socket.poll(int(self.timeout_s * 1000)):
                raise ControlError(
                    f"no answer from the control endpoint {self.endpoint} within {self.timeout_s:g} s "
                    "(is `zstream up` running?)"
                )
            reply = decode(socket.recv(), ControlReply)
        except zmq.ZMQError as exc:
            raise ControlError(f"cannot reach the control endpoint {self.endpoint}: {exc}") from exc
        except WireError as exc:
            raise ControlError(f"{self.endpoint} answered something else than zstream: {exc}") from exc
        except ZStreamError as exc:  # unreadable keys
            raise ControlError(str(exc)) from exc
        finally:
            socket.close()
        assert isinstance(reply, ControlReply)
        if not reply.ok:
            raise ControlError(reply.error)
        return reply.result


def published_endpoints(run_dir: str | Path) -> dict[str, str]:
    """The endpoints a running pipeline actually bound (ports it picked itself included)."""
    try:
        return dict(json.loads((Path(run_dir) / ENDPOINTS_FILE).read_text()))
    except (OSError, ValueError):
        return {}

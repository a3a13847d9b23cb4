"""WebRTC cameras and media servers through WHEP (draft-ietf-wish-whep), received with aiortc.

    whep://host:8889/cam/whep             the WHEP endpoint http://host:8889/cam/whep
    whep+https://:TOKEN@host/cam/whep     https, with `Authorization: Bearer TOKEN`

The bearer token is the URL's password (the user name is ignored), so `mask_url` hides it in
every log line, error and status file like any camera password. The query string is passed on.

One WHEP session: a recvonly video offer (aiortc gathers ICE candidates before the offer
is sent: no trickle), POSTed as application/sdp; the server answers 201 with its SDP and a
`Location` for the session, which close() DELETEs. aiortc depacketises and decodes frames in
its own thread and hands over av.VideoFrame in yuv420p, timed by the RTP clock.

aiortc is asyncio and sources are synchronous, so each source owns a private event loop in a
background thread; open(), every frame and close() are bounded calls into it, so frames()
returns promptly once `stop` is set and close() leaves no thread behind.

No STUN or TURN server is configured: aiortc would otherwise ask Google's STUN server by
default. Host candidates reach a server on the same network; cameras behind NAT need a media
server (MediaMTX, Janus) next to them. aioice never offers 127.0.0.1, so even a server on this
host is reached through a network interface.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import av
import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from zstream.errors import SourceError, SourceRejected, mask_url
from zstream.sources.base import DecodedFrame, FrameGate
from zstream.sources.pyav_decode import to_decoded

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMES = {"whep": "http", "whep+https": "https"}
DELETE_TIMEOUT_S = 2.0  # the session's DELETE is a courtesy: a dead server must not hold close()
PC_CLOSE_TIMEOUT_S = 2.0
THREAD_JOIN_TIMEOUT_S = 5.0
POLL_S = 0.1  # how often a wait for a frame looks at `stop`


@dataclass(frozen=True, slots=True)
class WhepEndpoint:
    url: str  # http(s) URL without user info
    token: str | None


def whep_endpoint(url: str) -> WhepEndpoint:
    """The HTTP endpoint and bearer token of a whep:// or whep+https:// URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SourceError(f"{mask_url(url)}: unparseable URL ({exc})") from exc
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise SourceError(f"{mask_url(url)}: not a WHEP URL (whep:// or whep+https://)")
    if not parts.hostname:
        raise SourceError(f"{mask_url(url)}: no host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    endpoint = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return WhepEndpoint(endpoint, parts.password or None)


class WhepSource:
    """A WHEP stream as a FrameSource; see the module docstring for URLs and tokens."""

    def __init__(self, url: str, *, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0) -> None:
        self.url = url
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._runner: _LoopThread | None = None
        self._session: _Session | None = None

    def open(self) -> None:
        self.close()
        endpoint = whep_endpoint(self.url)
        self._runner = _LoopThread(f"whep {mask_url(self.url)}")
        try:
            connect = _Session.connect(endpoint, mask_url(self.url), self.open_timeout_s)
            # The coroutine keeps its own deadline and cleans up after itself; the margin
            # lets it report (and DELETE a half-made session) before we give up on it.
            self._session = self._runner.call(connect, self.open_timeout_s + DELETE_TIMEOUT_S + 1)
        except _CallTimeout as exc:
            self.close()
            raise SourceError(
                f"cannot open {mask_url(self.url)}: no session within {self.open_timeout_s:g}s"
            ) from exc
        except BaseException:
            self.close()
            raise

    def frames(self, stop: threading.Event, gate: FrameGate) -> Iterator[DecodedFrame]:
        runner, session = self._runner, self._session
        if runner is None or session is None:
            raise SourceError(f"{mask_url(self.url)}: read before open()")
        while not stop.is_set():
            frame = self._next_frame(runner, session, stop)
            if frame is None:
                return
            pts = frame.time
            if gate.admit(pts):
                yield to_decoded(frame, pts)

    def _next_frame(self, runner: _LoopThread, session: _Session, stop: threading.Event) -> Any:
        """The next av.VideoFrame, or None once `stop` is set."""
        future = runner.submit(session.next_frame(self.read_timeout_s))
        try:
            while not concurrent.futures.wait([future], POLL_S).done:
                if stop.is_set():
                    return None
            return future.result()
        finally:
            future.cancel()

    def close(self) -> None:
        runner, self._runner = self._runner, None
        session, self._session = self._session, None
        if runner is None:
            return
        try:
            if session is not None:
                runner.call(session.close(), DELETE_TIMEOUT_S + PC_CLOSE_TIMEOUT_S + 1)
        except Exception as exc:  # closing is best effort: the loop's shutdown below still runs
            log.warning("%s: closing the WHEP session failed: %r", mask_url(self.url), exc)
        finally:
            runner.stop()


class _Session:
    """One WHEP session: peer connection, its video track and the resource to DELETE. Lives in the loop."""

    def __init__(self, endpoint: WhepEndpoint, shown: str, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.shown = shown  # the masked URL, for messages
        headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
        self.http = httpx.AsyncClient(headers=headers, follow_redirects=True, timeout=timeout_s)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.transceiver = self.pc.addTransceiver("video", direction="recvonly")
        self.track: MediaStreamTrack | None = None  # the receiver's, once the answer is set
        self.location: str | None = None
        self.ended = asyncio.Event()  # the peer connection failed or closed
        self._ended_wait = asyncio.ensure_future(self.ended.wait())
        self.pc.on("connectionstatechange", self._state_changed)

    @classmethod
    async def connect(cls, endpoint: WhepEndpoint, shown: str, timeout_s: float) -> _Session:
        session = cls(endpoint, shown, timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                await session._negotiate()
                await session._connected()
        except TimeoutError as exc:
            await session.close()
            raise SourceError(f"cannot open {shown}: not connected within {timeout_s:g}s") from exc
        except BaseException:
            await session.close()
            raise
        return session

    def _state_changed(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.ended.set()

    async def _negotiate(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())  # waits for ICE gathering
        response = await self._post_offer(self.pc.localDescription.sdp)
        if "location" in response.headers:
            self.location = str(response.url.join(response.headers["location"]))
        else:
            log.warning("%s: the WHEP answer has no Location: the session cannot be deleted", self.shown)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        except ValueError as exc:
            raise SourceRejected(f"cannot open {self.shown}: unusable SDP answer ({exc})") from exc
        self.track = self.transceiver.receiver.track
        if self.track is None or self.transceiver.currentDirection not in ("recvonly", "sendrecv"):
            raise SourceRejected(f"cannot open {self.shown}: the server sends no video we can decode")

    async def _post_offer(self, sdp: str) -> httpx.Response:
        try:
            response = await self.http.post(
                self.endpoint.url, content=sdp, headers={"Content-Type": "application/sdp"}
            )
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot open {self.shown}: {_describe(exc)}") from exc
        if response.status_code in (200, 201) and response.text.strip():
            return response
        reason = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise SourceRejected(f"cannot open {self.shown}: {reason}{_hint(response.status_code)}")
        raise SourceError(f"cannot open {self.shown}: {reason}")

    async def _connected(self) -> None:
        """Wait for ICE and DTLS, so an unreachable peer fails open() rather than the first read."""
        while self.pc.connectionState != "connected":
            if self.ended.is_set():
                raise SourceError(f"cannot open {self.shown}: WebRTC connection {self.pc.connectionState}")
            await asyncio.sleep(0.02)

    async def next_frame(self, timeout_s: float) -> av.VideoFrame:
        """The next decoded frame; SourceError when none comes in `timeout_s` or the connection ends."""
        assert self.track is not None
        receiving = asyncio.ensure_future(self.track.recv())
        try:
            done, _ = await asyncio.wait(
                {receiving, self._ended_wait}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if receiving in done:
                return cast(av.VideoFrame, receiving.result())
        except MediaStreamError as exc:
            raise SourceError(f"{self.shown}: the server ended the stream") from exc
        finally:
            receiving.cancel()
        if self.ended.is_set():
            raise SourceError(f"{self.shown}: WebRTC connection {self.pc.connectionState}")
        raise SourceError(f"{self.shown}: no frame for {timeout_s:g}s")

    async def close(self) -> None:
        """DELETE the session (bounded, best effort), close the peer connection and HTTP client."""
        self._ended_wait.cancel()
        if self.location is not None:
            location, self.location = self.location, None
            try:
                response = await self.http.delete(location, timeout=DELETE_TIMEOUT_S)
                if not response.is_success:
                    log.info("%s: DELETE of the WHEP session: HTTP %d", self.shown, response.status_code)
            except httpx.HTTPError as exc:
                log.info("%s: DELETE of the WHEP session failed: %s", self.shown, _describe(exc))
        try:
            await asyncio.wait_for(self.pc.close(), PC_CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s: the peer connection did not close within %gs", self.shown, PC_CLOSE_TIMEOUT_S)
        await self.http.aclose()


class _CallTimeout(Exception):
    """A call into the loop did not finish in time (and was cancelled)."""


class _LoopThread:
    """A private asyncio loop in a daemon thread, with bounded calls into it from other threads."""

    def __init__(self, name: str) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quit: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name=name, daemon=True)
        self._thread.start()
        if not self._ready.wait(THREAD_JOIN_TIMEOUT_S):
            raise SourceError(f"{name}: its event loop did not start")

    async def _main(self) -> None:
        self._loop, self._quit = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._quit.wait()  # asyncio.run then cancels leftovers and joins the executor's threads

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run `coro` in the loop and wait for it; on timeout it is cancelled and _CallTimeout raised."""
        future = self.submit(coro)
        try:
            if not concurrent.futures.wait([future], timeout_s).done:
                raise _CallTimeout(f"no result in {timeout_s:g}s")
            return future.result()
        finally:
            future.cancel()

    def stop(self) -> None:
        assert self._loop is not None and self._quit is not None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._quit.set)
        started = time.monotonic()
        self._thread.join(THREAD_JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("%s did not stop within %.1fs", self._thread.name, time.monotonic() - started)


def _hint(status: int) -> str:
    if status in (401, 403):
        return " (authentication refused: check the bearer token, the URL's password)"
    if status == 404:
        return " (no such stream: check the path)"
    return ""


def _describe(exc: httpx.HTTPError) -> str:
    """The socket error under httpx's message ("All connection attempts failed" hides which), else
    httpx's message, else the exception's name (timeouts often have no message)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host: {cause.strerror}"
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__

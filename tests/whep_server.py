"""A real WHEP server for tests, made of aiortc (media) and aiohttp (signalling), on 127.0.0.1.

    with whep_server(token="s3cret") as server:
        url = server.url  # whep://127.0.0.1:PORT/whep/cam

POST /whep/cam with an SDP offer answers 201 with the SDP answer and a Location
(/whep/cam/<session id>); DELETE on that Location ends the session. Each session sends
640x360 frames at 15 fps whose picture is frame index's 16 bits as black and white cells of a
4x4 grid: big flat cells survive lossy VP8/H.264 coding, so `read_index` recovers the index.

While the server runs, ICE uses loopback only: aioice leaves 127.0.0.1 out of its host
candidates (a real peer can never use it), so without the patch a test would depend on the
machine having a network interface, and would send its packets through it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import av
import numpy as np
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)

WIDTH, HEIGHT, FPS = 640, 360, 15
GRID = 4  # GRID x GRID cells, one bit each
BITS = GRID * GRID
CLOCK = 90_000  # the RTP video clock
CALL_TIMEOUT_S = 10.0


def index_picture(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """`index` as an I420 array (height * 3 // 2, width): bit k of the index is cell k, white/black."""
    picture = np.full((height * 3 // 2, width), 128, np.uint8)
    cells = np.array([(index >> bit) & 1 for bit in range(BITS)], np.uint8).reshape(GRID, GRID)
    luma = np.where(cells, 235, 16).astype(np.uint8)
    picture[:height] = np.kron(luma, np.ones((height // GRID, width // GRID), np.uint8))
    return picture


def read_index(y: np.ndarray) -> int:
    """The index `index_picture` drew, read from the centre of each cell of a (decoded) luma plane."""
    height, width = y.shape
    ch, cw = height // GRID, width // GRID
    index = 0
    for bit in range(BITS):
        row, col = divmod(bit, GRID)
        cell = y[row * ch + ch // 4 : row * ch + 3 * ch // 4, col * cw + cw // 4 : col * cw + 3 * cw // 4]
        index |= int(cell.mean() > 128) << bit
    return index


class IndexTrack(VideoStreamTrack):
    """Frames 0, 1, 2... at FPS; while `frozen` is set, no frame is sent (a silent camera)."""

    def __init__(self, frozen: threading.Event) -> None:
        super().__init__()
        self._frozen = frozen
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        while self._frozen.is_set():
            await asyncio.sleep(0.05)
        index, self._index = self._index, self._index + 1
        self._start = self._start or time.monotonic()
        await asyncio.sleep(max(0.0, self._start + index / FPS - time.monotonic()))
        frame = av.VideoFrame.from_ndarray(index_picture(index), format="yuv420p")
        frame.pts = index * CLOCK // FPS
        frame.time_base = fractions.Fraction(1, CLOCK)
        return frame


class WhepServer:
    """The server; counters are read from the test thread (ints, written in the server's loop)."""

    def __init__(self, token: str | None = None, codec: str | None = None) -> None:
        self.token = token
        self.codec = codec  # "VP8" or "H264" to insist on one; None answers with the offer's first
        self.sessions_opened = 0
        self.sessions_deleted = 0
        self.refused = 0  # POSTs answered 401
        self.answers: list[str] = []  # SDP answers sent, in order
        self.frozen = threading.Event()
        self.unreachable = False  # answer, then close the media side at once: ICE cannot connect
        self.port = 0
        self._pcs: dict[str, RTCPeerConnection] = {}
        self._loop = asyncio.new_event_loop()
        # Named threads, so tests can tell the server's threads from the client's.
        self._loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(thread_name_prefix="whep-server")
        )
        self._thread = threading.Thread(target=self._loop.run_forever, name="whep-server-loop", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"whep://127.0.0.1:{self.port}/whep/cam"

    @property
    def active_sessions(self) -> int:
        return len(self._pcs)

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        """Close every session (their peers see the connection close), then the HTTP server and loop.
        Safe to call twice."""
        if self._loop.is_closed():
            return
        try:
            if self._thread.is_alive():
                self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
                self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/whep/{name}", self._offer)
        app.router.add_delete("/whep/{name}/{session}", self._delete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        pcs, self._pcs = list(self._pcs.values()), {}
        await asyncio.gather(*(pc.close() for pc in pcs))
        if self._runner is not None:
            await self._runner.cleanup()
        leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    async def _offer(self, request: web.Request) -> web.Response:
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused += 1
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        if request.match_info["name"] != "cam":
            return web.Response(status=404)
        if request.content_type != "application/sdp":
            return web.Response(status=415)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        sender = pc.addTrack(IndexTrack(self.frozen))
        if self.codec is not None:
            transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType == f"video/{self.codec}"])
        await pc.setLocalDescription(await pc.createAnswer())
        session = uuid.uuid4().hex
        self._pcs[session] = pc
        self.answers.append(pc.localDescription.sdp)
        if self.unreachable:
            await pc.close()
        self.sessions_opened += 1
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/whep/cam/{session}"},
        )

    async def _delete(self, request: web.Request) -> web.Response:
        pc = self._pcs.pop(request.match_info["session"], None)
        if pc is None:
            return web.Response(status=404)
        self.sessions_deleted += 1
        await pc.close()
        return web.Response(status=200)


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


@contextmanager
def whep_server(token: str | None = None, codec: str | None = None) -> Iterator[WhepServer]:
    """A running WhepServer on 127.0.0.1 (ICE on loopback for everyone in this process meanwhile)."""
    server = WhepServer(token, codec)
    with mock.patch("aioice.ice.get_host_addresses", _loopback_only):
        server.start()
        try:
            yield server
        finally:
            server.stop()

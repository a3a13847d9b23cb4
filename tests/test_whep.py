"""WHEP cameras against a real WHEP server (aiortc + aiohttp) on loopback: frames are checked by
the index each one draws, so the tests prove pictures arrive in order, not just a connection."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.whep_server import HEIGHT, WIDTH, WhepServer, read_index, whep_server
from zstream.errors import SourceError, SourceRejected
from zstream.sources.base import AdmitAll, FrameGate
from zstream.sources.whep import WhepEndpoint, WhepSource, whep_endpoint

pytestmark = pytest.mark.timeout(60)


class EveryThird:
    """An fps-capping gate: admits frames 0, 3, 6... of those the stream has."""

    def __init__(self) -> None:
        self.seen = 0

    def admit(self, pts: float | None) -> bool:
        self.seen += 1
        return (self.seen - 1) % 3 == 0

    def corrupt(self) -> None:
        pass


@pytest.fixture
def server() -> Iterator[WhepServer]:
    with whep_server() as running:
        yield running


def client_threads() -> set[threading.Thread]:
    """Live threads other than the test server's."""
    return {t for t in threading.enumerate() if not t.name.startswith("whep-server")}


def read(source: WhepSource, count: int, gate: FrameGate | None = None, timeout: float = 20) -> list[int]:
    """Indices of the next `count` frames delivered (source already open), checking their size."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    indices = []
    try:
        for frame in source.frames(stop, gate or AdmitAll()):
            assert (frame.width, frame.height, frame.y.shape) == (WIDTH, HEIGHT, (HEIGHT, WIDTH))
            assert frame.u.shape == frame.v.shape == (HEIGHT // 2, WIDTH // 2)
            indices.append(read_index(frame.y))
            if len(indices) == count:
                break
    finally:
        timer.cancel()
    assert len(indices) == count, f"only {len(indices)} of {count} frames in {timeout}s"
    return indices


def assert_in_order(indices: list[int], step: int = 1) -> None:
    assert all(b > a for a, b in itertools.pairwise(indices)), indices
    steps = [b - a for a, b in itertools.pairwise(indices)]
    assert steps.count(step) >= 0.9 * len(steps), indices


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_frames_arrive_in_order_with_their_pictures(codec: str) -> None:
    with whep_server(codec=codec) as server:
        source = WhepSource(server.url, open_timeout_s=10, read_timeout_s=5)
        started = time.monotonic()
        source.open()
        try:
            first = read(source, 1)
            first_frame_s = time.monotonic() - started
            indices = first + read(source, 29)
        finally:
            source.close()
        assert f"{codec}/90000" in server.answers[0]
        assert indices[0] < 15, indices  # the stream from its start, not from a second later
        assert_in_order(indices)
        assert first_frame_s < 5, f"first frame after {first_frame_s:.2f}s"
        print(f"{codec}: first frame {first_frame_s:.3f}s after open() was called")


def test_frames_carry_rtp_times_in_seconds(server: WhepServer) -> None:
    source = WhepSource(server.url)
    source.open()
    stop, times = threading.Event(), []
    try:
        for frame in source.frames(stop, AdmitAll()):
            times.append(frame.pts)
            if len(times) == 10:
                break
    finally:
        source.close()
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert all(s == pytest.approx(1 / 15, abs=1e-3) for s in steps), times


def test_a_capped_camera_is_asked_about_every_frame_and_gets_every_third(server: WhepServer) -> None:
    source = WhepSource(server.url)
    gate = EveryThird()
    source.open()
    try:
        indices = read(source, 8, gate)
    finally:
        source.close()
    assert gate.seen >= 22  # 8 delivered: frames 0, 3, ... 21 of those seen
    assert len(indices) == (gate.seen + 2) // 3
    assert_in_order(indices, step=3)


def test_close_deletes_the_session_and_leaves_no_thread(server: WhepServer) -> None:
    before = client_threads()
    source = WhepSource(server.url)
    source.open()
    assert client_threads() > before  # the source's loop (and aiortc's decoder) run meanwhile
    read(source, 3)
    source.close()
    assert (server.sessions_opened, server.sessions_deleted, server.active_sessions) == (1, 1, 0)
    assert client_threads() == before
    source.close()  # twice is fine
    assert server.sessions_deleted == 1


def test_stop_ends_frames_promptly_even_while_no_frame_comes(server: WhepServer) -> None:
    source = WhepSource(server.url, read_timeout_s=30)
    source.open()
    try:
        read(source, 2)
        server.frozen.set()
        stop = threading.Event()
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        for _ in source.frames(stop, AdmitAll()):  # frames sent before the freeze may still come
            pass
        assert time.monotonic() - started < 1.0
    finally:
        source.close()


def test_a_wrong_token_is_rejected_without_showing_it() -> None:
    with whep_server(token="s3cret-token") as server:
        port = server.port
        for url, shown in [
            (f"whep://:wrong-token@127.0.0.1:{port}/whep/cam", "whep://:****@127.0.0.1"),
            (f"whep://127.0.0.1:{port}/whep/cam", "whep://127.0.0.1"),
        ]:
            before = client_threads()
            source = WhepSource(url)
            with pytest.raises(SourceRejected) as error:
                source.open()
            message = str(error.value)
            assert "401" in message and "authentication refused" in message and shown in message
            assert "wrong-token" not in message
            assert client_threads() == before  # a failed open stops its loop
            source.close()  # and close after a failed open is fine
        assert (server.refused, server.sessions_opened) == (2, 0)

        source = WhepSource(f"whep://viewer:s3cret-token@127.0.0.1:{port}/whep/cam")
        source.open()
        try:
            assert len(read(source, 2)) == 2
        finally:
            source.close()


def test_a_peer_that_never_connects_fails_open_and_its_session_is_deleted(server: WhepServer) -> None:
    server.unreachable = True
    before = client_threads()
    source = WhepSource(server.url, open_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"WebRTC connection failed|not connected within 2s"):
        source.open()
    assert time.monotonic() - started < 2 + 1
    assert (server.sessions_opened, server.sessions_deleted) == (1, 1)
    assert client_threads() == before


def test_an_unknown_stream_is_rejected(server: WhepServer) -> None:
    source = WhepSource(server.url.replace("/whep/cam", "/whep/other"))
    with pytest.raises(SourceRejected, match=r"404.*no such stream"):
        source.open()


def test_nobody_listening_is_a_retryable_error_at_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = client_threads()
    source = WhepSource(f"whep://127.0.0.1:{port}/whep/cam", open_timeout_s=10)
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        source.open()
    assert not isinstance(error.value, SourceRejected)
    assert "Connection refused" in str(error.value)
    assert time.monotonic() - started < 2
    assert client_threads() == before


def test_a_server_that_never_answers_fails_open_within_the_open_timeout() -> None:
    before = client_threads()
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        source = WhepSource(f"whep://127.0.0.1:{silent.getsockname()[1]}/whep/cam", open_timeout_s=1.5)
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"within 1.5s"):
            source.open()
        assert 1.4 < time.monotonic() - started < 3
    assert client_threads() == before


def test_the_server_going_away_mid_stream_is_an_error() -> None:
    with whep_server() as server:
        source = WhepSource(server.url, read_timeout_s=3)
        source.open()
        read(source, 3)
        server.stop()  # closes its peer connections: the client hears it at once
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"ended the stream|connection closed"):
            read(source, 100)
        assert time.monotonic() - started < 3
        source.close()  # the DELETE finds nobody: bounded, no error


def test_a_silent_server_is_an_error_after_the_read_timeout(server: WhepServer) -> None:
    source = WhepSource(server.url, read_timeout_s=1.5)
    source.open()
    try:
        read(source, 2)
        server.frozen.set()
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"no frame for 1.5s"):
            read(source, 100)
        assert 1.4 < time.monotonic() - started < 3
    finally:
        source.close()


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("whep://cam.local:8889/cam/whep", WhepEndpoint("http://cam.local:8889/cam/whep", None)),
        ("whep+https://:tok@example.com/w?room=3", WhepEndpoint("https://example.com/w?room=3", "tok")),
        ("WHEP://user:tok@[::1]:80/w", WhepEndpoint("http://[::1]:80/w", "tok")),
        ("whep://10.0.0.5", WhepEndpoint("http://10.0.0.5/", None)),
    ],
)
def test_whep_urls_name_an_http_endpoint_and_a_bearer_token(url: str, endpoint: WhepEndpoint) -> None:
    assert whep_endpoint(url) == endpoint


@pytest.mark.parametrize("url", ["rtsp://cam/x", "whep://:pw@/x", "whep://host:99999/x"])
def test_bad_whep_urls_are_errors_without_the_password(url: str) -> None:
    with pytest.raises(SourceError) as error:
        WhepSource(url).open()
    assert ":pw@" not in str(error.value)

"""The RTSP test server is real: what it sends decodes to exactly the file's pixels.

The other RTSP tests trust this fixture to stand in for a camera, so here it is
checked with an independent client (PyAV, i.e. FFmpeg's RTSP demuxer), against the
reference decode of the same file. Everything runs on loopback.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import av
import av.error
import numpy as np
import pytest

from tests.media import decode_i420_frames, frame_to_i420, make_h264_clip
from tests.rtsp import rtsp_server, with_credentials

# 25 fps keeps each stream short: the server sends in real time.
FPS = 25


def read_frames(url: str, count: int) -> list[np.ndarray]:
    """Decode up to `count` frames from an RTSP URL (fewer if the stream ends)."""
    frames: list[np.ndarray] = []
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5, 5)) as container:
        for frame in container.decode(video=0):
            frames.append(frame_to_i420(frame))
            if len(frames) == count:
                break
    return frames


def assert_same_frames(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want), f"got {len(got)} frames, want {len(want)}"
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape, f"frame {index}: shape {g.shape} != {w.shape}"
        assert np.array_equal(g, w), f"frame {index} differs from the reference decode"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Two keyframes in the middle, so the comparison crosses GOP boundaries.
    return make_h264_clip(tmp_path_factory.mktemp("media") / "clip.mp4", fps=FPS, frames=30, gop=10)


def test_serves_the_file_bit_exact_from_the_first_frame(clip: Path) -> None:
    # No frame is lost at the start: the client's own pipeline is built on DESCRIBE
    # and sends nothing before PLAY, over the same TCP connection. So the comparison
    # is strict, from frame 0, with no alignment by content.
    reference = decode_i420_frames(clip)
    with rtsp_server(file=clip) as url:
        got = read_frames(url, len(reference) + 5)  # asks for more: the stream must end
    assert_same_frames(got, reference)


def test_every_client_starts_at_the_beginning(clip: Path) -> None:
    reference = decode_i420_frames(clip)
    with (
        rtsp_server(file=clip) as url,
        av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5, 5)) as first,
    ):
        frames = first.decode(video=0)
        for _ in range(5):
            next(frames)
        # While the first client is mid-stream, a second one still gets frame 0 on.
        second = read_frames(url, 3)
    assert_same_frames(second, reference[:3])


def test_loop_repeats_the_file_without_reencoding(tmp_path: Path) -> None:
    clip = make_h264_clip(tmp_path / "short.mp4", fps=FPS, frames=10, gop=5)
    reference = decode_i420_frames(clip)
    with rtsp_server(file=clip, loop=True) as url:
        got = read_frames(url, 25)
    # Same bytes each pass, so the decoder makes the same pictures each pass.
    assert_same_frames(got, [reference[i % len(reference)] for i in range(25)])


def test_loop_keeps_time_running_evenly_pass_after_pass(tmp_path: Path) -> None:
    """Every pass follows the last without a gap: pts (and so the server's pacing) advance by
    one frame each frame, on the third pass and later too (a scale benchmark loops for minutes)."""
    clip = make_h264_clip(tmp_path / "short.mp4", fps=FPS, frames=5, gop=5)
    times = []
    with rtsp_server(file=clip, loop=True) as url, av.open(url, options={"rtsp_transport": "tcp"}) as stream:
        for frame in stream.decode(video=0):
            times.append(frame.time)
            if len(times) == 22:  # four passes and two frames
                break
    steps = np.diff(np.array(times[1:], dtype=float))  # FFmpeg gives the first frame no pts
    assert np.allclose(steps, 1 / FPS, atol=2e-3), f"pts steps {steps.round(3).tolist()}"


@pytest.mark.parametrize("method", ["digest", "basic"])
def test_auth_refuses_a_wrong_password_and_admits_the_right_one(method: str) -> None:
    size = (320, 240)
    with rtsp_server(pattern=True, size=size, fps=FPS, user="cam", password="s3cret", auth=method) as url:
        with pytest.raises(av.error.HTTPUnauthorizedError):
            read_frames(with_credentials(url, "cam", "wrong"), 1)
        with pytest.raises(av.error.HTTPUnauthorizedError):
            read_frames(url, 1)  # no credentials at all
        got = read_frames(with_credentials(url, "cam", "s3cret"), 5)
    assert len(got) == 5
    assert all(frame.shape == (size[1] * 3 // 2, size[0]) for frame in got)
    assert not np.array_equal(got[0], got[-1]), "the live pattern should move"


def test_server_is_gone_after_the_block(clip: Path) -> None:
    with rtsp_server(file=clip) as url:
        address = urlsplit(url)
        assert address.hostname == "127.0.0.1"
        socket.create_connection((address.hostname, address.port), timeout=2).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address.hostname, address.port), timeout=2).close()

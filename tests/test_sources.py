"""File and RTSP sources decode real H.264, frame for frame, against a reference decode."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.media import decode_i420_frames, make_h264_clip, make_mjpeg_clip
from tests.rtsp import rtsp_server, with_credentials
from zstream.errors import SourceError
from zstream.sources.base import AdmitAll, DecodedFrame, Decoding
from zstream.sources.file import FileSource
from zstream.sources.rtsp import RtspSource


def i420(frame: DecodedFrame) -> bytes:
    return b"".join(np.ascontiguousarray(plane).tobytes() for plane in (frame.y, frame.u, frame.v))


def take(
    source: FileSource | RtspSource, count: int, timeout: float = 30
) -> list[tuple[float | None, bytes]]:
    """Open, read `count` frames (copied: planes are only valid until the next frame), close."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    frames = []
    try:
        source.open()
        for frame in source.frames(stop, AdmitAll()):
            frames.append((frame.pts, i420(frame)))
            if len(frames) == count:
                break
    finally:
        timer.cancel()
        source.close()
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_h264_clip(
        tmp_path_factory.mktemp("media") / "clip.mp4", width=320, height=240, fps=25, frames=20, gop=10
    )


def test_file_source_yields_every_frame_exactly(clip: Path) -> None:
    reference = decode_i420_frames(clip)
    frames = take(FileSource(str(clip), realtime=False), 100)
    assert len(frames) == 20
    assert [data for _, data in frames] == [r.tobytes() for r in reference]
    assert [pts for pts, _ in frames] == pytest.approx([i / 25 for i in range(20)])


def test_looping_file_keeps_pts_increasing(clip: Path) -> None:
    reference = decode_i420_frames(clip)
    frames = take(FileSource(str(clip), loop=True, realtime=False), 50)
    assert [data for _, data in frames] == [reference[i % 20].tobytes() for i in range(50)]
    assert np.allclose(np.diff([pts for pts, _ in frames]), 1 / 25)


def test_realtime_file_is_paced_by_its_timestamps(clip: Path) -> None:
    started = time.monotonic()
    frames = take(FileSource(str(clip), realtime=True), 20)
    elapsed = time.monotonic() - started
    assert len(frames) == 20
    assert 19 / 25 * 0.9 <= elapsed < 19 / 25 * 5  # loose above: CI machines are noisy


def test_unreadable_file_is_a_source_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(SourceError, match="cannot open"):
        FileSource(str(junk)).open()


def test_rtsp_source_decodes_the_served_stream_bit_identically(clip: Path) -> None:
    reference = [r.tobytes() for r in decode_i420_frames(clip)]
    with rtsp_server(file=clip) as url:
        frames = take(RtspSource(url, open_timeout_s=10, read_timeout_s=10), 20)
    assert [data for _, data in frames] == reference


def test_rtsp_over_udp_decodes_bit_identically_and_a_tcp_only_server_refuses_it(clip: Path) -> None:
    reference = [r.tobytes() for r in decode_i420_frames(clip)]
    with rtsp_server(file=clip, transport="udp", loop=True) as url:  # looped: no end-of-stream cut
        frames = take(RtspSource(url, transport="udp"), 20)
    assert [data for _, data in frames] == reference
    with rtsp_server(file=clip, transport="tcp") as url, pytest.raises(SourceError) as caught:
        RtspSource(url, transport="udp", open_timeout_s=5).open()
    assert url in str(caught.value)


def test_rtsp_wrong_password_is_refused_and_masked(clip: Path) -> None:
    with rtsp_server(file=clip, user="admin", password="right") as url:
        bad = with_credentials(url, "admin", "wrong-pw")
        with pytest.raises(SourceError) as caught:
            RtspSource(bad, open_timeout_s=5, read_timeout_s=5).open()
        assert "wrong-pw" not in str(caught.value) and "admin:****@" in str(caught.value)
        frames = take(RtspSource(with_credentials(url, "admin", "right")), 5)
    assert len(frames) == 5


def test_rtsp_nobody_listening_is_a_prompt_source_error() -> None:
    started = time.monotonic()
    with pytest.raises(SourceError, match=re.escape("cannot open rtsp://127.0.0.1:9/x")):
        RtspSource("rtsp://127.0.0.1:9/x", open_timeout_s=3, read_timeout_s=3).open()
    assert time.monotonic() - started < 10


def test_rtsp_end_of_stream_is_an_error_so_the_camera_reconnects(clip: Path) -> None:
    with rtsp_server(file=clip) as url:
        source = RtspSource(url)
        source.open()
        stop = threading.Event()
        with pytest.raises(SourceError, match="ended the stream"):
            for _ in source.frames(stop, AdmitAll()):
                pass
        source.close()


def test_keyframes_only_decodes_just_the_key_frames(clip: Path) -> None:
    reference = decode_i420_frames(clip)  # 20 frames, a key frame every 10
    frames = take(FileSource(str(clip), realtime=False, decoding=Decoding(keyframes_only=True)), 100)
    assert [data for _, data in frames] == [reference[0].tobytes(), reference[10].tobytes()]
    assert [pts for pts, _ in frames] == pytest.approx([0.0, 10 / 25])


class EveryNth(AdmitAll):
    """A gate admitting frames 0, n, 2n... of what it is asked about."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def admit(self, pts: float | None) -> bool:
        self.seen += 1
        return (self.seen - 1) % self.n == 0


@pytest.mark.parametrize(("n", "decoded_the_junk"), [(3, False), (2, True)])
def test_an_intra_only_stream_skips_decoding_what_the_fps_cap_refuses(
    tmp_path: Path, n: int, decoded_the_junk: bool
) -> None:
    # Packet 4 is junk: decoding it is the only way to count a corrupt packet. Admitting every
    # 3rd frame refuses packet 4, so it must never reach the decoder; every 2nd admits it.
    clip = make_mjpeg_clip(tmp_path / "cam.mkv", frames=12, garbage_at=4)
    gate = EveryNth(n)
    source = FileSource(str(clip), realtime=False)
    source.open()
    try:
        delivered = [(frame.pts, int(frame.y[0, 0])) for frame in source.frames(threading.Event(), gate)]
    finally:
        source.close()
    expected = [i for i in range(0, 12, n) if i != 4]
    assert gate.seen == 12  # the source still reports every frame it had (fps in)
    assert [round(pts * 10) for pts, _ in delivered] == expected
    assert [level for _, level in delivered] == sorted(
        {level for _, level in delivered}
    )  # distinct, in order
    assert gate.corrupt_packets == (1 if decoded_the_junk else 0)


def test_skip_loop_filter_skips_deblocking_and_changes_pictures_only_slightly(clip: Path) -> None:
    def lumas(skip: bool) -> list[np.ndarray]:
        frames = take(FileSource(str(clip), realtime=False, decoding=Decoding(skip_loop_filter=skip)), 100)
        return [np.frombuffer(data, np.uint8).astype(np.float32) for _, data in frames]

    full, skipped = lumas(False), lumas(True)
    assert len(full) == len(skipped) > 0
    errors = [float(np.mean((a - b) ** 2)) for a, b in zip(full, skipped, strict=True)]
    assert max(errors) > 0, "the option had no effect (FFmpeg ignores an option name it does not know)"
    assert min(10 * np.log10(255**2 / e) for e in errors if e) > 30


def test_a_cameras_decoding_options_reach_its_source(tmp_path: Path, clip: Path) -> None:
    from zstream.capture import open_source
    from zstream.topology import parse_topology

    cameras = [
        {"id": "a", "url": str(clip), "skip_loop_filter": True, "keyframes_only": True, "decoder_threads": 2}
    ]
    topology = parse_topology({"run_dir": str(tmp_path), "cameras": cameras}, base_dir=tmp_path)
    assert open_source(topology.cameras[0], topology).decoding == Decoding(2, True, True)


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_a_file_resumes_right_after_the_frame_it_was_at_even_without_an_index(
    tmp_path: Path, suffix: str
) -> None:
    """MPEG-TS has no index: a seek there may land on the next key frame, past the frames wanted."""
    long_gop = make_h264_clip(tmp_path / f"long{suffix}", width=160, height=120, fps=25, frames=150, gop=100)
    every = take(FileSource(str(long_gop), realtime=False), 200)
    times = [pts for pts, _ in every]
    for after in (10, 60, 120):
        source = FileSource(str(long_gop), realtime=False)
        source.resume_after(times[after], times[after])
        resumed = take(source, 200)
        assert resumed == every[after + 1 :], f"resumed after frame {after}: {len(resumed)} frames"

"""Corrupt input through a real `zstream up`: truncated and overwritten files, a server sending
garbage instead of RTSP, MJPEG with garbage parts, a camera that changes codec mid-stream.

Each time the corrupt camera shares its capture process with a healthy synthetic camera: the bad
one reports its trouble (corrupt packets, its state's reason, reconnects), the capture worker is
never restarted, and the healthy camera delivers every frame, in order, without a gap. What the
bad camera delivers is checked against an independent decode of what was sent: a frame that
reaches Redis is one the stream really holds, never a torn mix of two. Loopback only; every
server is stopped at the end and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import redis

from tests.conftest import Pipeline, topology_text, wait_until
from tests.media import _picture, decode_i420_frames, frame_to_i420, make_h264_clip
from tests.test_pipeline import assert_clean_exit, assert_in_order, count_per_camera, frames_by_camera
from zstream.core.wire import FrameMeta
from zstream.sources.synthetic import expected_frame

SYNTH = "synthetic://traffic?size=320x240&fps=25"
# One capture worker: the corrupt camera and the healthy one run in the same process.
CAPTURE = (
    "[capture]\nworkers = 1\nring_slots = 16\nqueue_depth = 6\nreconnect_initial_s = 0.2\n"
    "reconnect_max_s = 1\nopen_timeout_s = 2\nread_timeout_s = 2\nstall_timeout_s = 2"
)
FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
Frames = list[tuple[FrameMeta, bytes]]


def start(pipeline: Callable[[str], Pipeline], run_dir: Path, streams: tuple[str, str], cameras: list) -> Any:
    """`zstream up` with the healthy camera "ok" first; (pipeline, pid of its capture worker)."""
    running = pipeline(
        topology_text(run_dir, streams, [{"id": "ok", "url": SYNTH}, *cameras], capture=CAPTURE)
    )
    pid = wait_until(lambda: running.worker_pids().get("capture-0"), 30, message="the capture worker")
    return running, pid


def finish(
    running: Pipeline, pid: int, redis_client: redis.Redis, streams: tuple[str, str]
) -> tuple[dict[str, Frames], dict[str, Any]]:
    """Check the capture worker survived and the healthy camera is untouched; stop cleanly.
    Returns the frames in Redis by camera and the last status."""
    wait_until(lambda: count_per_camera(redis_client, streams[0], 40, ["ok"]), 60, message="frames of 'ok'")
    status = running.status()
    worker = status["workers"]["capture-0"]
    assert (worker["pid"], worker["restarts"]) == (pid, 0), f"the capture worker was restarted: {worker}"
    assert_clean_exit(running)  # exit 0, nothing left behind, no traceback in the log
    assert "unexpected error" not in running.log and "exited on signal" not in running.log, running.log
    found = frames_by_camera(redis_client, streams[0])
    healthy = found["ok"]
    assert [meta.seq for meta, _ in healthy] == list(range(len(healthy))), "the healthy camera lost frames"
    for meta, data in healthy:
        assert data == expected_frame(SYNTH, "ok", meta.seq).tobytes(), f"'ok' frame {meta.seq} differs"
    assert status["cameras"]["ok"]["dropped"] == {} and status["cameras"]["ok"]["reconnects"] == 0
    return found, status


def independent_decode(path: Path) -> list[bytes]:
    """Every frame FFmpeg makes of a (corrupt) file, skipping the packets it rejects, as the
    pipeline's sources do: what a frame delivered from that file must be, bit for bit. One
    decoder thread, as the cameras here have: how many frames a frame-threaded decoder makes
    of a damaged stretch depends on timing."""
    frames = []
    with av.open(str(path)) as container:
        container.streams.video[0].codec_context.thread_count = 1
        for packet in container.demux(video=0):
            with contextlib.suppress(av.error.InvalidDataError):
                frames += [frame_to_i420(frame).tobytes() for frame in packet.decode()]
    return frames


def indices(frames: Frames, reference: list[bytes]) -> list[int | None]:
    """Which reference frame each delivered frame is (None: not one of them)."""
    index_of = {data: i for i, data in enumerate(reference)}
    return [index_of.get(data) for _, data in frames]


# -- files ---------------------------------------------------------------------------------------


def test_truncated_and_overwritten_files_deliver_what_decodes_and_the_worker_survives(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=320, height=240, fps=10, frames=40, gop=10)
    reference = [frame.tobytes() for frame in decode_i420_frames(clip)]
    data = clip.read_bytes()
    # Index first (faststart), then cut at 60%: the frames before the cut are whole.
    fast = tmp_path / "fast.mp4"
    subprocess.run(
        [*FFMPEG, "-i", str(clip), "-c", "copy", "-movflags", "+faststart", str(fast)], check=True, timeout=60
    )
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size * 6 // 10])
    # Index last (as recorders write it), cut: nothing to open the file by.
    headless = tmp_path / "headless.mp4"
    headless.write_bytes(data[: len(data) * 6 // 10])
    # Random bytes over the whole of frame 15 (its NAL length prefix too), in the GOP 10..19.
    with av.open(str(clip)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    position, size = packets[15]
    garbled = tmp_path / "garbled.mp4"
    noise = np.random.default_rng(15).integers(0, 256, size, dtype=np.uint8).tobytes()
    garbled.write_bytes(data[:position] + noise + data[position + size :])

    cameras = [
        {"id": "cut", "url": str(cut), "realtime": False},
        {"id": "headless", "url": str(headless), "realtime": False},
        {"id": "garbled", "url": str(garbled), "realtime": False},
    ]
    running, pid = start(pipeline, run_dir, streams, cameras)
    wait_until(lambda: running.camera("cut")["state"] == "ended", 60, message="'cut' ended")
    wait_until(lambda: running.camera("garbled")["state"] == "ended", 60, message="'garbled' ended")
    headless_state = wait_until(
        lambda: (running.camera("headless").get("reconnects") or 0) >= 2 and running.camera("headless"),
        30,
        message="'headless' retried",
    )
    found, status = finish(running, pid, redis_client, streams)

    # Truncated: the whole frames before the cut, bit for bit; the cut-off last packet is skipped.
    delivered = found["cut"]
    assert len(delivered) >= 20 and indices(delivered, reference) == list(range(len(delivered)))
    assert [data for _, data in delivered] == independent_decode(cut)
    assert [meta.seq for meta, _ in delivered] == list(range(len(delivered)))
    assert status["cameras"]["cut"]["corrupt_packets"] >= 1

    # Unopenable: the camera says why and keeps retrying; nothing is delivered.
    assert headless_state["state"] in ("reconnecting", "failed", "connecting")
    assert "Invalid data found when processing input" in running.log
    assert any("cannot open" in line and "headless.mp4" in line for line in running.log.splitlines())
    assert "headless" not in found

    # Overwritten: the corrupt packet is counted and skipped; the frames that depend on it are
    # what the decoder conceals them to; the frames before it and from the next key frame on
    # are the file's, bit for bit.
    delivered = found["garbled"]
    assert_in_order(delivered)
    at = indices(delivered, reference)
    assert at[:15] == list(range(15)) and at[-20:] == list(range(20, 40)), at
    assert len(delivered) - 35 <= 4  # frames 16..19 at most: the rest of the damaged GOP
    assert [data for _, data in delivered] == independent_decode(garbled)  # concealed ones too
    assert status["cameras"]["garbled"]["corrupt_packets"] >= 1


# -- network servers sending garbage --------------------------------------------------------------


@contextmanager
def garbage_tcp_server() -> Iterator[tuple[int, list[int]]]:
    """A TCP server on 127.0.0.1 that answers anything with random bytes, then hangs up.
    Yields (port, a list growing by one per connection)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    connections: list[int] = []
    closing = threading.Event()
    rng = np.random.default_rng(4)

    def serve() -> None:
        while not closing.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connections.append(1)
            with conn:
                try:
                    conn.settimeout(2)
                    conn.recv(4096)  # the client's OPTIONS / DESCRIBE
                    for _ in range(16):
                        conn.sendall(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], connections
    finally:
        closing.set()
        thread.join(5)
        listener.close()


def test_a_server_sending_garbage_to_an_rtsp_camera_is_retried_with_a_clear_reason(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    with garbage_tcp_server() as (port, connections):
        url = f"rtsp://admin:hunter2@127.0.0.1:{port}/stream"
        running, pid = start(pipeline, run_dir, streams, [{"id": "liar", "url": url}])
        state = wait_until(
            lambda: (running.camera("liar").get("reconnects") or 0) >= 2 and running.camera("liar"),
            30,
            message="'liar' retried",
        )
        assert len(connections) >= 2
        assert state["state"] in ("reconnecting", "connecting", "failed")
        found, status = finish(running, pid, redis_client, streams)
    said = [line for line in running.log.splitlines() if "camera liar" in line and "cannot open" in line]
    assert said and f"rtsp://admin:****@127.0.0.1:{port}/stream" in said[0], running.log
    assert "Invalid data found when processing input" in said[0]
    assert "hunter2" not in running.log
    assert "liar" not in found and status["cameras"]["liar"]["captured"] == 0


def jpeg_of(index: int) -> bytes:
    """A traffic picture (passes the quality checks), different for every index."""
    picture = cv2.cvtColor(expected_frame(SYNTH, "mjpeg", index), cv2.COLOR_YUV2BGR_I420)
    return cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def decoded_jpeg(jpeg: bytes) -> bytes:
    """An independent decode of one JPEG, by the same FFmpeg decoder the pipeline uses."""
    (frame,) = av.CodecContext.create("mjpeg", "r").decode(av.Packet(jpeg))
    return frame_to_i420(frame).tobytes()


@contextmanager
def http_server(routes: dict[str, Callable[[Any, threading.Event], None]]) -> Iterator[tuple[str, dict]]:
    """A threaded HTTP server on 127.0.0.1 whose GET `path` runs routes[path](wfile, closing);
    yields (base URL, connections per path)."""
    connections: dict[str, int] = {}
    closing = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            connections[self.path] = connections.get(self.path, 0) + 1
            with contextlib.suppress(OSError):  # the camera hung up
                route(self, closing)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", connections
    finally:
        closing.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def mjpeg_route(parts: list[bytes], tail: bytes = b"") -> Callable[[Any, threading.Event], None]:
    """multipart/x-mixed-replace of `parts` (each labelled image/jpeg, whatever it holds) at 20 per
    second, then `tail` raw, then the connection ends (the camera reconnects)."""

    def route(handler: Any, closing: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.end_headers()
        for part in parts:
            if closing.wait(0.05):
                return
            head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(part)}\r\n\r\n"
            handler.wfile.write(head.encode() + part + b"\r\n")
            handler.wfile.flush()
        handler.wfile.write(tail)

    return route


def test_mjpeg_garbage_parts_are_counted_and_skipped_and_whole_pictures_still_delivered(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    rng = np.random.default_rng(8)
    junk = [rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() for _ in range(40)]
    pictures = [jpeg_of(i) for i in range(6)]
    reference = [decoded_jpeg(jpeg) for jpeg in pictures]
    cut = pictures[2][: len(pictures[2]) // 2]  # a JPEG cut short: FFmpeg would fill it from an older one
    routes = {
        # Nothing but garbage labelled image/jpeg.
        "/garbage.mjpg": mjpeg_route(junk),
        # Whole pictures, garbage, a JPEG start followed by garbage, a cut JPEG, whole pictures again.
        "/mixed.mjpg": mjpeg_route([*pictures[:2], junk[0], b"\xff\xd8" + junk[1], cut, *pictures[2:]]),
        # Whole pictures, then raw garbage instead of the next part.
        "/tail.mjpg": mjpeg_route(pictures[:3], tail=b"".join(junk[:5])),
    }
    with http_server(routes) as (base, connections):
        cameras = [{"id": name, "url": f"{base}/{name}.mjpg"} for name in ("garbage", "mixed", "tail")]
        running, pid = start(pipeline, run_dir, streams, cameras)
        wait_until(
            lambda: all(connections.get(f"/{name}.mjpg", 0) >= 3 for name in ("garbage", "mixed", "tail")),
            40,
            message="every MJPEG camera reconnected twice",
        )
        found, status = finish(running, pid, redis_client, streams)
    cameras_status = status["cameras"]

    # All garbage: 25 corrupt parts and not one frame since the connection opened: not video at all,
    # so the camera fails (retried slowly, every reconnect_max_s), saying why.
    assert "garbage" not in found and cameras_status["garbage"]["corrupt_packets"] >= 25
    assert cameras_status["garbage"]["reconnects"] >= 2
    said = [line for line in running.log.splitlines() if "camera garbage" in line and ": failed:" in line]
    assert said and "none of its first 25 packets decoded (not a video FFmpeg can read)" in said[0]

    # Mixed: the garbage and the cut JPEG are counted, never delivered; every whole picture is.
    delivered = found["mixed"]
    at = indices(delivered, reference)
    assert None not in at, "a delivered frame is not one of the pictures sent (torn or garbage)"
    assert_in_order(delivered)
    assert set(at) == set(range(6))  # pictures after the garbage too
    assert cameras_status["mixed"]["corrupt_packets"] >= 3 * 2  # three bad parts per connection

    # Valid, then raw garbage: the pictures before it, then a reconnect with the demuxer's reason.
    delivered = found["tail"]
    at = indices(delivered, reference)
    assert None not in at and set(at) == {0, 1, 2}
    assert cameras_status["tail"]["reconnects"] >= 2
    assert any("camera tail" in line and "failed" in line for line in running.log.splitlines())


# -- a camera that changes codec ------------------------------------------------------------------


def make_ts(path: Path, codec: str, first: int, frames: int, fps: int = 10) -> Path:
    """An MPEG-TS of `frames` pictures numbered from `first`, key frame every 10, no B-frames."""
    rng = np.random.default_rng(first)
    if codec == "libx264":
        options = {"preset": "veryfast", "x264-params": "keyint=10:min-keyint=10:scenecut=0:bframes=0"}
    else:
        options = {"g": "10", "bf": "0"}
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 2_000_000
        for index in range(first, first + frames):
            frame = av.VideoFrame.from_ndarray(_picture(index, 320, 240, rng), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def paced(handler: Any, data: bytes, seconds: float, closing: threading.Event) -> bool:
    """Write `data` spread over `seconds`, as a live encoder would; False once closing."""
    chunk = 188 * 7
    pause = seconds * chunk / len(data)
    for offset in range(0, len(data), chunk):
        handler.wfile.write(data[offset : offset + chunk])
        if closing.wait(pause):
            return False
    return True


def test_a_camera_that_switches_codec_mid_stream_reconnects_and_decodes_the_new_one(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    h264 = make_ts(tmp_path / "h264.ts", "libx264", first=0, frames=80)  # longer than FFmpeg's probe
    mpeg4 = make_ts(tmp_path / "mpeg4.ts", "mpeg4", first=100, frames=20)
    before = [frame.tobytes() for frame in decode_i420_frames(h264)]
    after = [frame.tobytes() for frame in decode_i420_frames(mpeg4)]
    assert len(before) == 80 and len(after) == 20
    # What FFmpeg makes of the switch itself, decoded independently: the H.264 decoder, fed
    # MPEG-4 packets, rejects most but may make a frame of one (garbage, yet FFmpeg does not flag
    # it, so a source cannot tell): a frame delivered from that session must be one of these.
    switched = tmp_path / "switched.ts"
    switched.write_bytes(h264.read_bytes() + mpeg4.read_bytes())
    first_session = independent_decode(switched)
    served = {"count": 0}

    def camera(handler: Any, closing: threading.Event) -> None:
        served["count"] += 1
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp2t")
        handler.end_headers()
        if served["count"] == 1:
            # The first session: H.264, then (same PID, a new PMT) MPEG-4 part 2 for as long as
            # the camera listens: a camera that never drops the connection by itself.
            handler.wfile.write(h264.read_bytes())
            while paced(handler, mpeg4.read_bytes(), 2.0, closing):
                pass
        else:  # reconnected: the camera now speaks MPEG-4 from the start
            paced(handler, mpeg4.read_bytes(), 2.0, closing)

    with http_server({"/cam.ts": camera}) as (base, connections):
        cameras = [{"id": "switch", "url": f"{base}/cam.ts", "drop_policy": "wait", "ring_slots": 32}]
        running, pid = start(pipeline, run_dir, streams, cameras)
        wait_until(
            lambda: (
                set(after) <= {d for _, d in frames_by_camera(redis_client, streams[0]).get("switch", [])}
            ),
            40,
            message="the 20 MPEG-4 frames from 'switch' after it reconnected",
        )
        found, status = finish(running, pid, redis_client, streams)
    delivered = found["switch"]
    assert_in_order(delivered)
    first, second = indices(delivered, first_session), indices(delivered, after)
    # Every delivered frame is one an independent decode gives: of the switching stream, or of
    # the MPEG-4 one the camera sends after it reconnected.
    assert all(a is not None or b is not None for a, b in zip(first, second, strict=True)), (first, second)
    session = [a for a, b in zip(first, second, strict=True) if b is None]
    assert session == list(range(len(session))) and len(session) >= 75  # the H.264 session, in order
    assert indices(delivered[:75], before) == list(range(75))  # ... and the H.264 pictures it holds
    assert {b for b in second if b is not None} == set(range(20))  # the MPEG-4 session, whole
    assert status["cameras"]["switch"]["corrupt_packets"] >= 1
    assert status["cameras"]["switch"]["reconnects"] >= 1 and connections["/cam.ts"] >= 2
    assert "(did the camera change codec?)" in running.log


def test_a_camera_whose_file_is_not_video_fails_with_what_is_wrong(
    pipeline, run_dir: Path, tmp_path: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    """Random bytes and text are refusals (`failed`, slow retry), not network trouble (`reconnecting`)."""
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(3).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.txt"
    text.write_text("".join(f"camera notes, line {i}\n" for i in range(200)))
    named_as_video = tmp_path / "noise.mp4"
    named_as_video.write_bytes(noise.read_bytes())
    cameras = [
        {"id": p.stem + p.suffix.replace(".", "-"), "url": str(p)} for p in (noise, text, named_as_video)
    ]
    running, pid = start(pipeline, run_dir, streams, cameras)
    for camera in cameras:
        state = wait_until(
            lambda c=camera["id"]: running.camera(c)["state"] == "failed" and running.camera(c),
            20,
            message=f"{camera['id']} failed",
        )
        assert "not video" in state["detail"] or "not a video" in state["detail"], state
    found, _ = finish(running, pid, redis_client, streams)
    assert set(found) == {"ok"}

"""zmq:// cameras against the real imagezmq ImageSender (REQ/REP and PUB/SUB), a CURVE client,
and a hostile sender speaking raw ZeroMQ: garbage parts, lying headers, huge frames."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import imagezmq
import numpy as np
import pytest
import zmq
import zmq.auth

from tests.conftest import wait_until
from tests.test_http_sources import free_port, psnr
from tests.test_topology import problems_of
from zstream.errors import SourceError
from zstream.security import curve_client, make_keys
from zstream.sources.base import AdmitAll, DecodedFrame
from zstream.sources.synthetic import expected_frame
from zstream.sources.zmq_hub import ZmqSource, message_limit, parse_zmq_url
from zstream.topology import initial_placement, load_topology

SCENE = "synthetic://traffic?size=320x240"
MAX_SIZE = (640, 480)


def scene_bgr(index: int) -> np.ndarray:
    return cv2.cvtColor(expected_frame(SCENE, "pusher", index), cv2.COLOR_YUV2BGR_I420)


def i420(frame: DecodedFrame) -> bytes:
    return b"".join(np.ascontiguousarray(p).tobytes() for p in (frame.y, frame.u, frame.v))


class Camera:
    """A ZmqSource read by its own thread, as the capture worker reads it."""

    def __init__(self, url: str, camera_id: str, **options: object) -> None:
        options.setdefault("message_limit", message_limit([MAX_SIZE]))
        self.source = ZmqSource(url, camera_id, max_size=MAX_SIZE, **options)  # type: ignore[arg-type]
        self.gate = AdmitAll()
        self.frames: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.error: Exception | None = None

    def _read(self) -> None:
        try:
            for frame in self.source.frames(self.stop, self.gate):
                assert frame.pts is None  # imagezmq sends no timestamp: arrival time is used
                self.frames.append(i420(frame))
        except Exception as exc:
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.source.close()


@contextmanager
def cameras(*specs: tuple[str, str], **options: object) -> Iterator[list[Camera]]:
    opened = [Camera(url, camera_id, **options) for url, camera_id in specs]
    try:
        for camera in opened:
            camera.source.open()
            camera.thread.start()
        yield opened
    finally:
        for camera in opened:
            camera.close()


def test_real_imagezmq_raw_and_jpeg_frames_arrive_as_sent_and_each_is_answered() -> None:
    port = free_port()
    with cameras((f"zmq://127.0.0.1:{port}", "pusher")) as (camera,):
        sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
        try:
            for index in range(3):
                assert sender.send_image("pusher", scene_bgr(index)) == b"OK"
            for index in range(3, 6):
                jpeg = cv2.imencode(".jpg", scene_bgr(index), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
                assert sender.send_jpg("pusher", jpeg) == b"OK"
            gray = cv2.cvtColor(scene_bgr(6), cv2.COLOR_BGR2GRAY)
            assert sender.send_image("pusher", gray) == b"OK"
        finally:
            sender.close()
        wait_until(lambda: len(camera.frames) == 7, 10, message="7 frames")
    for index in range(3):  # raw: exactly OpenCV's BGR -> I420 of what was sent
        expected = cv2.cvtColor(scene_bgr(index), cv2.COLOR_BGR2YUV_I420).tobytes()
        assert camera.frames[index] == expected
    for index in range(3, 6):  # JPEG: the same picture, within JPEG's loss
        assert psnr(camera.frames[index], expected_frame(SCENE, "pusher", index).tobytes()) > 30
    assert camera.frames[6][: 320 * 240] == gray.tobytes() and set(camera.frames[6][320 * 240 :]) == {128}
    assert camera.gate.seen == 7 and camera.gate.rejected == {}


def test_one_url_serves_several_senders_by_name_and_refuses_unknown_names() -> None:
    port = free_port()
    url = f"zmq://127.0.0.1:{port}"
    with cameras((url, "north"), (f"{url}?name=pi-south", "south")) as (north, south):
        senders = [imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}") for _ in range(3)]
        try:
            assert senders[0].send_image("north", scene_bgr(0)) == b"OK"
            assert senders[1].send_image("pi-south", scene_bgr(1)) == b"OK"
            assert senders[1].send_image("south", scene_bgr(2)).startswith(b"ERROR unknown_sender")
            assert senders[2].send_image("intruder", scene_bgr(3)).startswith(b"ERROR unknown_sender")
        finally:
            for sender in senders:
                sender.close()
        wait_until(lambda: north.frames and south.frames, 10, message="a frame each")
    assert north.frames == [cv2.cvtColor(scene_bgr(0), cv2.COLOR_BGR2YUV_I420).tobytes()]
    assert south.frames == [cv2.cvtColor(scene_bgr(1), cv2.COLOR_BGR2YUV_I420).tobytes()]
    # Unknown names count on the url's first camera; nothing else was refused.
    assert north.gate.rejected == {"unknown_sender": 2} and south.gate.rejected == {}


def hostile_messages() -> list[tuple[list[bytes], str]]:
    frame = scene_bgr(0)
    header = {"msg": "pusher", "dtype": "uint8", "shape": [240, 320, 3]}

    def raw(fields: dict[str, object], payload: bytes) -> list[bytes]:
        return [json.dumps(fields).encode(), payload]

    huge = np.zeros((600, 800, 3), np.uint8)  # over max_size 640x480, under the message limit
    bomb = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    bomb = bomb.replace(b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10", b"\xff\xc0\x00\x11\x08\x75\x30\x75\x30")
    return [
        ([b"only one part"], "bad_message"),
        ([b"{}", b"a", b"b"], "bad_message"),
        ([b"\xff\xfe not json", b"x"], "bad_message"),
        ([b"[1, 2]", b"x"], "bad_message"),
        (raw({"msg": 7}, b"x"), "bad_message"),
        (raw({**header, "dtype": "float64"}, frame.tobytes()), "bad_shape"),
        (raw({**header, "shape": [240, 320, 4]}, frame.tobytes()), "bad_shape"),
        (raw({**header, "shape": [240, 320, 3, 1]}, frame.tobytes()), "bad_shape"),
        (raw({**header, "shape": [2**40, 2**40, 3]}, b"x"), "too_large"),
        (raw(header, frame.tobytes()[:-1]), "bad_shape"),
        (raw({**header, "shape": [239, 320, 3]}, frame[:239].tobytes()), "bad_shape"),
        (raw({**header, "shape": [600, 800, 3]}, huge.tobytes()), "too_large"),
        (raw({"msg": "pusher"}, b"\xff\xd8 garbage, not a JPEG"), "undecodable"),
        (raw({"msg": "pusher"}, bomb), "too_large"),
    ]


def test_hostile_input_is_answered_and_counted_and_the_camera_carries_on() -> None:
    port = free_port()
    context = zmq.Context()
    with cameras((f"zmq://127.0.0.1:{port}", "pusher")) as (camera,):
        hostile = context.socket(zmq.REQ)
        hostile.connect(f"tcp://127.0.0.1:{port}")
        expected: dict[str, int] = {}
        for parts, reason in hostile_messages():
            hostile.send_multipart(parts)
            assert hostile.poll(5000), f"no answer to a {reason} message"
            assert hostile.recv().startswith(f"ERROR {reason}:".encode()), reason
            expected[reason] = expected.get(reason, 0) + 1
        # Over twice the largest frame: ZeroMQ drops the connection unread; the hub lives on.
        hostile.send_multipart([b'{"msg": "pusher"}', bytes(message_limit([MAX_SIZE]) + 1)])
        assert not hostile.poll(500)
        hostile.close(linger=0)
        sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
        assert sender.send_image("pusher", scene_bgr(1)) == b"OK"
        sender.close()
        wait_until(lambda: camera.frames, 10, message="the honest frame")
    context.term()
    assert camera.gate.rejected == expected and camera.error is None
    assert camera.frames == [cv2.cvtColor(scene_bgr(1), cv2.COLOR_BGR2YUV_I420).tobytes()]


def test_a_publishing_sender_is_followed_with_pattern_sub() -> None:
    port = free_port()
    sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}", REQ_REP=False)  # binds
    try:
        with cameras((f"zmq://127.0.0.1:{port}?pattern=sub", "pusher")) as (camera,):

            def publish_until_received() -> bool:  # PUB drops what it sends before SUB joined
                sender.send_image("pusher", scene_bgr(0))
                return bool(camera.frames)

            wait_until(publish_until_received, 10, interval=0.05, message="a published frame")
    finally:
        sender.close()
    assert camera.frames[0] == cv2.cvtColor(scene_bgr(0), cv2.COLOR_BGR2YUV_I420).tobytes()


def test_with_curve_keys_only_allowed_clients_get_frames_in(tmp_path: Path) -> None:
    keys, stranger = tmp_path / "keys", tmp_path / "stranger"
    make_keys(keys)
    stranger.mkdir()
    zmq.auth.create_certificates(stranger, "client")
    shutil.copy(keys / "server.key", stranger / "server.key")
    port = free_port()
    context = imagezmq.imagezmq.SerializingContext()  # imagezmq's own wire format, with CURVE set
    with cameras((f"zmq://127.0.0.1:{port}", "pusher"), curve_keys=str(keys)) as (camera,):
        replies = []
        for client_keys in (keys, stranger, None):
            socket = context.socket(zmq.REQ)
            if client_keys is not None:
                curve_client(socket, client_keys)
            socket.connect(f"tcp://127.0.0.1:{port}")
            socket.send_array(scene_bgr(0), "pusher")
            wait_ms = 5000 if client_keys == keys else 1500  # the refused ones never get an answer
            replies.append(socket.recv() if socket.poll(wait_ms) else None)
            socket.close(linger=0)
    context.term()
    assert replies == [b"OK", None, None]
    assert len(camera.frames) == 1


def test_a_port_in_use_is_a_source_error_and_bad_urls_name_the_problem() -> None:
    port = free_port()
    with cameras((f"zmq://127.0.0.1:{port}", "first")):
        second = ZmqSource(f"zmq://127.0.0.1:{port}?pattern=sub", "other", max_size=MAX_SIZE, message_limit=1)
        second.open()  # SUB connects: no conflict with the bound REP
        second.close()
        with pytest.raises(SourceError, match="sender name 'first' is taken twice"):
            ZmqSource(f"zmq://127.0.0.1:{port}", "first", max_size=MAX_SIZE, message_limit=1).open()
    with socket_bound(port), pytest.raises(SourceError, match=f"tcp://127.0.0.1:{port}: Address"):
        ZmqSource(f"zmq://127.0.0.1:{port}", "cam", max_size=MAX_SIZE, message_limit=1).open()
    for url, problem in [
        ("zmq://127.0.0.1", "needs HOST:PORT"),
        ("zmq://127.0.0.1:0", "needs HOST:PORT"),
        ("zmq://127.0.0.1:99999", "not a valid zmq:// URL"),
        ("zmq://127.0.0.1:5555/path", "takes no path"),
        ("zmq://127.0.0.1:5555?colour=red", "query keys are name and pattern"),
        ("zmq://127.0.0.1:5555?name=a&name=b", "each once"),
        ("zmq://127.0.0.1:5555?pattern=push", "pattern='push' must be one of"),
        ("zmq://127.0.0.1:5555?name=", "name= is empty"),
    ]:
        with pytest.raises(SourceError, match=problem):
            parse_zmq_url(url)
    assert parse_zmq_url("zmq://[::1]:5555?name=pi").endpoint == "tcp://[::1]:5555"


@contextmanager
def socket_bound(port: int) -> Iterator[None]:
    context = zmq.Context()
    holder = context.socket(zmq.REP)
    holder.bind(f"tcp://127.0.0.1:{port}")
    try:
        yield
    finally:
        holder.close(linger=0)
        context.term()


def test_topology_checks_zmq_cameras_and_places_those_sharing_a_socket_together(tmp_path: Path) -> None:
    def cameras_toml(*pairs: tuple[str, str]) -> str:
        return "[capture]\nworkers = 3\n" + "".join(
            f'[[cameras]]\nid = "{camera_id}"\nurl = "{url}"\n' for camera_id, url in pairs
        )

    problems = problems_of(
        cameras_toml(
            ("a", "zmq://127.0.0.1:5555?name=pi"),
            ("b", "zmq://127.0.0.1:5555?name=pi"),
            ("c", "zmq://0.0.0.0:5556"),
            ("d", "zmq://127.0.0.1"),
        ),
        tmp_path,
    )
    assert [p.split(" is ")[0] for p in problems] == [
        "cameras[3].url: zmq://127.0.0.1: zmq:// needs HOST:PORT with a port from 1 to 65535",
        "cameras[1].url: sender name 'pi' on tcp://127.0.0.1:5555",
        "cameras[2].url: tcp://0.0.0.0:5556",
    ]
    assert "security.curve_keys" in problems[2]
    path = tmp_path / "ok.toml"
    path.write_text(
        cameras_toml(
            ("a", "zmq://127.0.0.1:5555"),
            ("s", "synthetic://traffic"),
            ("b", "zmq://127.0.0.1:5555?name=pi"),
            ("c", "zmq://127.0.0.1:5556"),
            ("d", "zmq://localhost:5555"),  # another host name: another socket
        )
    )
    topology = load_topology(path)
    placement = initial_placement(topology)
    assert placement.capture == {"a": 0, "s": 1, "b": 0, "c": 0, "d": 1}
    grown = placement.without("b").with_camera("b", topology)
    assert grown.capture["b"] == 0


def test_a_camera_thread_that_falls_behind_loses_its_oldest_frames_counted() -> None:
    port = free_port()
    camera = Camera(f"zmq://127.0.0.1:{port}", "pusher")
    camera.source.open()  # opened, but nothing reads yet: frames queue up in its inbox
    try:
        sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
        for index in range(7):
            assert sender.send_image("pusher", scene_bgr(index)) == b"OK"
        sender.close()
        camera.thread.start()
        wait_until(lambda: len(camera.frames) == 4, 10, message="the 4 newest frames")
    finally:
        camera.close()
    expected = [cv2.cvtColor(scene_bgr(i), cv2.COLOR_BGR2YUV_I420).tobytes() for i in range(3, 7)]
    assert camera.frames == expected and camera.gate.rejected == {"superseded": 3}

"""zmq:// cameras through `zstream up` and the real Redis: what imagezmq senders push is what
consumers read; hostile input is counted per camera by reason; a silent sender stalls its camera."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import imagezmq
import redis
import zmq

from tests.conftest import topology_text, wait_until
from tests.test_http_sources import free_port, psnr
from tests.test_pipeline import assert_clean_exit, assert_in_order, frames_by_camera
from tests.test_tap import receive, tap_endpoint
from tests.test_zmq_source import SCENE, hostile_messages, scene_bgr
from zstream.sources.synthetic import expected_frame
from zstream.tap_viewer import TapSubscriber


def test_pushed_frames_reach_redis_and_bad_input_and_silence_are_counted_not_fatal(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    port = free_port()
    url = f"zmq://127.0.0.1:{port}"
    cameras = [{"id": "pusher", "url": url, "max_size": "640x480"}, {"id": "edge", "url": f"{url}?name=pi-7"}]
    capture = "[capture]\nworkers = 2\nring_slots = 16\nqueue_depth = 6\nstall_timeout_s = 1"
    running = pipeline(topology_text(run_dir, streams, cameras, capture=capture))
    wait_until(lambda: running.camera("pusher")["state"] == "streaming", 30, message="the hub listening")
    subscriber = TapSubscriber(tap_endpoint(running), ["pusher"])
    time.sleep(0.5)  # the subscription reaches the tap
    sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
    for index in range(10):
        assert sender.send_image("pusher", scene_bgr(index)) == b"OK"
    tapped = receive(subscriber, 10, 20)  # the tap sees pushed frames like any camera's
    subscriber.close()
    assert [frame.seq for frame, _ in tapped] == list(range(10))
    for index in range(10, 20):
        jpeg = cv2.imencode(".jpg", scene_bgr(index), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        assert sender.send_jpg("pi-7", jpeg) == b"OK"
    wait_until(lambda: running.camera("pusher")["state"] == "stalled", 10, message="the silent sender stalls")
    send_hostile(port)
    assert sender.send_image("pusher", scene_bgr(20)) == b"OK"  # the camera took no harm
    sender.close()
    wait_until(
        lambda: len(frames_by_camera(redis_client, streams[0]).get("pusher", [])) == 11,
        30,
        message="11 frames",
    )
    expected = {}
    for _, reason in [*hostile_messages(), ([], "unknown_sender")]:
        expected[f"ingest:{reason}"] = expected.get(f"ingest:{reason}", 0) + 1
    wait_until(  # the status file follows the workers' reports by a moment
        lambda: (running.camera("pusher")["dropped"], running.camera("pusher")["received"]) == (expected, 11),
        10,
        message=f"received 11 and dropped {expected}",
    )
    assert running.camera("pusher")["state"] == "streaming"
    assert running.camera("edge")["state"] != "failed"
    assert_clean_exit(running)

    received = frames_by_camera(redis_client, streams[0])
    assert_in_order(received["pusher"])
    sent = [cv2.cvtColor(scene_bgr(i), cv2.COLOR_BGR2YUV_I420).tobytes() for i in [*range(10), 20]]
    assert [data for _, data in received["pusher"]] == sent
    assert len(received["edge"]) == 10
    for (meta, data), index in zip(received["edge"], range(10, 20), strict=True):
        assert (meta.width, meta.height) == (320, 240)
        assert psnr(data, expected_frame(SCENE, "pusher", index).tobytes()) > 30
    assert "pusher (zmq://127.0.0.1:" in running.log and ": stalled: no frame for" in running.log


def send_hostile(port: int) -> None:
    context = zmq.Context()
    hostile = context.socket(zmq.REQ)
    hostile.connect(f"tcp://127.0.0.1:{port}")
    for parts, _ in [*hostile_messages(), ([b'{"msg": "nobody"}', b"x"], "unknown_sender")]:
        hostile.send_multipart(parts)
        assert hostile.poll(5000) and hostile.recv().startswith(b"ERROR ")
    hostile.close(linger=0)
    context.term()

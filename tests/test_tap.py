"""The tap: every validated frame published per camera, never at the pipeline's expense.

Against a real `zstream up`: what a subscriber receives is checked against an independent
reference (the synthetic scene re-rendered) and against what reached Redis; the stuck-subscriber
test counts frames delivered to Redis, not timings.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest
import redis
import zmq

from tests.conftest import REPO, Pipeline, topology_text, wait_until
from zstream.core.wire import TapFrame, decode_batch_entry
from zstream.errors import WireError
from zstream.output import TAP_BURST_S, TAP_TIME_SHARE, TapInterest, TimeShare
from zstream.sources.synthetic import expected_frame
from zstream.stats import Counters
from zstream.tap import TapPublisher
from zstream.tap_viewer import TapSubscriber, run_tap

SYNTH = "synthetic://traffic?size=320x240&fps=25"
README = (REPO / "README.md").read_text()


def tap_section(payload: str, endpoint: str = "tcp://127.0.0.1:*", hwm: int = 100) -> str:
    return f'[tap]\nendpoint = "{endpoint}"\npayload = "{payload}"\nhwm = {hwm}'


def tap_endpoint(running: Pipeline) -> str:
    """The address the batcher bound (port * resolved), from RUN_DIR/tap.endpoint."""
    path = running.run_dir / "tap.endpoint"
    return wait_until(lambda: path.exists() and path.read_text().strip(), 30, message="RUN_DIR/tap.endpoint")


def receive(subscriber: TapSubscriber, n: int, timeout: float) -> list[tuple[TapFrame, bytes]]:
    frames: list[tuple[TapFrame, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(frames) < n and time.monotonic() < deadline:
        item = subscriber.receive(max(0.0, deadline - time.monotonic()))
        if item is not None:
            frames.append(item)
    assert len(frames) == n, f"{len(frames)} of {n} tap frames in {timeout}s"
    return frames


def redis_frames(client: redis.Redis, stream: str) -> dict[str, dict[int, tuple]]:
    """camera -> seq -> (meta, payload) of everything in the batch stream."""
    found: dict[str, dict[int, tuple]] = defaultdict(dict)
    for _, fields in client.xrange(stream):
        for meta, data in decode_batch_entry(fields)[1]:
            found[meta.camera][meta.seq] = (meta, data)
    return found


def saved_jpegs(folder: Path) -> list[np.ndarray]:
    images = [cv2.imread(str(path)) for path in sorted(folder.glob("*.jpg"))]
    assert all(image is not None for image in images), "a saved file does not decode as JPEG"
    return images


def stop_cleanly(running: Pipeline) -> None:
    assert running.stop() == 0, running.log
    assert "final: unaccounted 0 " in running.log, running.log  # tap drops are not Redis losses
    assert "Traceback" not in running.log, running.log
    assert not (running.run_dir / "tap.endpoint").exists()


def test_a_subscriber_gets_its_camera_only_in_order_and_whole_and_run_tap_saves_jpegs(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    cameras = [{"id": "cam-1", "url": SYNTH}, {"id": "cam-10", "url": SYNTH}]
    running = pipeline(topology_text(run_dir, streams, cameras, tap=tap_section("raw")))
    endpoint = tap_endpoint(running)
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", endpoint) and not endpoint.endswith(":*")

    # ZeroMQ's filter is a prefix: a plain SUB to "cam-1" gets cam-10 too; TapSubscriber does not.
    context = zmq.Context.instance()
    plain = context.socket(zmq.SUB)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(endpoint)
    plain.setsockopt(zmq.SUBSCRIBE, b"cam-1")
    with TapSubscriber(endpoint, ["cam-1"], rcvhwm=1000) as subscriber:
        tapped = receive(subscriber, 40, timeout=60)
    seen = set()
    deadline = time.monotonic() + 10
    while seen != {b"cam-1", b"cam-10"} and time.monotonic() < deadline:
        if plain.poll(500):
            seen.add(plain.recv_multipart()[0])
    plain.close()
    assert seen == {b"cam-1", b"cam-10"}

    assert {frame.camera for frame, _ in tapped} == {"cam-1"}
    seqs = [frame.seq for frame, _ in tapped]
    assert seqs == sorted(set(seqs)), f"out of order or duplicated: {seqs}"
    for frame, payload in tapped:
        assert (frame.width, frame.height, frame.payload, frame.pixel_format, frame.shape) == (
            320,
            240,
            "raw",
            "yuv420p",
            (360, 320),
        )
        assert frame.pts == pytest.approx(frame.seq / 25)
        assert {"sharpness", "brightness"} <= set(frame.metrics)
        assert payload == expected_frame(SYNTH, "cam-1", frame.seq).tobytes(), (
            f"tap frame {frame.seq} differs from the render"
        )

    # zstream tap --camera cam-1 --count 10 --save DIR: raw frames are encoded to JPEG files.
    out = io.StringIO()
    assert run_tap(endpoint, ["cam-1"], tmp_path / "saved", 10, out) == 0, out.getvalue()
    images = saved_jpegs(tmp_path / "saved" / "cam-1")
    assert len(images) == 10 and all(image.shape == (240, 320, 3) for image in images)
    assert not (tmp_path / "saved" / "cam-10").exists()
    assert re.search(r"^cam-1\s+[\d.]+\s+10\s", out.getvalue(), re.M), out.getvalue()

    stop_cleanly(running)
    in_redis = redis_frames(redis_client, streams[0])["cam-1"]
    for frame, payload in tapped:
        meta, data = in_redis[frame.seq]  # a tapped frame is a validated frame: it went to Redis
        assert payload == data and meta.capture_ts == frame.capture_ts


@pytest.mark.parametrize("payload", ["jpeg", "meta"])
def test_jpeg_and_meta_payloads(
    pipeline, run_dir: Path, streams: tuple[str, str], tmp_path: Path, payload: str
) -> None:
    cameras = [{"id": "cam-a", "url": SYNTH}]
    running = pipeline(topology_text(run_dir, streams, cameras, tap=tap_section(payload)))
    endpoint = tap_endpoint(running)
    with TapSubscriber(endpoint, ["cam-a"]) as subscriber:
        tapped = receive(subscriber, 10, timeout=60)
    out = io.StringIO()
    code = run_tap(endpoint, [], tmp_path / "saved", 5, out)
    if payload == "jpeg":
        for frame, data in tapped:
            assert (frame.payload, frame.pixel_format, frame.shape) == ("jpeg", "bgr24", (240, 320, 3))
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert image is not None and image.shape == (240, 320, 3)
        assert code == 0, out.getvalue()
        assert len(saved_jpegs(tmp_path / "saved" / "cam-a")) == 5
    else:
        assert all(data == b"" and frame.payload == "meta" for frame, data in tapped)
        assert all(frame.pixel_format is None and frame.shape is None for frame, _ in tapped)
        assert code == 2 and "metadata only" in out.getvalue()
        assert len(out.getvalue().strip().splitlines()) == 1, out.getvalue()
        out = io.StringIO()
        assert run_tap(endpoint, ["cam-a"], None, 5, out) == 0, out.getvalue()
    stop_cleanly(running)


def test_a_subscriber_that_never_reads_does_not_slow_the_pipeline_and_what_it_misses_is_counted(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    window_s, fps = 5.0, 25
    cameras = [{"id": "cam-a", "url": SYNTH}, {"id": "cam-b", "url": SYNTH}]
    running = pipeline(topology_text(run_dir, streams, cameras, tap=tap_section("raw", hwm=5)))
    endpoint = tap_endpoint(running)
    wait_until(
        lambda: all(running.camera(c["id"])["state"] == "streaming" for c in cameras), 60, message="streaming"
    )
    time.sleep(1.0)
    baseline = (time.time(), time.time() + window_s)
    time.sleep(window_s)

    # A subscriber of cam-a that never reads, with as little buffering on its side as possible.
    stuck = zmq.Context.instance().socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.setsockopt(zmq.RCVBUF, 8192)
    stuck.setsockopt(zmq.LINGER, 0)
    stuck.connect(endpoint)
    stuck.setsockopt(zmq.SUBSCRIBE, b"cam-a")
    try:
        wait_until(
            lambda: running.camera("cam-a").get("dropped", {}).get("tap:subscriber_full", 0) > 0,
            30,
            message="the tap shedding cam-a's frames",
        )
        # Meanwhile a subscriber of another camera, reading, gets that camera's frames.
        with TapSubscriber(endpoint, ["cam-b"], rcvhwm=1000) as reader:
            time.sleep(0.5)
            stuck_window = (time.time(), time.time() + window_s)
            read = []
            while time.time() < stuck_window[1] + 1.0:
                item = reader.receive(0.5)
                if item is not None:
                    read.append(item[0])
        time.sleep(1.0)  # the status after the window
        drops = {camera["id"]: running.camera(camera["id"]).get("dropped", {}) for camera in cameras}
    finally:
        stuck.close()

    stop_cleanly(running)
    found = redis_frames(redis_client, streams[0])
    expected = fps * window_s
    for camera in ("cam-a", "cam-b"):
        for start, end in (baseline, stuck_window):
            delivered = sum(start <= meta.capture_ts < end for meta, _ in found[camera].values())
            assert delivered >= 0.95 * expected, f"{camera}: {delivered} of ~{expected} frames reached Redis"
        assert not [r for r in drops[camera] if not r.startswith("tap:")], f"{camera} lost: {drops}"
    assert drops["cam-a"]["tap:subscriber_full"] >= 10
    assert drops["cam-b"] == {}  # its subscriber kept up: nothing shed
    read_b = [frame for frame in read if stuck_window[0] <= frame.capture_ts < stuck_window[1]]
    assert len(read_b) >= 0.9 * expected, f"cam-b's reader got {len(read_b)} of ~{expected} frames"


def tap_example() -> str:
    block = README.split("<!-- tap-example", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_readme_tap_example_runs_as_written(pipeline, run_dir: Path, streams: tuple[str, str]) -> None:
    example = tap_example()
    assert len(example.strip().splitlines()) <= 15
    assert 'connect("tcp://127.0.0.1:5591")' in example  # the default endpoint, as the README says
    cameras = [{"id": "cam-a", "url": SYNTH}]
    running = pipeline(
        topology_text(run_dir, streams, cameras, tap='[tap]\nendpoint = "tcp://127.0.0.1:5591"')
    )
    assert tap_endpoint(running) == "tcp://127.0.0.1:5591", running.log
    wait_until(lambda: running.camera("cam-a")["state"] == "streaming", 60, message="camera streaming")
    result = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, timeout=90, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 20
    assert all(re.fullmatch(r"cam-a \d+ \(240, 320, 3\) [\d.]+", line) for line in lines), lines[:3]
    stop_cleanly(running)


# ---- without a pipeline ---------------------------------------------------------------------


def test_run_tap_says_why_in_one_line_when_nothing_comes() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = io.StringIO()
    assert run_tap(f"tcp://127.0.0.1:{port}", ["cam-a"], None, None, out, wait_s=1.0) == 1
    assert len(out.getvalue().splitlines()) == 1 and "nothing answers" in out.getvalue()

    publisher = zmq.Context.instance().socket(zmq.XPUB)  # listening, but no frame of cam-a comes
    publisher.setsockopt(zmq.LINGER, 0)
    port = publisher.bind_to_random_port("tcp://127.0.0.1")
    try:
        out = io.StringIO()
        assert run_tap(f"tcp://127.0.0.1:{port}", ["cam-a"], None, 3, out, wait_s=1.0) == 1
        assert len(out.getvalue().splitlines()) == 1 and "no frame of camera cam-a" in out.getvalue()
    finally:
        publisher.close()

    out = io.StringIO()
    assert run_tap("not-an-endpoint", [], None, None, out, wait_s=1.0) == 2
    assert len(out.getvalue().splitlines()) == 1 and "not a ZeroMQ endpoint" in out.getvalue()


def test_the_publisher_knows_which_cameras_are_subscribed_and_tells_validation(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("zstream.output.INTEREST_CHECK_S", 0.0)
    context = zmq.Context.instance()
    xpub = context.socket(zmq.XPUB)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    tap = TapPublisher(xpub, "raw", Counters(), own_format="raw", run_dir=tmp_path)
    interest = TapInterest(tmp_path)
    subscribers = []
    try:
        assert not tap.wants("cam-1")
        for topic in (b"cam-1", b"cam-1", b"lane"):
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.connect(f"tcp://127.0.0.1:{port}")
            sub.setsockopt(zmq.SUBSCRIBE, topic)
            subscribers.append(sub)
        wait_until(lambda: tap.wants("lane-3"), 5, 0.02, message="subscriptions seen")
        assert tap.wants("cam-1") and tap.wants("cam-10") and not tap.wants("cam-2")
        # The validation workers, which make the tap's raw payloads, see the same subscriptions.
        assert interest.wants("lane-3") and interest.wants("cam-10") and not interest.wants("cam-2")
        subscribers.pop(0).close()  # cam-1 still has a subscriber
        time.sleep(0.3)
        assert tap.wants("cam-1")
        subscribers.pop(0).close()  # now it has none
        wait_until(lambda: not tap.wants("cam-1"), 5, 0.02, message="cam-1 unsubscribed")
        assert not interest.wants("cam-1")
        everything = context.socket(zmq.SUB)
        everything.setsockopt(zmq.LINGER, 0)
        everything.connect(f"tcp://127.0.0.1:{port}")
        everything.setsockopt(zmq.SUBSCRIBE, b"")
        subscribers.append(everything)
        wait_until(lambda: tap.wants("cam-2"), 5, 0.02, message='"" subscribes to every camera')
        assert interest.wants("cam-2")
    finally:
        for sub in subscribers:
            sub.close()
        tap.close()
    assert not interest.wants("cam-2"), "a stopped tap is watched by nobody"


def test_tap_header_round_trips_and_refuses_another_version() -> None:
    frame = TapFrame(
        "cam-1", 7, 0.28, 1.7e9, 1.7e9 + 0.01, 320, 240, "raw", "yuv420p", (360, 320), {"score": 0.9}
    )
    assert TapFrame.decode(frame.encode()) == frame
    plain = msgpack.unpackb(frame.encode())
    assert plain["v"] == 1 and plain["camera"] == "cam-1" and plain["shape"] == [360, 320]
    with pytest.raises(WireError, match="tap format 2"):
        TapFrame.decode(msgpack.packb({**plain, "v": 2}))
    assert TapFrame.decode(msgpack.packb({**plain, "new_key": 1})) == frame  # additions are compatible
    with pytest.raises(WireError, match="malformed"):
        TapFrame.decode(msgpack.packb({"v": 1, "camera": "cam-1"}))
    with pytest.raises(WireError, match="unknown tap payload"):
        TapFrame.decode(msgpack.packb({**plain, "payload": "png"}))


def test_the_taps_own_payloads_take_no_more_than_their_share_of_a_validation_worker() -> None:
    share = TimeShare()
    published = shed = 0
    started = time.monotonic()
    while time.monotonic() - started < 2.0:  # frames offered back to back for 2 s
        if share.allows():
            time.sleep(0.01)  # an expensive JPEG
            share.spent(0.01)
            published += 1
        else:
            shed += 1
    spent, budget = published * 0.01, TAP_BURST_S + TAP_TIME_SHARE * 2.0
    # Most frames were shed, to stay within the budget, and the budget was used.
    assert shed > published
    assert spent <= budget + 0.05, f"the tap took {spent:.2f} s of 2 s"
    assert spent >= 0.8 * budget

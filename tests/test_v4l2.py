"""V4L2 devices (/dev/videoN) through FFmpeg's real v4l2 demuxer.

A physical camera cannot exist on a CI machine (containers have no /dev/video*, and
v4l2loopback needs a kernel module), so the one test that needs a device runs where one
exists and says why it is skipped elsewhere. Everything else runs the real demuxer
against what is here: a node that is not a camera, a device that is not plugged in.
"""

from __future__ import annotations

import glob
import threading
from pathlib import Path

import pytest
import redis

from tests.conftest import Pipeline, topology_text, wait_until
from tests.test_pipeline import SYNTH, assert_clean_exit, count_per_camera
from zstream.errors import SourceError, SourceRejected
from zstream.sources.base import AdmitAll
from zstream.sources.v4l2 import V4l2Source

DEVICES = sorted(glob.glob("/dev/video[0-9]*"))
ABSENT = "/dev/video63"


@pytest.mark.skipif(
    not DEVICES,
    reason="no V4L2 device on this machine (containers have none; v4l2loopback needs a kernel module)",
)
def test_a_real_device_delivers_decoded_frames() -> None:
    source = V4l2Source(DEVICES[0], open_timeout_s=5, read_timeout_s=5)
    stop = threading.Event()
    timer = threading.Timer(15, stop.set)
    timer.start()
    try:
        source.open()
        frames = []
        for frame in source.frames(stop, AdmitAll()):
            frames.append((frame.width, frame.height, frame.y.mean()))
            if len(frames) == 5:
                break
    finally:
        timer.cancel()
        source.close()
    assert len(frames) == 5 and all(w >= 16 and h >= 16 for w, h, _ in frames)


def test_a_node_that_is_not_a_camera_is_refused_for_good() -> None:
    with pytest.raises(SourceRejected, match="/dev/null: not a V4L2 capture device"):
        V4l2Source("/dev/null", open_timeout_s=2).open()


def test_an_unplugged_device_is_retried_not_refused() -> None:
    with pytest.raises(SourceError) as caught:
        V4l2Source(ABSENT, open_timeout_s=2).open()
    assert not isinstance(caught.value, SourceRejected)
    assert f"{ABSENT}: no such device (unplugged?)" in str(caught.value)


def test_an_unplugged_usb_camera_reconnects_while_the_others_stream(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    cameras = [{"id": "road", "url": SYNTH}, {"id": "usb", "url": ABSENT}]
    capture = "[capture]\nworkers = 1\nreconnect_initial_s = 0.2\nreconnect_max_s = 1"
    running: Pipeline = pipeline(topology_text(run_dir, streams, cameras, capture=capture))
    wait_until(
        lambda: count_per_camera(redis_client, streams[0], 20, ["road"]), 60, message="frames of 'road'"
    )

    def retrying() -> dict | None:
        usb = running.camera("usb")
        return usb if usb["state"] == "reconnecting" and usb["reconnects"] >= 2 else None

    assert "no such device (unplugged?)" in wait_until(retrying, 20, message="'usb' retrying")["detail"]
    assert_clean_exit(running)

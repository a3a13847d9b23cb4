"""After a `kill -9` of any one worker, every frame is accounted for exactly, and a recording
is not replayed: frames in Redis + counted drops + skipped + lost = frames captured, per camera.

The clips carry their own frame index in their pixels (tests.media.read_mark), so a picture
delivered twice is caught whatever sequence numbers and timestamps the pipeline gave it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL, topology_text, wait_until
from tests.media import make_h264_clip, read_mark, split_i420
from tests.test_pipeline import assert_clean_exit, final_counts, frames_by_camera
from tests.test_redis_faults import final_rows
from tests.test_stages import output, setup, written  # noqa: F401 - setup: a fixture
from zstream.batch import Batcher, OutgoingBatch, QcEntry
from zstream.core.ring import Ring
from zstream.core.wire import FrameMeta, Verdict, decode, encode_qc_entry
from zstream.ledger import InFlightWrites, in_flight_path
from zstream.settle import read_books, settle_in_flight
from zstream.stats import Counters
from zstream.topology import Topology

CAMERAS = ["a", "b", "c"]
FRAMES, FPS = 150, 50  # 3 s per camera, played in real time


@pytest.mark.parametrize(
    ("worker", "output_fps"), [("batch-0", 0), ("validate-0", 0), ("capture-0", 0), ("capture-0", 20)]
)
def test_after_a_kill_9_the_books_balance_exactly_and_no_picture_comes_twice(
    pipeline,
    run_dir: Path,
    tmp_path: Path,
    streams: tuple[str, str],
    redis_client: redis.Redis,
    worker: str,
    output_fps: int,
) -> None:
    """With an output rate (20 of the clip's 50 fps), capture passes over the frames it will not
    send, and a restarted capture worker must resume after those too."""
    clip = make_h264_clip(tmp_path / "marked.mp4", width=320, height=240, fps=FPS, frames=FRAMES, marks=True)
    cameras = [{"id": c, "url": str(clip), "realtime": True} for c in CAMERAS]
    # One camera fails QC on every frame (no picture has that much contrast): its frames
    # settle in the QC stream, so that stream's accounting is checked through the crash too.
    cameras[2]["thresholds"] = {"min_contrast": 0.99}
    sections = {
        "capture": "[capture]\nworkers = 1\nring_slots = 16\nqueue_depth = 6",
        "validation": "[validation]\nworkers = 1\n[validation.thresholds]\nmin_sharpness = 0.0",
        "batcher": '[batcher]\nbatch_size = 4\nbatch_timeout_ms = 100\nencoding = "raw"\n'
        f"output_fps = {output_fps}\noutput_width = 0",
    }
    running = pipeline(topology_text(run_dir, streams, cameras, **sections))
    wait_until(
        lambda: (
            all(len(f) >= 20 for f in frames_by_camera(redis_client, streams[0]).values())
            and len(frames_by_camera(redis_client, streams[0])) == 2
        ),
        30,
        message="frames of cameras a and b in Redis",
    )
    old = running.worker_pids()[worker]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: running.worker_pids().get(worker) not in (None, old), 20, message=f"{worker} back")
    wait_until(
        lambda: all(running.camera(c)["state"] == "ended" for c in CAMERAS), 30, message="every clip played"
    )
    assert_clean_exit(running)
    rows = final_rows(running.log)
    found = frames_by_camera(redis_client, streams[0])
    qc = [fields for _, fields in redis_client.xrange(streams[1])]
    for camera in CAMERAS:
        row, frames = rows[camera], found.get(camera, [])
        in_qc = sum(1 for fields in qc if fields[b"camera"] == camera.encode())
        assert (row["written"], row["qc"]) == (len(frames), in_qc), (camera, row)
        assert row["written"] + row["qc"] + row["skipped"] + row["dropped"] + row["lost"] == row["captured"]
        assert 0 <= row["lost"] < FRAMES // 2, (camera, row)  # never negative: nothing counted twice
        assert row["captured"] <= FRAMES, (camera, row)  # a replayed file would capture more
        marks = [read_mark(_luma(meta, data)) for meta, data in frames]
        assert marks == sorted(set(marks)), f"{camera}: a picture came twice or out of order: {marks}"
        assert all(0 <= mark < FRAMES for mark in marks)
        assert (row["skipped"] > FRAMES // 3) == bool(output_fps), (camera, row)
    assert running.log.count("exited on signal SIGKILL") == 1
    totals = final_counts(running.log)  # settled: a live status mixes reports of different ages
    assert totals["validated"] >= totals["written"], totals


def _luma(meta: FrameMeta, data: bytes) -> np.ndarray:
    frame = np.frombuffer(data, np.uint8).reshape(meta.height * 3 // 2, meta.width)
    return split_i420(frame, meta.width, meta.height)[0]


def test_writes_that_landed_before_a_kill_count_as_written_and_those_that_did_not_do_not(
    setup: tuple[Topology, Ring],  # noqa: F811 - the fixture imported above
    run_dir: Path,
    streams: tuple[str, str],
    redis_client: redis.Redis,
) -> None:
    """The window a ledger cannot close: Redis took the write, the batcher died before counting it.
    Here the batcher is stopped right there (its writes done, its counting never run), and the
    supervisor's settling asks Redis, as it does after a real kill."""
    topology, ring = setup
    topology = topology.model_copy(
        update={"redis": topology.redis.model_copy(update={"stream": streams[0], "qc_stream": streams[1]})}
    )
    ledger = Counters.for_worker(run_dir, "batch-0")
    batcher = Batcher(topology, ledger, aioredis.from_url(REDIS_URL))
    batcher.in_flight = InFlightWrites(in_flight_path(run_dir, "batch-0", os.getpid()))
    metrics = {"brightness": 100.0}
    passed = [(decode(output(written(ring))[0]).meta, b"jpeg bytes") for _ in range(3)]
    failed = [
        QcEntry("cam", encode_qc_entry(Verdict(written(ring), metrics, ("too_dark",), 1.0))) for _ in range(2)
    ]
    for index, entry in enumerate(failed):
        entry.entry_id = f"{10**12 + index}-0"

    async def land_then_die() -> None:
        await batcher._write_batch(OutgoingBatch(frames=passed))
        await batcher.redis.aclose()

    asyncio.run(land_then_die())
    # The QC chunk: noted, then one of its two entries lands before the "kill".
    batcher.in_flight.note_qc(
        streams[1], [(e.entry_id, e.camera, e.fields["seq"]) for e in failed], ledger.get
    )
    with redis.Redis.from_url(REDIS_URL) as client:
        client.xadd(streams[1], failed[0].fields, id=failed[0].entry_id)
    counts, in_flight = read_books(run_dir, "batch-0", os.getpid())
    assert counts.get(("written", "cam", ""), 0) == 0  # the kill came before the count
    assert set(in_flight) == {"batch", "qc"}
    with redis.Redis.from_url(REDIS_URL) as client:
        settle_in_flight(client, in_flight, counts)
        assert counts[("written", "cam", "")] == 3 and counts[("batches_written", "", "")] == 1
        assert counts[("qc_written", "cam", "")] == 1  # the one that landed, not the other
        settle_in_flight(client, in_flight, counts)  # settling twice changes nothing
        assert counts[("written", "cam", "")] == 3 and counts[("qc_written", "cam", "")] == 1
        client.delete(streams[0])  # had it not landed, it would not count
        counts[("written", "cam", "")] = 0
        settle_in_flight(client, in_flight, counts)
        assert counts[("written", "cam", "")] == 0
    assert not list(run_dir.glob("counters-*")) and not list(run_dir.glob("in-flight-*"))
    ledger.ledger.close()

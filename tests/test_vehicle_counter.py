"""examples/vehicle_counter.py against synthetic traffic cameras run by `zstream up`: its counts
per camera must match the vehicles the scene itself drove across the counting line, in the
frames that reached Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.conftest import REDIS_URL, REPO, topology_text, wait_until
from tests.test_pipeline import assert_clean_exit, count_per_camera, frames_by_camera
from zstream.sources.synthetic import TrafficScene, parse_synthetic_url

CAMERAS = {
    "north": "synthetic://traffic?size=640x360&fps=10&vehicles=8",
    "south": "synthetic://traffic?size=1280x720&fps=10&vehicles=10",
}
WARM_UP = 20  # the counter's frames of background training per camera, where it counts nothing


def crossings(url: str, camera: str, seqs: list[int], line: float = 0.5) -> int:
    """Vehicles whose centre crossed the line between consecutive delivered frames, after the
    counter's warm-up: the scene's own ground truth."""
    scene = TrafficScene.from_spec(parse_synthetic_url(url, camera))
    x_line, total = line * scene.width, 0
    for before, after in zip(seqs[WARM_UP - 1 :], seqs[WARM_UP:], strict=False):
        for (a0, _, a1, _), (b0, _, b1, _) in zip(
            scene.vehicle_boxes(before), scene.vehicle_boxes(after), strict=True
        ):
            centre_a, centre_b = (a0 + a1) / 2, (b0 + b1) / 2
            wrapped = abs(centre_b - centre_a) > scene.width / 2  # left at one edge, back at the other
            total += not wrapped and (centre_a - x_line) * (centre_b - x_line) < 0
    return total


def test_vehicle_counter_counts_what_the_synthetic_scene_drove_past(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    cameras = [{"id": camera, "url": url} for camera, url in CAMERAS.items()]
    batcher = '[batcher]\nbatch_size = 4\nbatch_timeout_ms = 100\nencoding = "jpeg"\noutput_fps = 0\n'
    running = pipeline(topology_text(run_dir, streams, cameras, batcher=batcher))
    counts_stream = f"{streams[0]}:counts"
    command = [sys.executable, "examples/vehicle_counter.py", "--redis", REDIS_URL, "--stream", streams[0]]
    command += ["--counts", counts_stream, "--start", "0", "--until-idle", "1.5"]
    counter = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:  # the counter reads while the cameras stream, as it would live
        wait_until(
            lambda: count_per_camera(redis_client, streams[0], 200, list(CAMERAS)),
            60,
            message="200 frames each",
        )
        assert_clean_exit(running)
        stopped = time.monotonic()
        out, err = counter.communicate(timeout=60)  # it stops 1.5 s after the last batch
        assert counter.returncode == 0, err
        lag = time.monotonic() - stopped
        counted = json.loads(out.splitlines()[-1])["vehicles"]
        entries = [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in redis_client.xrange(counts_stream)
        ]
    finally:
        counter.kill()
        counter.wait()
        redis_client.delete(counts_stream)

    delivered, truths = frames_by_camera(redis_client, streams[0]), {}
    for camera, url in CAMERAS.items():
        seqs = [meta.seq for meta, _ in delivered[camera]]
        truth = truths[camera] = crossings(url, camera, seqs)
        assert truth >= 10, f"{camera}: too short a run to judge ({truth} vehicles)"
        assert abs(counted[camera] - truth) <= max(3, 0.1 * truth), (camera, counted[camera], truth)
        mine = [e for e in entries if e["camera"] == camera]
        assert sum(int(e["vehicles"]) for e in mine) == counted[camera]
        assert sum(int(e["frames"]) for e in mine) == len(seqs)
        assert all(int(e["minute"]) % 60 == 0 for e in mine) and mine[-1]["partial"] == "1"
    print(f"counted {counted}, truth {truths}; done {lag:.1f}s after the pipeline stopped")

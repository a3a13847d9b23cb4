"""The control plane, driven through the real CLI against a running `zstream up`.

Cameras are added, changed and removed live and the effect is checked where it shows: frames
in Redis, the camera's rate, its ring in /dev/shm, and the other cameras' unbroken sequence.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tests.conftest import REPO, Pipeline, topology_text, wait_until
from tests.test_pipeline import assert_clean_exit, frames_by_camera
from zstream.core.ring import SHM_DIR, ring_path
from zstream.sources.synthetic import expected_frame
from zstream.topology import load_topology
from zstream.topology.overlay import merge_overlay, overlay_path, read_overlay

SYNTH = "synthetic://traffic?size=320x240&fps=20"


def zstream(
    *args: str, topology: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "zstream.cli", *args]
    if topology is not None:
        command += ["-t", str(topology)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL
    )


def ok(*args: str, topology: Path) -> Any:
    result = zstream(*args, topology=topology)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout) if "--json" in args else result.stdout


@pytest.fixture
def running(pipeline, run_dir: Path, streams: tuple[str, str]) -> Pipeline:
    started = pipeline(topology_text(run_dir, streams, [{"id": "steady", "url": SYNTH}]))
    wait_until(lambda: started.camera("steady")["state"] == "streaming", 30, message="steady streaming")
    return started


def seqs(client: redis.Redis, stream: str, camera: str) -> list[int]:
    return [meta.seq for meta, _ in frames_by_camera(client, stream).get(camera, [])]


def test_cameras_are_added_updated_and_removed_live_without_touching_the_others(
    running: Pipeline, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    topo = running.topology_file
    run_id = load_topology(topo).run_id
    assert "added extra" in ok("cameras", "add", "extra", SYNTH, "--fps", "10", topology=topo)
    wait_until(lambda: len(seqs(redis_client, streams[0], "extra")) >= 20, 30, message="frames of 'extra'")
    frames = frames_by_camera(redis_client, streams[0])["extra"]
    for meta, data in frames:  # whole frames of the right camera
        assert data == expected_frame(SYNTH, "extra", round(meta.pts * 20)).tobytes()
    assert np.allclose(np.diff([m.pts for m, _ in frames]), 0.1, atol=0.01)  # capped at 10 fps

    ok("cameras", "update", "extra", "--fps", "2", topology=topo)

    def slowed() -> bool:
        pts = [m.pts for m, _ in frames_by_camera(redis_client, streams[0])["extra"]]
        return len(pts) >= 4 and np.allclose(np.diff(pts[-3:]), 0.5, atol=0.01)

    wait_until(slowed, 30, message="'extra' at 2 fps")

    ok("cameras", "update", "extra", "--resize", "160x120", topology=topo)  # a new ring, same seq line

    def resized() -> bool:
        return any(
            (m.width, m.height) == (160, 120) for m, _ in frames_by_camera(redis_client, streams[0])["extra"]
        )

    wait_until(resized, 30, message="'extra' at 160x120")
    frames = frames_by_camera(redis_client, streams[0])["extra"]
    after = [meta.seq for meta, _ in frames]
    small = [meta.seq for meta, _ in frames if (meta.width, meta.height) == (160, 120)]
    assert after == sorted(set(after))  # seq never goes back, across the new ring
    assert min(small) > max(seq for seq in after if seq not in small)

    listed = ok("cameras", "ls", "--json", topology=topo)
    assert [(c["id"], c["fps_cap"], c["resize"]) for c in listed] == [
        ("steady", None, None),
        ("extra", 2.0, "160x120"),
    ]

    ring = ring_path(run_id, "extra")
    assert ring.exists()
    ok("cameras", "rm", "extra", topology=topo)
    assert not ring.exists()  # its shared memory is released
    count = len(seqs(redis_client, streams[0], "extra"))
    steady = len(seqs(redis_client, streams[0], "steady"))
    wait_until(lambda: len(seqs(redis_client, streams[0], "steady")) >= steady + 20, 30, message="steady on")
    assert len(seqs(redis_client, streams[0], "extra")) <= count + 2  # at most what was in flight
    assert [c["id"] for c in ok("cameras", "ls", "--json", topology=topo)] == ["steady"]

    assert_clean_exit(running)
    steady_seqs = seqs(redis_client, streams[0], "steady")
    assert steady_seqs == list(range(len(steady_seqs))), "the untouched camera lost or reordered frames"
    assert not list(SHM_DIR.glob(f"zstream-{run_id}-*"))


def test_live_changes_survive_a_restart(
    pipeline, running: Pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    topo = running.topology_file
    ok("cameras", "add", "kept", SYNTH, "--set", "thresholds.min_brightness=5", topology=topo)
    ok("cameras", "update", "steady", "--fps", "4", topology=topo)
    assert_clean_exit(running)
    overlay = read_overlay(overlay_path(topo))
    assert overlay["kept"] == {"id": "kept", "url": SYNTH, "thresholds": {"min_brightness": 5.0}}
    merged = load_topology(topo)
    assert [(c.id, c.fps) for c in merged.cameras] == [("steady", 4.0), ("kept", None)]
    assert load_topology(topo, with_live_changes=False).camera("steady").fps is None  # the file is untouched

    again = pipeline(topo.read_text())  # the fixture writes the same file: the overlay applies
    wait_until(lambda: again.camera("kept")["state"] == "streaming", 30, message="'kept' after restart")
    assert_clean_exit(again)


def test_overlay_entries_replace_remove_or_append_cameras() -> None:
    raw = {"cameras": [{"id": "a", "url": "x"}, {"id": "b", "url": "y"}]}
    overlay = {"a": None, "b": {"id": "b", "url": "z"}, "c": {"id": "c", "url": "w"}}
    assert merge_overlay(raw, overlay)["cameras"] == [{"id": "b", "url": "z"}, {"id": "c", "url": "w"}]


def test_bad_changes_are_refused_with_what_is_wrong_and_nothing_changes(
    running: Pipeline, streams: tuple[str, str]
) -> None:
    topo = running.topology_file
    refused = {
        ("cameras", "add", "steady", SYNTH): "camera 'steady' already exists",
        ("cameras", "add", "bad", SYNTH, "--fps", "-1"): "fps: input should be greater than 0",
        ("cameras", "add", "bad", "gopher://cam"): "url: unsupported scheme 'gopher'",
        ("cameras", "update", "ghost", "--fps", "5"): "no camera 'ghost' (cameras: steady)",
        ("cameras", "update", "steady", "--set", "colour=red"): "colour: unknown key",
        ("cameras", "rm", "steady"): "the last one",
        ("purge", "not-ours", "--yes"): "not one of this pipeline's streams",
    }
    for args, message in refused.items():
        result = zstream(*args, topology=topo)
        assert result.returncode == 1, args
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert [c["id"] for c in ok("cameras", "ls", "--json", topology=topo)] == ["steady"]
    assert not overlay_path(topo).exists()
    assert running.camera("steady")["state"] == "streaming"
    assert_clean_exit(running)


def test_status_queues_purge_and_health(
    running: Pipeline, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    topo = running.topology_file
    group = "detectors"
    redis_client.xgroup_create(streams[0], group, id="0", mkstream=True)
    wait_until(lambda: redis_client.xlen(streams[0]) >= 2, 30, message="two batches")
    redis_client.xreadgroup(group, "worker-1", {streams[0]: ">"}, count=2)  # read, never acknowledged

    status = ok("status", "--json", topology=topo)
    assert status["cameras"]["steady"]["state"] == "streaming"
    assert {"batch-0", "validate-0", "validate-1", "capture-0", "capture-1"} <= set(status["workers"])
    names = {p["name"] for p in status["system"]["processes"]}
    assert {"supervisor", "batch-0", "capture-0"} <= names
    assert status["system"]["shared_memory"]["rings_bytes"] > 0
    table = ok("status", topology=topo)
    assert "steady" in table and "streaming" in table and "capture-0" in table

    (stream,) = [q for q in ok("queues", "--json", topology=topo) if q["stream"] == streams[0]]
    assert stream["length"] > 0
    (detectors,) = stream["groups"]
    assert detectors["group"] == group and detectors["pending"] == 2 and detectors["oldest_pending_s"] >= 0

    unconfirmed = zstream("purge", streams[0], topology=topo)  # no terminal to confirm on
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert "purged" in ok("purge", streams[0], "--yes", topology=topo)
    assert redis_client.xinfo_groups(streams[0])[0]["name"].decode() == group  # the group stays

    assert zstream("health", topology=topo).returncode == 0
    ok("cameras", "add", "dead", "rtsp://127.0.0.1:9/none", topology=topo)
    wait_until(lambda: running.camera("dead")["state"] in ("reconnecting", "failed"), 30, message="dead")

    def degraded() -> subprocess.CompletedProcess[str] | None:
        # Each retry passes through "connecting" (a failed camera connects again first); on a
        # loaded machine its niced thread can sit there for a report or two, so one sample may
        # land on it. Health must say degraded, with the camera, once it is between attempts.
        result = zstream("health", topology=topo)
        return result if result.returncode == 1 else None

    assert "camera dead is" in wait_until(degraded, 30, interval=0.5, message="health degraded").stdout
    assert_clean_exit(running)


def test_an_unreachable_control_endpoint_is_one_line_naming_it() -> None:
    result = zstream("status", "--endpoint", "tcp://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "zstream: no answer from the control endpoint tcp://127.0.0.1:9 within 5 s (is `zstream up` running?)"
    )


@pytest.mark.parametrize("command", [("status",), ("cameras", "ls"), ("health",), ("top",)])
def test_no_pipeline_on_a_run_dir_whose_control_port_is_picked_at_start_is_said_so(
    run_dir: Path, tmp_path: Path, streams: tuple[str, str], command: tuple[str, ...]
) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(topology_text(run_dir, streams, [{"id": "a", "url": "synthetic://traffic"}]))
    result = zstream(*command, topology=topology)
    assert result.returncode == 1, result
    assert result.stderr.strip() == (
        f"zstream: no pipeline is running on run_dir {run_dir} (a running one publishes its control "
        f"endpoint in {run_dir}/endpoints.json)"
    )

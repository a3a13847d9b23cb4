"""`zstream up` end to end: real processes, real shared memory, real Redis.

Every test checks what reached Redis against an independent reference (the synthetic
scene re-rendered, or the clip decoded again), so a torn, reordered or substituted frame
fails the test; and every test checks that nothing was left behind.
"""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import redis

from tests.conftest import Pipeline, shm_segments, topology_text, wait_until
from tests.media import decode_i420_frames, make_h264_clip, make_resolution_switch_clip, split_i420
from tests.rtsp import rtsp_server, with_credentials
from zstream.core.ring import SHM_DIR
from zstream.core.wire import FrameMeta, decode_batch_entry
from zstream.pixels import i420_bytes, scale_i420
from zstream.sources.synthetic import expected_frame
from zstream.topology import load_topology

SYNTH = "synthetic://traffic?size=320x240&fps=25"


def read_frames(client: redis.Redis, stream: str) -> list[tuple[FrameMeta, bytes]]:
    frames = []
    for _, fields in client.xrange(stream):
        frames.extend(decode_batch_entry(fields)[1])
    return frames


def frames_by_camera(client: redis.Redis, stream: str) -> dict[str, list[tuple[FrameMeta, bytes]]]:
    cameras: dict[str, list[tuple[FrameMeta, bytes]]] = defaultdict(list)
    for meta, data in read_frames(client, stream):
        cameras[meta.camera].append((meta, data))
    return cameras


def count_per_camera(client: redis.Redis, stream: str, minimum: int, cameras: list[str]) -> bool:
    found = frames_by_camera(client, stream)
    return all(len(found.get(camera, [])) >= minimum for camera in cameras)


def final_counts(log: str) -> dict[str, int]:
    line = next(line for line in log.splitlines() if "final:" in line)
    return {name: int(value) for name, value in re.findall(r"(captured|validated|written) (\d+)", line)}


def assert_clean_exit(running: Pipeline) -> None:
    code = running.stop()
    assert code == 0, running.log
    topology = load_topology(running.topology_file)
    assert shm_segments(topology.run_id) == [], "shared memory left behind"
    assert not list(running.run_dir.glob("*.sock")) if running.run_dir.exists() else True
    assert "Traceback" not in running.log, running.log


def assert_in_order(frames: list[tuple[FrameMeta, bytes]]) -> None:
    seqs = [meta.seq for meta, _ in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"out of order or duplicated: {seqs}"


def test_synthetic_frames_arrive_bit_identical_in_order_and_drain_on_sigint(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    cameras = [{"id": f"cam-{i}", "url": SYNTH} for i in range(3)]
    running = pipeline(topology_text(run_dir, streams, cameras))
    # A 25 fps camera: once the 5 s rate window has filled, the status says so.
    rates = wait_until(
        lambda: 20 <= (running.camera("cam-0").get("fps_in") or 0) <= 30 and running.camera("cam-0"),
        30,
        message="fps_in of a 25 fps camera",
    )
    assert 0 <= rates["last_frame_age_s"] < 2.5 and rates["fps_out"] > 0
    wait_until(
        lambda: count_per_camera(redis_client, streams[0], 30, ["cam-0", "cam-1", "cam-2"]),
        60,
        message="30 frames of each camera in Redis",
    )
    assert shm_segments(load_topology(running.topology_file).run_id), "rings exist while running"
    assert_clean_exit(running)

    received = frames_by_camera(redis_client, streams[0])
    for camera in ("cam-0", "cam-1", "cam-2"):
        frames = received[camera]
        assert_in_order(frames)
        for meta, data in frames:
            assert (meta.width, meta.height, meta.pixel_format, meta.shape) == (
                320,
                240,
                "yuv420p",
                (360, 320),
            )
            assert meta.pts == pytest.approx(meta.seq / 25)
            assert set(meta.metrics) >= {"sharpness", "brightness", "contrast", "noise"}
            expected = expected_frame(SYNTH, camera, meta.seq)
            assert data == expected.tobytes(), f"{camera} frame {meta.seq} differs from what was rendered"
    # The drain: every frame captured before Ctrl-C is accounted for, and what was written is in Redis.
    assert "final: unaccounted 0 " in running.log
    assert "did not stop in time" not in running.log  # every stage took its SIGTERM and drained
    assert final_counts(running.log)["written"] == len(read_frames(redis_client, streams[0]))


def test_file_camera_frames_match_an_independent_decode(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=320, height=240, frames=40, gop=10)
    reference = decode_i420_frames(clip)
    cameras = [{"id": "file-cam", "url": str(clip), "realtime": False}]
    running = pipeline(topology_text(run_dir, streams, cameras))
    wait_until(
        lambda: count_per_camera(redis_client, streams[0], 40, ["file-cam"]), 60, message="all 40 frames"
    )
    wait_until(lambda: running.camera("file-cam")["state"] == "ended", 10, message="state ended")
    assert_clean_exit(running)
    frames = read_frames(redis_client, streams[0])
    assert [meta.seq for meta, _ in frames] == list(range(40))
    for meta, data in frames:
        assert data == reference[meta.seq].tobytes(), f"frame {meta.seq} differs from the reference decode"


def test_a_stream_that_switches_resolution_is_delivered_whole_or_dropped_with_a_reason(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_resolution_switch_clip(tmp_path / "switch.ts", ((320, 240), (640, 360)), frames_each=10)
    reference = decode_i420_frames(clip)
    assert [r.shape for r in reference] == [(360, 320)] * 10 + [(540, 640)] * 10
    cameras = [
        {"id": "native", "url": str(clip), "realtime": False},  # default max_size holds both
        {"id": "small", "url": str(clip), "realtime": False, "max_size": "320x240"},  # the new size won't fit
        {"id": "scaled", "url": str(clip), "realtime": False, "resize": "160x120"},
    ]
    running = pipeline(topology_text(run_dir, streams, cameras))
    wait_until(
        lambda: all(running.camera(c["id"])["state"] == "ended" for c in cameras), 60, message="all ended"
    )
    small = running.camera("small")
    wait_until(
        lambda: count_per_camera(redis_client, streams[0], 20, ["native", "scaled"]), 10, message="frames"
    )
    assert_clean_exit(running)
    found = frames_by_camera(redis_client, streams[0])
    assert [meta.seq for meta, _ in found["native"]] == list(range(20))
    for meta, data in found["native"]:
        assert (meta.height * 3 // 2, meta.width) == reference[meta.seq].shape
        assert data == reference[meta.seq].tobytes(), f"frame {meta.seq} differs from the reference decode"
    assert [(meta.width, meta.height) for meta, _ in found["scaled"]] == [(160, 120)] * 20
    # The frames that no longer fit are counted with why, and the camera says what to change.
    assert [meta.seq for meta, _ in found["small"]] == list(range(10))
    assert all(data == reference[meta.seq].tobytes() for meta, data in found["small"])
    assert small["dropped"] == {"capture:too_large": 10}
    said = [line for line in running.log.splitlines() if "camera small" in line and "640x360" in line]
    assert said and "max_size" in said[0], running.log


def test_fps_cap_and_resize_apply_at_capture(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=640, height=360, fps=30, frames=90, gop=15)
    cameras = [{"id": "capped", "url": str(clip), "realtime": False, "fps": 10, "resize": "320x180"}]
    running = pipeline(topology_text(run_dir, streams, cameras))
    wait_until(lambda: running.camera("capped")["state"] == "ended", 60, message="end of clip")
    wait_until(lambda: count_per_camera(redis_client, streams[0], 30, ["capped"]), 10, message="30 frames")
    assert_clean_exit(running)
    frames = read_frames(redis_client, streams[0])
    assert len(frames) == 30  # 90 frames at 30 fps capped to 10 fps
    assert all((m.width, m.height, len(data)) == (320, 180, 320 * 180 * 3 // 2) for m, data in frames)
    gaps = np.diff([m.pts for m, _ in frames])
    assert np.allclose(gaps, 0.1, atol=0.01), gaps


def test_the_output_rate_and_width_pick_what_is_validated_and_reaches_redis(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=640, height=360, fps=30, frames=90, gop=15)
    reference = decode_i420_frames(clip)
    cameras = [
        {"id": "out", "url": str(clip), "realtime": False, "output_fps": 10, "output_width": 320},
        {"id": "all", "url": str(clip), "realtime": False},  # the tests' default: every frame, unscaled
    ]
    running = pipeline(topology_text(run_dir, streams, cameras))
    wait_until(
        lambda: all(running.camera(c)["state"] == "ended" for c in ("out", "all")), 60, message="end of clip"
    )
    wait_until(lambda: count_per_camera(redis_client, streams[0], 30, ["out"]), 10, message="30 frames")
    wait_until(lambda: count_per_camera(redis_client, streams[0], 90, ["all"]), 10, message="90 frames")
    wait_until(lambda: running.camera("out")["written"] == 30, 10, message="status of 30 frames written")
    out = running.camera("out")
    # Only the frames the output rate sends on are measured (validation.frames = "output").
    assert (out["captured"], out["validated"], out["written"]) == (90, 30, 30)
    assert out["skipped"] == {"output_rate": 60} and out["unaccounted"] == 0
    assert_clean_exit(running)
    found = frames_by_camera(redis_client, streams[0])
    assert [meta.seq for meta, _ in found["out"]] == list(range(0, 90, 3))  # 10 of 30 fps, evenly
    for meta, data in found["out"]:
        assert (meta.width, meta.height, meta.shape) == (320, 180, (270, 320))
        y, u, v = scale_i420(*split_i420(reference[meta.seq], 640, 360), 320, 180)
        assert data == i420_bytes(y, u, v), f"frame {meta.seq} is not the reference, scaled"
    assert [meta.seq for meta, _ in found["all"]] == list(range(90))
    assert all(data == reference[meta.seq].tobytes() for meta, data in found["all"])


def test_capture_workers_run_at_a_lower_priority_than_the_stages_after_them(
    pipeline, run_dir: Path, streams: tuple[str, str]
) -> None:
    """Every camera's decoding thread is niced (capture.nice); the capture workers' ZeroMQ I/O
    threads, validation and batching keep the supervisor's priority, so under overload they
    are served first."""
    cameras = [{"id": name, "url": SYNTH} for name in ("a", "b", "c")]
    text = topology_text(run_dir, streams, cameras)
    running = pipeline(text.replace("[capture]\n", "[capture]\nnice = 7\n"))
    wait_until(
        lambda: all(running.camera(name)["state"] == "streaming" for name in "abc"), 60, message="streaming"
    )
    base = os.getpriority(os.PRIO_PROCESS, running.process.pid)
    niced: dict[str, int] = {}
    for name, pid in running.worker_pids().items():
        threads = {}
        for task in os.listdir(f"/proc/{pid}/task"):
            comm = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
            threads[int(task)] = (comm, os.getpriority(os.PRIO_PROCESS, int(task)))
        niced[name] = sum(1 for _, nice in threads.values() if nice == max(base, 7))
        assert {nice for _, nice in threads.values()} <= {base, max(base, 7)}, (name, threads)
        io_threads = [nice for comm, nice in threads.values() if comm.startswith("ZMQbg/IO")]
        assert io_threads and set(io_threads) == {base}, (name, threads)
    # Cameras a and c on capture-0, b on capture-1: one niced thread per camera, nowhere else.
    assert niced == {"capture-0": 2, "capture-1": 1, "validate-0": 0, "validate-1": 0, "batch-0": 0}
    assert_clean_exit(running)


def test_failing_frames_go_to_the_qc_stream_with_reasons(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    cameras = [
        {"id": "good", "url": SYNTH},
        {"id": "dark", "url": SYNTH, "thresholds": {"min_brightness": 250.0, "max_brightness": 255.0}},
    ]
    running = pipeline(topology_text(run_dir, streams, cameras))
    wait_until(lambda: redis_client.xlen(streams[1]) >= 10, 60, message="QC entries")
    wait_until(lambda: count_per_camera(redis_client, streams[0], 10, ["good"]), 30, message="good frames")
    quality = running.camera("dark")["quality"]
    assert quality["pass_rate"] == 0.0 and next(iter(quality["top_failures"])) == "too_dark"
    assert running.camera("good")["quality"]["pass_rate"] == 1.0
    assert_clean_exit(running)
    qc = [fields for _, fields in redis_client.xrange(streams[1])]
    assert all(fields[b"camera"] == b"dark" for fields in qc)
    assert all(b"too_dark" in fields[b"reasons"].split(b",") for fields in qc)
    assert all(float(fields[b"metric.brightness"]) < 250 for fields in qc)
    assert "dark" not in frames_by_camera(redis_client, streams[0])
    seqs = [int(fields[b"seq"]) for fields in qc]
    assert seqs == sorted(seqs)


def test_killed_workers_are_restarted_and_frames_stay_whole_and_ordered(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    cameras = [{"id": f"cam-{i}", "url": SYNTH} for i in range(2)]
    running = pipeline(topology_text(run_dir, streams, cameras))
    wait_until(
        lambda: count_per_camera(redis_client, streams[0], 10, ["cam-0", "cam-1"]), 60, message="frames"
    )
    for worker in ("capture-0", "validate-1", "batch-0"):
        old = running.worker_pids()[worker]
        os.kill(old, signal.SIGKILL)
        wait_until(
            lambda w=worker, o=old: running.worker_pids().get(w) not in (None, o),
            20,
            message=f"{worker} restarted",
        )
        before = len(read_frames(redis_client, streams[0]))
        wait_until(
            lambda b=before: len(read_frames(redis_client, streams[0])) >= b + 20,
            30,
            message=f"frames flowing again after killing {worker}",
        )
    status = running.status()
    assert {status["workers"][w]["restarts"] for w in ("capture-0", "validate-1", "batch-0")} == {1}
    assert_clean_exit(running)
    assert running.log.count("exited on signal SIGKILL") == 3
    delays = [float(d) for d in re.findall(r"exited on signal SIGKILL; restart #1 in ([\d.]+)s", running.log)]
    assert len(delays) == 3 and max(delays) <= 2.0  # the policy restarts a first crash within 2 s
    assert re.search(r"final: unaccounted \d+ ", running.log)  # what the kills lost, counted
    for camera, frames in frames_by_camera(redis_client, streams[0]).items():
        assert_in_order(frames)  # seq keeps increasing across the capture restart
        for meta, data in frames:
            # A restarted synthetic source renders from frame 0 again: identify the frame by pts.
            assert data == expected_frame(SYNTH, camera, round(meta.pts * 25)).tobytes()


def test_an_unreachable_camera_is_retried_while_the_others_stream(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    cameras = [
        {"id": "ok", "url": SYNTH},
        {"id": "gone", "url": "rtsp://admin:hunter2@127.0.0.1:9/stream"},
    ]
    capture = "[capture]\nworkers = 1\nreconnect_initial_s = 0.2\nreconnect_max_s = 1\nopen_timeout_s = 2"
    running = pipeline(topology_text(run_dir, streams, cameras, capture=capture))
    wait_until(lambda: count_per_camera(redis_client, streams[0], 30, ["ok"]), 60, message="frames of 'ok'")
    state = wait_until(
        lambda: running.camera("gone")["state"] == "reconnecting" and running.camera("gone"),
        20,
        message="'gone' reconnecting",
    )
    assert "attempt" in state["detail"]
    wait_until(lambda: running.log.count("camera gone") >= 3, 20, message="several attempts logged")
    assert_clean_exit(running)
    assert "hunter2" not in running.log and "admin:****@127.0.0.1:9" in running.log


def test_redis_unreachable_at_start_is_one_clear_line(
    pipeline, run_dir: Path, streams: tuple[str, str], tmp_path: Path
) -> None:
    text = topology_text(run_dir, streams, [{"id": "a", "url": SYNTH}])
    text = text.replace("redis://127.0.0.1:6379/0", "redis://:s3cret@127.0.0.1:9/0")
    running = pipeline(text)
    assert running.process.wait(30) == 1
    log = running.log
    assert "cannot reach Redis at redis://:****@127.0.0.1:9/0" in log
    assert "s3cret" not in log and "Traceback" not in log
    assert shm_segments(load_topology(running.topology_file).run_id) == []


def test_not_enough_shared_memory_is_refused_with_the_sum(
    pipeline, run_dir: Path, streams: tuple[str, str]
) -> None:
    cameras = [{"id": "huge", "url": SYNTH, "max_size": "7680x4320", "ring_slots": 1024}]
    running = pipeline(topology_text(run_dir, streams, cameras))
    assert running.process.wait(30) == 1
    assert re.search(
        r"rings need [\d.]+ GiB of shared memory .* but /dev/shm has [\d.]+ GiB free", running.log
    )
    assert "ring_slots" in running.log and "Traceback" not in running.log


def test_a_second_pipeline_on_the_same_run_dir_is_refused(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    first = pipeline(topology_text(run_dir, streams, [{"id": "a", "url": SYNTH}]))
    wait_until(lambda: count_per_camera(redis_client, streams[0], 5, ["a"]), 60, message="first pipeline up")
    second = Pipeline(first.topology_file, run_dir)
    assert second.process.wait(30) == 1
    second.stop()
    assert f"another `zstream up` (pid {first.process.pid}) is running" in second.log
    assert_clean_exit(first)


def test_rtsp_camera_frames_match_the_served_clip(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=320, height=240, fps=25, frames=50, gop=10)
    index_of = {frame.tobytes(): i for i, frame in enumerate(decode_i420_frames(clip))}
    with rtsp_server(file=clip) as url:
        # Ring and queue hold the whole clip, so even a slow machine has no reason to drop.
        cameras = [{"id": "ip-cam", "url": url, "ring_slots": 64}]
        running = pipeline(topology_text(run_dir, streams, cameras, capture="[capture]\nqueue_depth = 64"))
        wait_until(
            lambda: count_per_camera(redis_client, streams[0], 50, ["ip-cam"]), 60, message="RTSP frames"
        )
        assert_clean_exit(running)
    frames = read_frames(redis_client, streams[0])
    indices = [index_of.get(data) for _, data in frames]
    assert None not in indices, "a delivered frame is not one of the clip's frames"
    assert indices[:50] == list(range(50))  # the whole first session, in order, nothing lost
    assert_in_order(frames)


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has exited; only its exit status is left to collect


def test_killing_the_supervisor_leaves_no_orphans_and_the_next_up_cleans_up(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    text = topology_text(run_dir, streams, [{"id": "a", "url": SYNTH}])
    first = pipeline(text)
    wait_until(
        lambda: count_per_camera(redis_client, streams[0], 5, ["a"]), 60, message="first run streaming"
    )
    workers = first.worker_pids()
    assert len(workers) == 5
    first.process.kill()
    first.process.wait(10)
    wait_until(lambda: all(map(process_gone, workers.values())), 30, message="workers to exit")
    run_id = load_topology(first.topology_file).run_id
    assert shm_segments(run_id) == [], "the orphaned workers remove the rings"
    assert not list(run_dir.glob("*.sock")) if run_dir.exists() else True

    # A run dir with leftovers (as if the workers had been killed too) is cleaned by the next up.
    leftover = SHM_DIR / f"zstream-{run_id}-a"
    leftover.write_bytes(b"\0" * 4096)
    second = pipeline(text)
    before = len(read_frames(redis_client, streams[0]))
    wait_until(lambda: len(read_frames(redis_client, streams[0])) >= before + 10, 60, message="second run")
    assert "removing shared memory left by an earlier run" in second.log
    assert_clean_exit(second)


def test_a_finite_synthetic_camera_ends_instead_of_replaying(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    url = "synthetic://traffic?size=320x240&fps=50&count=12"
    running = pipeline(topology_text(run_dir, streams, [{"id": "short", "url": url}]))
    wait_until(lambda: running.camera("short")["state"] == "ended", 60, message="camera ended")
    wait_until(lambda: running.camera("short").get("unaccounted") == 0, 10, message="all frames settled")
    time.sleep(1.0)  # a replaying source would commit more frames by now
    camera = running.camera("short")
    assert camera["committed"] == 12
    assert camera["written"] + sum(camera["dropped"].values()) == 12
    assert_clean_exit(running)
    seqs = [m.seq for m, _ in read_frames(redis_client, streams[0])]
    assert len(seqs) == camera["written"] and seqs == sorted(seqs) and set(seqs) <= set(range(12))


def make_still_clip(path: Path, frames: int = 20, fps: int = 20) -> Path:
    """An H.264 clip of one picture repeated: what a stuck camera encoder sends."""
    source = make_h264_clip(path.with_suffix(".src.mp4"), width=320, height=240, frames=1)
    picture = decode_i420_frames(source)[0]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="yuv420p")))
        container.mux(stream.encode())
    return path


def test_a_frozen_camera_is_caught_with_several_validation_workers(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    still = make_still_clip(tmp_path / "still.mp4")
    cameras = [
        {"id": "stuck", "url": str(still), "loop": True, "thresholds": {"frozen_after_s": 1.0}},
        {"id": "live", "url": SYNTH, "thresholds": {"frozen_after_s": 1.0}},
    ]
    running = pipeline(topology_text(run_dir, streams, cameras))  # two validation workers
    frozen = wait_until(
        lambda: [f for _, f in redis_client.xrange(streams[1]) if b"frozen" in f[b"reasons"].split(b",")][5:],
        60,
        message="frozen frames in the QC stream",
    )
    assert all(f[b"camera"] == b"stuck" and float(f[b"metric.frozen_s"]) >= 1.0 for f in frozen)
    assert "frozen" not in running.camera("live")["failed"]
    stuck = [m for m, _ in read_frames(redis_client, streams[0]) if m.camera == "stuck"]
    assert stuck and max(m.metrics["frozen_s"] for m in stuck) < 1.0  # passed only before the second
    assert_clean_exit(running)


def test_http_camera_hls_vod_frames_reach_redis_bit_identical(
    pipeline,
    run_dir: Path,
    streams: tuple[str, str],
    redis_client: redis.Redis,
    tmp_path: Path,
    web_root: tuple[Path, str],
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=320, height=240, fps=10, frames=30, gop=10)
    reference = decode_i420_frames(clip)
    root, base = web_root
    hls = ["-c", "copy", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod", str(root / "cam.m3u8")]
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-nostdin", "-i", str(clip), *hls], check=True, timeout=60
    )
    cameras = [{"id": "vms", "url": f"{base}/cam.m3u8", "ring_slots": 64}]
    running = pipeline(topology_text(run_dir, streams, cameras, capture="[capture]\nqueue_depth = 32"))
    wait_until(lambda: running.camera("vms")["state"] == "ended", 60, message="the recording ended")
    wait_until(lambda: count_per_camera(redis_client, streams[0], 30, ["vms"]), 10, message="30 frames")
    assert_clean_exit(running)
    frames = read_frames(redis_client, streams[0])
    assert [m.seq for m, _ in frames] == list(range(30))
    assert all(data == reference[m.seq].tobytes() for m, data in frames)


def test_a_refused_password_fails_the_camera_without_hammering_and_others_stream(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=320, height=240, frames=20)
    with rtsp_server(file=clip, user="admin", password="right") as url:
        cameras = [
            {"id": "ok", "url": SYNTH},
            {"id": "locked", "url": with_credentials(url, "admin", "wrong-pw")},
        ]
        capture = "[capture]\nworkers = 1\nreconnect_initial_s = 0.2\nreconnect_max_s = 30"
        running = pipeline(topology_text(run_dir, streams, cameras, capture=capture))
        state = wait_until(
            lambda: running.camera("locked")["state"] == "failed" and running.camera("locked"),
            30,
            message="'locked' failed",
        )
        wait_until(lambda: count_per_camera(redis_client, streams[0], 30, ["ok"]), 60, message="'ok' streams")
        assert "authentication refused" in state["detail"] and "attempt 1," in state["detail"]
        assert running.camera("locked")["state"] == "failed"  # still waiting: retried slowly
        assert_clean_exit(running)
    assert "wrong-pw" not in running.log and running.log.count("locked (rtsp://admin:****@") == 2


def test_a_silent_camera_is_stalled_then_reconnected(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis
) -> None:
    server = silent_mjpeg_server(frames=10)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.mjpg"
        cameras = [{"id": "quiet", "url": url}]
        capture = "[capture]\nstall_timeout_s = 1\nread_timeout_s = 4\nreconnect_initial_s = 0.2"
        running = pipeline(topology_text(run_dir, streams, cameras, capture=capture))
        wait_until(lambda: running.camera("quiet")["state"] == "stalled", 30, message="stalled")
        wait_until(
            lambda: (
                running.camera("quiet")["state"] in ("reconnecting", "connecting", "streaming")
                and "reconnect" in running.log
            ),
            20,
            message="reconnect after the read timeout",
        )
        assert_clean_exit(running)
    finally:
        server.shutdown()
        server.server_close()
    assert running.log.index("quiet") < running.log.index(": stalled: no frame for")
    assert len(read_frames(redis_client, streams[0])) >= 10


def silent_mjpeg_server(frames: int) -> Any:
    """An MJPEG camera that sends `frames` pictures, then keeps the connection open in silence."""
    scene = expected_frame(SYNTH, "quiet", 0)  # a traffic picture, so the frames pass QC
    picture = cv2.imencode(".jpg", cv2.cvtColor(scene, cv2.COLOR_YUV2BGR_I420))[1].tobytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for _ in range(frames):
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                    self.wfile.write(f"Content-Length: {len(picture)}\r\n\r\n".encode() + picture + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.1)
                time.sleep(8)  # connected, silent: bounded so the server thread ends
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_keyframes_only_camera_delivers_its_key_frames(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=320, height=240, frames=40, gop=10)
    reference = decode_i420_frames(clip)
    cameras = [{"id": "keys", "url": str(clip), "realtime": False, "keyframes_only": True}]
    running = pipeline(topology_text(run_dir, streams, cameras))
    wait_until(lambda: running.camera("keys")["state"] == "ended", 60, message="end of clip")
    wait_until(lambda: count_per_camera(redis_client, streams[0], 4, ["keys"]), 10, message="4 key frames")
    assert_clean_exit(running)
    frames = read_frames(redis_client, streams[0])
    assert [data for _, data in frames] == [reference[i].tobytes() for i in (0, 10, 20, 30)]


def test_an_rtsp_camera_streams_again_within_5_s_of_its_server_returning(
    pipeline, run_dir: Path, streams: tuple[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = make_h264_clip(tmp_path / "clip.mp4", width=320, height=240, fps=10, frames=50, gop=10)
    index_of = {frame.tobytes(): i for i, frame in enumerate(decode_i420_frames(clip))}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    capture = (
        "[capture]\nreconnect_initial_s = 0.2\nreconnect_max_s = 1\nopen_timeout_s = 2\nread_timeout_s = 2"
    )
    with rtsp_server(file=clip, loop=True, port=port) as url:
        running = pipeline(topology_text(run_dir, streams, [{"id": "ip", "url": url}], capture=capture))
        wait_until(
            lambda: count_per_camera(redis_client, streams[0], 10, ["ip"]), 60, message="first session"
        )
    wait_until(
        lambda: running.camera("ip")["state"] in ("reconnecting", "stalled", "connecting"),
        15,
        message="the camera notices the server is gone",
    )
    before = len(read_frames(redis_client, streams[0]))
    with rtsp_server(file=clip, loop=True, port=port):
        returned = time.monotonic()
        wait_until(
            lambda: (
                running.camera("ip")["state"] == "streaming"
                and len(read_frames(redis_client, streams[0])) > before
            ),
            30,
            message="streaming again",
        )
        back_after = time.monotonic() - returned
        # One outage: attempts while the server was away, and exactly one successful reconnection.
        wait_until(lambda: running.camera("ip")["reconnected"] == 1, 5, message="one reconnection")
        assert running.camera("ip")["reconnects"] >= 1
        assert_clean_exit(running)
    assert back_after <= 5.0, f"streaming again {back_after:.1f}s after the server returned"
    frames = read_frames(redis_client, streams[0])
    assert_in_order(frames)
    assert None not in [index_of.get(data) for _, data in frames]  # whole frames of the clip, both sides

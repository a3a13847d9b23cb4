"""`zstream up` refuses, before starting anything, a machine that cannot run the topology:
each refusal is one line that says what to change, and nothing is left behind."""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, shm_segments, topology_text
from tests.test_pipeline import SYNTH
from zstream.topology import load_topology


def test_ports_in_use_are_all_named_with_their_keys(
    pipeline, run_dir: Path, streams: tuple[str, str]
) -> None:
    with socket.socket() as control, socket.socket() as metrics:
        for held in (control, metrics):
            held.bind(("127.0.0.1", 0))
            held.listen()
        control_port, metrics_port = control.getsockname()[1], metrics.getsockname()[1]
        text = topology_text(
            run_dir,
            streams,
            [{"id": "a", "url": SYNTH}],
            control=f'[control]\nendpoint = "tcp://127.0.0.1:{control_port}"',
            metrics=f'[metrics]\naddress = "127.0.0.1:{metrics_port}"',
        )
        running = pipeline(text)
        assert running.process.wait(30) == 1
    log = running.log
    assert f"control.endpoint: 127.0.0.1:{control_port} is not free" in log
    assert f"metrics.address: 127.0.0.1:{metrics_port} is not free" in log
    assert "Traceback" not in log
    assert shm_segments(load_topology(running.topology_file).run_id) == []


def test_too_low_an_open_files_limit_is_refused_with_how_to_raise_it(
    run_dir: Path, streams: tuple[str, str], tmp_path: Path
) -> None:
    cameras = [{"id": f"cam-{i}", "url": SYNTH} for i in range(20)]  # needs 256 + 16 * 20 files
    topology = tmp_path / "topology.toml"
    topology.write_text(topology_text(run_dir, streams, cameras))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    result = subprocess.run(
        [sys.executable, "-m", "zstream.cli", "up", str(topology)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        preexec_fn=low_limit,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "20 cameras need about 576 open files" in result.stderr and "ulimit -Hn 576" in result.stderr
    assert "Traceback" not in result.stderr
    assert shm_segments(load_topology(topology).run_id) == []


def _up(topology: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zstream.cli", "up", str(topology)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        stdin=subprocess.DEVNULL,
    )


def test_too_small_shm_on_kubernetes_names_the_memory_backed_volume(
    run_dir: Path, streams: tuple[str, str], tmp_path: Path
) -> None:
    huge = {"id": "huge", "url": SYNTH, "resize": "7680x4320", "ring_slots": 1024}  # ~47 GiB of rings
    topology = tmp_path / "topology.toml"
    topology.write_text(topology_text(run_dir, streams, [huge]))
    result = _up(topology, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert result.returncode == 1
    needed_mib = load_topology(topology).ring_bytes(load_topology(topology).cameras[0]) / 2**20
    match = re.search(r"emptyDir with medium: Memory and sizeLimit: (\d+)Mi at /dev/shm", result.stderr)
    assert match is not None, result.stderr
    assert needed_mib < int(match[1]) <= needed_mib + 65
    assert "Traceback" not in result.stderr


def test_a_url_secret_from_an_unset_variable_is_refused_with_its_key(
    run_dir: Path, streams: tuple[str, str], tmp_path: Path
) -> None:
    camera = {"id": "gate", "url": "rtsp://admin:${GATE_PASSWORD}@127.0.0.1:9/main"}
    topology = tmp_path / "topology.toml"
    topology.write_text(topology_text(run_dir, streams, [camera]))
    result = _up(topology, {})
    assert result.returncode == 1
    assert "cameras[0] (gate).url: environment variable GATE_PASSWORD is not set" in result.stderr
    assert "Traceback" not in result.stderr

"""The README's promises: its consumer example runs as written, its commands exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import redis

from tests.conftest import REPO, topology_text, wait_until

README = (REPO / "README.md").read_text()


def consumer_example() -> str:
    block = README.split("<!-- consumer-example", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_consumer_example_runs_as_written(pipeline, run_dir: Path, redis_client: redis.Redis) -> None:
    streams = ("zstream:frames", "zstream:qc")  # the example uses the default stream name
    running = pipeline(
        topology_text(
            run_dir,
            streams,
            [{"id": "cam-a", "url": "synthetic://traffic?size=320x240"}],
            batcher='[batcher]\nbatch_size = 2\nencoding = "jpeg"',
        )
    )
    wait_until(lambda: running.camera("cam-a")["state"] == "streaming", 60, message="camera streaming")
    try:
        result = subprocess.run(
            [sys.executable, "-c", consumer_example()], capture_output=True, text=True, timeout=90, cwd=REPO
        )
    finally:
        redis_client.xgroup_destroy("zstream:frames", "detector")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 20
    assert all(re.fullmatch(r"cam-a \d+ \(240, 320, 3\) [\d.]+", line) for line in lines), lines[:3]


def test_readme_commands_exist_and_ci_runs_the_test_command() -> None:
    assert "scripts/run " in README and "scripts/test " in README
    for script in ("scripts/run", "scripts/test", "scripts/setup"):
        assert (REPO / script).stat().st_mode & 0o111, f"{script} is not executable"
    assert "scripts/test" in (REPO / ".ci" / "run").read_text()


def test_the_shipped_topology_uses_the_worker_layout_the_readme_recommends() -> None:
    """README's Sizing measures one capture and one validation worker as best on 2 cores."""
    from zstream.topology import load_topology

    recommended = re.search(r"\| (\d+) / (\d+) \(default\) \|", README)
    assert recommended, "README's worker table lost its default row"
    shipped = load_topology(REPO / "topology.toml")
    assert (shipped.capture.workers, shipped.validation.workers) == tuple(map(int, recommended.groups()))

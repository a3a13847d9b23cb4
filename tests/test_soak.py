"""The short soak that CI runs (scripts/soak.py runs the 10-minute one): 20 cameras, and
nothing may grow once warmed up: memory (5 %), file descriptors, threads, shared memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_twenty_cameras_for_a_minute_grow_nothing() -> None:
    soak = ["--cameras", "20", "--duration", "60", "--warmup", "25", "--interval", "5"]
    result = subprocess.run(
        [sys.executable, "scripts/soak.py", *soak],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    verdicts = [line for line in result.stdout.splitlines() if line.startswith(("ok ", "FAIL "))]
    assert len(verdicts) == 5 and all(line.startswith("ok ") for line in verdicts), result.stdout

"""The transport benchmark runs end to end, and every variant delivers every frame intact.

Only what a benchmark must get right is asserted (frames delivered, none overwritten or
corrupted, nothing left behind); its fps depend on the machine and its load, so no
timing target is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from zstream.core.ring import SHM_DIR

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "bench_transport.py"

# A table row: "(c) label   ok/sent   fps   hop1   hop2   e2e   cpu   overwritten   bad".
ROW = re.compile(
    r"^\((?P<variant>[abc])\) .*?\s(?P<ok>\d+)/(?P<sent>\d+)\s+(?P<fps>\d+)"
    r"(?:\s+\S+){4}\s+(?P<overwritten>\d+)\s+(?P<bad>\d+)$"
)


def table_rows(output: str) -> list[dict[str, str]]:
    return [m.groupdict() for line in output.splitlines() if (m := ROW.match(line))]


def run_quick(tmp_path: Path) -> tuple[int, int, str]:
    """Run `--quick` with its temp files under tmp_path; (pid, exit code, stdout + stderr)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
        start_new_session=True,  # its own process group: on timeout, its stages go with it
    ) as proc:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return proc.pid, proc.returncode, out + err


def test_quick_run_delivers_every_frame_through_all_three_transports(tmp_path: Path) -> None:
    pid, code, output = run_quick(tmp_path)
    assert code == 0, output

    rows = table_rows(output)
    throughput, paced = rows[:3], rows[3:]
    assert [r["variant"] for r in throughput] == ["a", "b", "c"], output
    assert [r["variant"] for r in paced] == ["a", "b", "c"], output
    for row in throughput:
        assert int(row["fps"]) > 0, row
    for row in rows:
        assert int(row["sent"]) > 0 and row["ok"] == row["sent"], row
        assert row["overwritten"] == "0" and row["bad"] == "0", row
    assert "(c)/(a) fps:" in output and "(c)/(b) fps:" in output

    # Its ring segments (named after its pid) and ipc socket directory are gone.
    assert not list(SHM_DIR.glob(f"zstream-bench{pid}-*"))
    assert not list(tmp_path.iterdir())


def test_capture_benchmark_quick_run_compares_with_ffmpeg() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/bench_capture.py", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("320x240")]
    assert [row[1] for row in rows] == ["1", "2"]  # one row per decoder thread count
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)  # ffmpeg fps, zstream fps
    assert re.search(r"worst zstream / ffmpeg: \d+\.\d\d", result.stdout)
    capped = re.search(r"uncapped 30 frames .* capped at 5 fps (\d+) frames", result.stdout)
    assert capped and capped.group(1) == "5"


def test_scale_benchmark_quick_run_prints_its_table(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/bench_scale.py", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| cameras |"))
    rows = [line for line in lines if line.startswith("| 2 |")]
    assert len(rows) == 1
    cells = dict(zip(header.split("|"), rows[0].split("|"), strict=True))
    assert float(cells[" decoded % "]) > 0 and float(cells[" delivered % "]) > 0
    assert float(cells[" decoded fps % of ceiling "]) > 0
    assert (tmp_path / "scale-file-quick.md").read_text().count("| 2 |") == 1
    # The baseline of the same run: FFmpeg's decode-only throughput of the clip on every core.
    ceiling = json.loads((tmp_path / "scale-file-quick.json").read_text())["ceiling"]
    assert ceiling["fps"] > 0 and ceiling["processes"] >= 1
    assert "Decode ceiling (baseline, same clip, same run)" in result.stdout


def test_output_benchmark_quick_run_compares_with_opencv_at_the_same_quality() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/bench_output.py", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if re.match(r"\| \d+x\d+ \|", line)]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [
        ("1280x720", "640x360"),
        ("1280x720", "1280x720"),
        ("1920x1080", "640x360"),
        ("1920x1080", "1920x1080"),
    ]
    for row in rows:  # decoded back, both paths are as close to the unencoded frame
        opencv, ours = (float(value) for value in row[5].split("/"))
        assert ours <= opencv + 0.5, row


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `scripts/<args>` with this Python; it must exit 0."""
    result = subprocess.run(
        [sys.executable, f"scripts/{args[0]}", *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_skip_loop_filter_benchmark_quick_run_measures_speed_and_quality() -> None:
    result = run_script("bench_skip_loop_filter.py", "--quick", timeout=180)
    speeds = re.findall(r"\| (pyav|ffmpeg) \| (\d+) \| (\d+) \| ([\d.]+)x \|", result.stdout)
    assert [name for name, *_ in speeds] == ["pyav", "ffmpeg"], result.stdout
    psnr = [float(m) for m in re.findall(r"\| \d+ \| ([\d.]+) \(", result.stdout)]
    # The option takes effect (the pictures differ from the full decode), and mildly.
    assert psnr and all(30 < value < 99 for value in psnr), result.stdout
    assert re.search(r"QC verdicts \(default thresholds\) that differ: \d+ of 60 frames", result.stdout)


def test_scale_benchmark_flat_out_quick_run_measures_throughput_against_the_ceiling(tmp_path: Path) -> None:
    result = run_script(
        "bench_scale.py", "--quick", "--flat-out", "--key-phases", "2", "--out", str(tmp_path), timeout=180
    )
    assert "read flat out (realtime = false)" in result.stdout
    assert "the cameras' key frames spread over 2 phases" in result.stdout
    # Flat out the files are read faster than real time: more than the 10 fps a camera plays.
    row = json.loads((tmp_path / "scale-flat-out-quick.json").read_text())["steps"][0]
    assert row["decoded"] > 100 and row["of_ceiling"] > 0 and not row["dropped"], row
    assert re.search(
        r"Flat out, the pipeline decoded, validated and delivered \d\.\d\d of the ceiling", result.stdout
    )


def quick_rows(script: str) -> list[list[str]]:
    """Run a benchmark script with --quick; the words of its table rows (those naming an input)."""
    result = run_script(script, "--quick", timeout=120)
    return [line.split() for line in result.stdout.splitlines() if line.startswith(("jpeg ", "raw "))]


def test_tensor_benchmark_quick_run_prints_a_row_per_input_and_the_fast_path_stays_faithful() -> None:
    rows = quick_rows("bench_tensor.py")
    assert [" ".join(row[:2]) for row in rows] == [
        "jpeg 1280x720",
        "raw 1280x720",
        "jpeg 1920x1080",
        "raw 1920x1080",
    ]
    for row in rows:
        assert float(row[-2]) > 28, row  # tensor() against the careful reference, in dB


def test_zmq_ingest_benchmark_quick_run_gets_every_frame_answered() -> None:
    rows = quick_rows("bench_zmq_ingest.py")  # the script exits non-zero on any reply but b"OK"
    assert [" ".join(row[:2]) for row in rows] == ["raw 1280x720", "jpeg q90", "raw 1920x1080", "jpeg q90"]


def test_stage_ceiling_benchmark_quick_run_measures_every_stage_and_the_batcher_writes_everything() -> None:
    result = run_script("bench_stages.py", "--quick", timeout=240)
    rows = dict(re.findall(r"\| ([^|]+?) \| ([\d.]+) \| [\d,]+ \| [^|]+ \|", result.stdout))
    for stage in (
        "capture: PyAV decode + copy into the ring of the frames sent",
        'capture: PyAV decode + copy of every frame (frames = "all")',
        'validate (frames = "all")',
        "batch (the single writer)",
    ):
        assert float(rows[stage]) > 0, result.stdout
    # Every frame fed reached Redis (the script fails otherwise) at a positive wall-clock rate.
    assert re.search(r"batch, wall clock: [\d,]+ frames/s written \(800 frames", result.stdout), result.stdout

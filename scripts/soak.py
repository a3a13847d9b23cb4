"""Soak: N synthetic cameras through `zstream up` for a while; does anything grow?

Samples every process of the pipeline (the supervisor and its workers) at a fixed interval:
resident memory, open file descriptors, threads, and the pipeline's shared memory. After the
warm-up, the first sample is the baseline; the run passes when RSS grew at most 5 %, file
descriptors and threads did not grow, and shared memory did not change.

    .venv/bin/python scripts/soak.py [--cameras 20] [--duration 600] [--warmup 60]

Bounded: it stops the pipeline after --duration seconds (SIGINT, then SIGKILL after 60 s).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from zstream.core.ring import SHM_DIR  # noqa: E402
from zstream.topology import load_topology  # noqa: E402

RSS_GROWTH_LIMIT = 0.05


@dataclass(frozen=True)
class Sample:
    t: float
    processes: int
    rss: int
    fds: int
    threads: int
    shm: int
    written: int  # frames written to Redis so far, from the supervisor's status file


def topology_text(run_dir: Path, stream: str, cameras: int) -> str:
    parts = [
        f'run_dir = "{run_dir}"',
        f'[redis]\nstream = "{stream}:frames"\nqc_stream = "{stream}:qc"\nmaxlen = 200\nqc_maxlen = 200',
        "[capture]\nworkers = 2",
        "[validation]\nworkers = 2",
        '[batcher]\nencoding = "jpeg"\njpeg_quality = 70',
        '[control]\nendpoint = "tcp://127.0.0.1:*"',
        '[tap]\nendpoint = "tcp://127.0.0.1:*"',
        '[metrics]\naddress = "127.0.0.1:0"',
    ]
    for index in range(cameras):
        url = f"synthetic://traffic?size=640x360&fps=10&seed={index}"
        parts.append(f'[[cameras]]\nid = "cam-{index:03d}"\nurl = "{url}"')
    return "\n\n".join(parts) + "\n"


def sample(root: psutil.Process, run_id: str, status_file: Path, started: float) -> Sample:
    processes = [root, *root.children(recursive=True)]
    rss = fds = threads = 0
    alive = 0
    for process in processes:
        try:
            with process.oneshot():
                rss += process.memory_info().rss
                fds += process.num_fds()
                threads += process.num_threads()
            alive += 1
        except psutil.Error:
            continue
    shm = sum(path.stat().st_size for path in SHM_DIR.glob(f"zstream-{run_id}-*"))
    return Sample(time.monotonic() - started, alive, rss, fds, threads, shm, frames_written(status_file))


def frames_written(status_file: Path) -> int:
    try:
        cameras = json.loads(status_file.read_text())["cameras"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(camera["written"] for camera in cameras.values())


def run(cameras: int, duration: float, warmup: float, interval: float) -> list[Sample]:
    stream = f"soak:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="zs-soak-", dir="/tmp") as workdir:
        topology_file = Path(workdir) / "soak.toml"
        topology_file.write_text(topology_text(Path(workdir) / "run", stream, cameras))
        run_id = load_topology(topology_file).run_id
        log = open(Path(workdir) / "soak.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen(
            [sys.executable, "-m", "zstream.cli", "up", str(topology_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        samples: list[Sample] = []
        started = time.monotonic()
        try:
            root = psutil.Process(process.pid)
            while time.monotonic() - started < duration and process.poll() is None:
                time.sleep(interval)
                now = sample(root, run_id, Path(workdir) / "run" / "status.json", started)
                if now.t >= warmup:
                    samples.append(now)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
            client = redis.Redis()
            client.delete(f"{stream}:frames", f"{stream}:qc")
            client.close()
        if process.returncode != 0 or not samples:
            print((Path(workdir) / "soak.log").read_text()[-3000:], file=sys.stderr)
            raise SystemExit(f"the pipeline exited with {process.returncode} after {len(samples)} samples")
    return samples


def verdict(samples: list[Sample]) -> tuple[bool, list[str]]:
    first, last = samples[0], samples[-1]
    growth = (last.rss - first.rss) / first.rss
    checks = [
        (
            growth <= RSS_GROWTH_LIMIT,
            f"RSS {first.rss / 2**20:.0f} -> {last.rss / 2**20:.0f} MiB ({growth:+.1%})",
        ),
        (max(s.fds for s in samples) <= first.fds, f"fds {first.fds} -> max {max(s.fds for s in samples)}"),
        (
            max(s.threads for s in samples) <= first.threads,
            f"threads {first.threads} -> max {max(s.threads for s in samples)}",
        ),
        (len({s.shm for s in samples}) == 1, f"shared memory {first.shm / 2**20:.1f} MiB, constant"),
        (last.written > first.written, f"frames written to Redis {first.written} -> {last.written}"),
    ]
    return all(ok for ok, _ in checks), [("ok   " if ok else "FAIL ") + text for ok, text in checks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds, warm-up included")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline sample")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args(argv)
    samples = run(args.cameras, args.duration, args.warmup, args.interval)
    print(
        f"soak: {args.cameras} cameras (640x360, 10 fps), {args.duration:.0f} s, warm-up {args.warmup:.0f} s"
    )
    print(f"{'t s':>6} {'procs':>5} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'shm MiB':>8} {'written':>8}")
    for s in samples:
        memory = f"{s.rss / 2**20:>8.1f} {s.fds:>5} {s.threads:>7} {s.shm / 2**20:>8.1f}"
        print(f"{s.t:>6.0f} {s.processes:>5} {memory} {s.written:>8}")
    passed, lines = verdict(samples)
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

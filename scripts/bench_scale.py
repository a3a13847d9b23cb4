"""Scale benchmark: N cameras of 720p H.264 at 10 fps, played in real time, through `zstream up`.

One 1280x720 H.264 clip of the synthetic traffic scene (10 fps, a key frame every 10 frames)
is made on the spot. For each step of the ramp (N cameras), a topology of N cameras all
playing that clip (`loop`, `realtime`; or, with --rtsp, all pulling it from one GStreamer
RTSP server, each client with its own pipeline) runs under `zstream up`; after a warm-up,
a measured window reports:

  decoded %    frames the capture decoded (`received`) / frames the sources produced
               (10 fps x N x seconds); below 100 % the decoders fall behind real time
  validated %  frames through validation / frames produced: measured, or (the default,
               validation.frames = "output") skipped as the output rate does not send them
  delivered %  frames written to the Redis batch stream / frames the output rate selected
               (5 of the 10 fps by default), i.e. written / (written + dropped after the
               selection), both from the batcher's counters; a frame that failed QC (counted)
               went to the QC stream instead
  drops        by stage:reason; QC-rejected frames (sent to the QC stream) separately
  lost         frames no counter accounts for over the whole run, from the pipeline's own
               report at exit (each ring counts what was written into it): 0, or a bug
  latency      capture -> Redis p50 / p99, interpolated in the buckets of the
               zstream_capture_to_redis_latency_seconds histogram (mean from its sum)
  CPU          of every pipeline process (supervisor and workers) over the window, in % of
               the machine and split by stage in % of one core; the Redis server and the
               RTSP server beside it; the machine's total, so other load shows
  memory       RSS of all pipeline processes (max over the window); the rings in /dev/shm

Baselines, from the same run on the same clip: the decode ceiling (one `ffmpeg -threads 1 -f null`
per core, all at once: what no pipeline here can exceed), and 20 bare PyAV decoders paced like
cameras (what capture's CPU per frame compares with). The report ends with the largest step that
met every target, as a share of the ceiling.

--flat-out reads the clip with `realtime = false` instead: every camera decodes as fast as the
pipeline lets it (the `wait` policy: nothing is dropped), so "decoded fps % of ceiling" is the
pipeline's throughput against FFmpeg's decode alone, on the same clip in the same run.

Every frame is decoded; the output rate (batcher.output_fps, output_width: 5 fps at 640 px
wide by default, JPEG) picks what goes to Redis, and validation measures those (and, with
validation.frames = "all", the others too), then scales and encodes what passed. A step
whose decoded % falls below --min-decoded stops early, and so does the ramp: the machine
is saturated. Results: a Markdown table (printed, and written to
--out with the raw figures as JSON) and a PNG plot if matplotlib is installed.

    .venv/bin/python scripts/bench_scale.py [--steps 10,25,50,75,100,150] [--window 30]
        [--warmup 10] [--rtsp] [--quick] [--out bench-results]

Loopback only; needs Redis (redis.url of the topology, --redis-url) and, for --rtsp,
GStreamer's RTSP server for the system python (scripts/setup --test).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import psutil
import redis
from av.video.frame import PictureType
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from zstream.core.ring import SHM_DIR  # noqa: E402
from zstream.sources.synthetic import TrafficScene  # noqa: E402
from zstream.topology import load_topology  # noqa: E402

SOURCE_FPS = 10
SIZE = (1280, 720)  # the camera; --size changes it (sizing at 1080p)
GOP = 10  # frames between key frames
STARTUP_TIMEOUT_S = 60.0  # from `zstream up` to every camera streaming, plus 0.2 s per camera
STOP_TIMEOUT_S = 45.0  # SIGINT, then SIGKILL of its process group (shutdown_timeout_s is 20)
# decoded % and validated % are rates over the window from counters read while they change; below
# saturation, where no frame is dropped between them, the two differ by up to this much (10
# cameras, 30 s). Whether a frame was dropped is exact: the drop counters.
RATE_RESOLUTION = 0.5
TARGET_LATENCY_MS = 220  # p99 target: the default batch timeout (200 ms) + 20 ms
PROFILE_S = 10.0  # --profile: seconds of each worker's profile
# Counters, RSS, liveness and the early stop are read this often in the window. Not a divisor of
# the clip's 1 s key-frame period: the cameras play the same clip in step, so their key frames
# (each ~10x a P-frame's decoding) come in bursts that the decoders catch up on within the
# second; readings at one phase of that burst would bias the rates by up to +-0.5 %.
SAMPLE_S = 0.37
# Memory is read this often: smaps_rollup walks every page each worker maps, the rings included
# (60 cameras: ~1.3 GB); read at every sample, the CPU outside the pipeline at 60 cameras was 6 % of
# the machine, 3 % with this (Redis: 1 % of a core).
MEMORY_S = 3.0
STATS_INTERVAL_S = 0.2  # how often workers report: a counter is at most this old when read
EARLY_STOP_AFTER_S = 10.0  # the window's first seconds are not judged (reports lag a second)
PACED_THREADS = 20  # bare decoders paced like cameras, the baseline of capture's cost per frame
PACED_S = 10.0  # how long they run (QUICK_PACED_S with --quick)
QUICK_PACED_S = 2.0
STAGES = ("capture", "validate", "batch", "supervisor")
PLOT_MISSING = "matplotlib is not installed: no plot (`.venv/bin/pip install matplotlib`)"


def cores() -> int:
    """The CPUs this script (and every process it starts) may run on: all, or --cores's."""
    return len(os.sched_getaffinity(0))


# ---- the clip --------------------------------------------------------------------------------


def make_clip(path: Path, seconds: float, size: tuple[int, int] = SIZE, phase: int = 0) -> Path:
    """An H.264 clip of the traffic scene at 10 fps, a key frame every 10 frames, no B-frames.
    With `phase` k > 0 the key frames are at frames k, k + 10, ... (and 0: a stream starts with one)."""
    scene = TrafficScene(*size, seed=7, vehicles=8, label="scale", fps=SOURCE_FPS)
    params = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            "libx264", rate=SOURCE_FPS, options={"preset": "veryfast", "x264-params": params}
        )
        (stream.width, stream.height), stream.pix_fmt = size, "yuv420p"
        for index in range(round(seconds * SOURCE_FPS)):
            frame = av.VideoFrame.from_ndarray(scene.render(index), format="yuv420p")
            frame.pts = index
            if phase and index and (index - phase) % GOP == 0:
                frame.pict_type = PictureType.I
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@dataclass
class Ceiling:
    """The baseline of the run: what FFmpeg's decoder alone gets through this clip on this machine."""

    fps: float  # frames per second, all cores together
    processes: int
    paced_ms: float = 0.0  # CPU per frame of bare PyAV decoders paced like cameras (paced_decode)
    paced_threads: int = 0

    @property
    def flat_out_ms(self) -> float:
        """CPU per frame of the ffmpeg decoders, flat out (every core busy)."""
        return 1000 * self.processes / self.fps

    @property
    def cameras(self) -> float:
        return self.fps / SOURCE_FPS


def make_clips(workdir: Path, seconds: float, size: tuple[int, int], phases: int) -> list[Path]:
    """The clip once per key-frame phase (see --key-phases); camera i plays clip i % phases."""
    return [make_clip(workdir / f"clip-{phase}.mp4", seconds, size, phase) for phase in range(phases)]


def decode_ceiling(clips: list[Path], passes: int) -> Ceiling:
    """Decode-only throughput: one `ffmpeg -threads 1 -f null` per core, all at once, each playing
    the clips, one after the other, `passes` times. No pipeline on this machine can decode more
    cameras than this: it has no copy, no validation, no output and no other process to share
    the cores with."""
    frames = 0
    for clip in clips:
        with av.open(str(clip)) as container:
            frames += sum(1 for _ in container.demux(video=0)) - 1  # less the final empty packet
    playlist = clips[0].with_name("ceiling.txt")
    playlist.write_text("".join(f"file '{clip}'\n" for clip in clips * passes))
    command = ["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", "-f", "concat", "-safe", "0"]
    command += ["-i", str(playlist), "-f", "null", "-"]
    count = cores()
    started = time.perf_counter()
    running = [subprocess.Popen(command) for _ in range(count)]
    if any(process.wait(600) for process in running):
        raise RuntimeError(f"ffmpeg failed on {playlist}: {' '.join(command)}")
    return Ceiling(count * passes * frames / (time.perf_counter() - started), count)


def paced_decode(clips: list[str], threads: int, seconds: float) -> tuple[int, float]:
    """Run in a process of its own: `threads` bare PyAV decoders of the clips, each paced at the
    clip's rate as a camera delivers it, for `seconds`; (frames decoded, CPU seconds used).
    Between two frames of one camera the others run, so each decode starts with cold caches:
    this, not ffmpeg flat out, is what the capture stage's cost per frame compares with."""
    done: list[int] = []

    def camera(clip: str) -> None:
        started, frames = time.monotonic(), 0
        with av.open(clip) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            while frames < seconds * SOURCE_FPS:
                for frame in container.decode(stream):
                    frames += 1
                    frame.planes  # noqa: B018 - what a consumer of the picture touches first
                    time.sleep(max(0.0, started + frames / SOURCE_FPS - time.monotonic()))
                    if frames >= seconds * SOURCE_FPS:
                        break
                container.seek(0)
        done.append(frames)

    before = resource.getrusage(resource.RUSAGE_SELF)
    running = [threading.Thread(target=camera, args=(clips[i % len(clips)],)) for i in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return sum(done), (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def paced_cost(clips: list[Path], threads: int, seconds: float) -> float:
    """ms of CPU per frame of paced_decode, in a fresh interpreter (nothing else in its rusage)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        frames, cpu = pool.apply(paced_decode, ([str(clip) for clip in clips], threads, seconds))
    return 1000 * cpu / max(1, frames)


def sustained(results: list[StepResult]) -> StepResult | None:
    """The largest step that met every target, below the first that did not: no frame dropped
    at any stage, delivered >= 99.9 % and nothing lost (exact, from the counters), p99 latency
    within the target, and the decoders keeping pace with the cameras: decoded and validated
    >= 100 % - RATE_RESOLUTION (rates over the window, whose resolution that is)."""
    best = None
    for r in results:
        pace = min(r.decoded, r.validated) >= 100 - RATE_RESOLUTION
        exact = not r.dropped and r.delivered >= 99.9 and r.lost == 0
        if r.failed or not (pace and exact) or r.latency_p99_ms is None:
            break
        if r.latency_p99_ms > TARGET_LATENCY_MS:
            break
        best = r
    return best


@contextlib.contextmanager
def rtsp_source(clip: Path) -> Iterator[tuple[str, int]]:
    """Serve the clip, looped, from scripts/rtsp_server.py; yield (its URL, its pid)."""
    from tests.rtsp import rtsp_server  # the system python with GStreamer runs it

    before = {p.pid for p in psutil.Process().children()}
    with rtsp_server(file=clip, loop=True) as url:
        started = [p.pid for p in psutil.Process().children() if p.pid not in before]
        yield url, started[0] if started else 0


# ---- one step ----------------------------------------------------------------------------------


@dataclass
class Options:
    redis_url: str
    capture_workers: int
    validation_workers: int
    output_fps: float  # 0: every frame
    output_width: int  # 0: unscaled
    jpeg_quality: int
    window: float
    warmup: float
    min_decoded: float
    capture_nice: int | None = None  # capture.nice; None: the topology's default
    size: tuple[int, int] = SIZE
    profile: Path | None = None  # write py-spy profiles of every worker here (the window's first 10 s)
    realtime: bool = True  # False: flat out (the files read as fast as the pipeline takes them)
    key_phases: int = 1  # the cameras' key frames at this many phases of the GOP (1: all in step)


def topology_text(run_dir: Path, stream: str, cameras: list[str], options: Options) -> str:
    parts = [
        f'run_dir = "{run_dir}"',
        f'[redis]\nurl = "{options.redis_url}"\nstream = "{stream}:frames"\nqc_stream = "{stream}:qc"\n'
        "maxlen = 100\nqc_maxlen = 1000",
        f'[capture]\nworkers = {options.capture_workers}\nmax_size = "{options.size[0]}x{options.size[1]}"'
        + ("" if options.capture_nice is None else f"\nnice = {options.capture_nice}"),
        f"[validation]\nworkers = {options.validation_workers}",
        f"[supervisor]\nstats_interval_s = {STATS_INTERVAL_S}",
        f'[batcher]\nencoding = "jpeg"\njpeg_quality = {options.jpeg_quality}\n'
        f"output_fps = {options.output_fps}\noutput_width = {options.output_width}",
        '[control]\nendpoint = "tcp://127.0.0.1:*"',
        '[tap]\nendpoint = "tcp://127.0.0.1:*"',
        '[metrics]\naddress = "127.0.0.1:0"',
    ]
    for index, url in enumerate(cameras):
        camera = [f'id = "cam-{index:03d}"', f"url = {json.dumps(url)}"]
        if not url.startswith("rtsp://"):
            camera += ["loop = true", f"realtime = {'true' if options.realtime else 'false'}"]
        parts.append("[[cameras]]\n" + "\n".join(camera))
    return "\n\n".join(parts) + "\n"


@dataclass
class Snapshot:
    """One reading of the pipeline: its counters (from /metrics), and what it costs."""

    uptime: float
    counters: dict[str, float]  # received, captured, validated, rejected, written, skipped
    dropped: dict[str, float]  # "stage:reason" -> frames
    latency: dict[float, float]  # bucket upper bound (s) -> cumulative count
    latency_sum: float
    cpu: dict[int, tuple[str, float]]  # pid -> (stage, user + system seconds)
    machine: tuple[float, float]  # (busy, total) seconds of every CPU
    extra_cpu: dict[str, float]  # "redis", "rtsp" -> CPU seconds of those processes


@dataclass
class StepResult:
    cameras: int
    seconds: float = 0.0  # the measured window, by the pipeline's own clock
    decoded: float = 0.0  # %
    of_ceiling: float = 0.0  # frames decoded per second, in % of the run's decode ceiling
    validated: float = 0.0
    delivered: float = 0.0
    rejected: int = 0  # frames that failed QC (to the QC stream, not the batch stream)
    skipped: int = 0  # frames over the fps cap (by design)
    dropped: dict[str, int] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    cpu_machine: float = 0.0  # % of the machine, pipeline processes
    cpu_by_stage: dict[str, float] = field(default_factory=dict)  # % of one core
    # CPU ms per frame each stage handled: capture per frame decoded, validate per frame
    # validated, batch per frame written (its JPEG encoding, the Redis write)
    cpu_ms_per_frame: dict[str, float] = field(default_factory=dict)
    cpu_redis: float | None = None  # % of one core
    cpu_rtsp: float | None = None
    cpu_machine_total: float = 0.0  # % of the machine, everything that ran
    # Both without shared memory (the rings: shm_mib). RSS sums count what processes share
    # (libraries) once per process; PSS splits shared pages between them, so it is a true total.
    rss_mib: float = 0.0
    pss_mib: float = 0.0
    shm_mib: float = 0.0
    streaming: int = 0  # cameras streaming at the end of the window
    lost: int | None = None  # frames no counter accounts for, whole run (the pipeline's exit report)
    note: str = ""
    failed: bool = False


def scrape(address: str) -> tuple[float, dict[str, float], dict[str, float], dict[float, float], float]:
    """(uptime, frame counters, drops by stage:reason, latency buckets, latency sum) from /metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    counters: dict[str, float] = defaultdict(float)
    dropped: dict[str, float] = defaultdict(float)
    buckets: dict[float, float] = defaultdict(float)
    uptime = latency_sum = 0.0
    names = {f"zstream_frames_{what}_total": what for what in ("received", "captured", "validated")}
    names |= {f"zstream_frames_{what}_total": what for what in ("rejected", "written", "skipped")}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                counters[names[sample.name]] += sample.value
            elif sample.name == "zstream_frames_dropped_total":
                dropped[f"{sample.labels['stage']}:{sample.labels['reason']}"] += sample.value
            elif sample.name == "zstream_capture_to_redis_latency_seconds_bucket":
                buckets[float(sample.labels["le"])] += sample.value
            elif sample.name == "zstream_capture_to_redis_latency_seconds_sum":
                latency_sum = sample.value
            elif sample.name == "zstream_uptime_seconds":
                uptime = sample.value
    # Frames through validation: measured, or skipped by the output rate (validation.frames =
    # "output" measures only what is sent on).
    counters["through"] = counters["validated"] + counters["skipped"]
    return uptime, dict(counters), dict(dropped), dict(buckets), latency_sum


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, linear within its bucket (as PromQL's
    histogram_quantile); the last finite bound when it falls in the +Inf bucket."""
    bounds = sorted(buckets)
    count = buckets.get(float("inf"), 0.0)
    if count <= 0:
        return None
    rank, lower, below = q * count, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, buckets[bound]
    return lower


def proc_fields(path: str) -> dict[str, int]:
    """The "Name:   123 kB" lines of a /proc file, in bytes."""
    fields = {}
    with open(path) as lines:
        for line in lines:
            name, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[name] = int(parts[0]) * 1024
    return fields


def processes(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


def stage_of(pid: int, root_pid: int, workers: dict[str, int]) -> str:
    if pid == root_pid:
        return "supervisor"
    for name, worker_pid in workers.items():
        if worker_pid == pid:
            return name.rpartition("-")[0]
    return "other"


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def find_redis(url: str) -> psutil.Process | None:
    """The local redis-server serving `url`, to count its CPU beside the pipeline's (or None)."""
    port = str(redis.connection.parse_url(url).get("port", 6379))
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "redis-server":
            found.append(process)
            if any(part.endswith(f":{port}") or part == port for part in process.info["cmdline"] or []):
                return process
    return found[0] if len(found) == 1 else None


class Step:
    """One `zstream up` of N cameras: start, warm up, measure, stop, clean up."""

    def __init__(self, workdir: Path, cameras: list[str], options: Options, extra: dict[str, int]) -> None:
        self.n = len(cameras)
        self.options = options
        self.extra = extra  # "redis", "rtsp" -> pid of a process whose CPU is reported beside
        self.dir = Path(tempfile.mkdtemp(prefix=f"step-{self.n}-", dir=workdir))
        self.run_dir = self.dir / "run"
        self.stream = f"bench-scale:{uuid.uuid4().hex[:8]}"
        self.topology_file = self.dir / "scale.toml"
        self.topology_file.write_text(topology_text(self.run_dir, self.stream, cameras, options))
        self.run_id = load_topology(self.topology_file).run_id
        self.log_file = self.dir / "zstream.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.root: psutil.Process | None = None
        self.metrics = ""

    def run(self) -> StepResult:
        result = StepResult(self.n)
        try:
            self._start()
            streaming = self._wait_streaming()
            if streaming < self.n:
                result.note = f"only {streaming}/{self.n} cameras streaming after start-up; "
            time.sleep(self.options.warmup)
            profiles = self._start_profiles() if self.options.profile else []
            self._measure(result)
            if profiles:
                result.note += "profiled (py-spy at 100 Hz) during the window; "
                print(summarise_profiles(profiles), file=sys.stderr)
        except (RuntimeError, OSError, psutil.Error) as exc:
            result.failed = True
            result.note += str(exc)
        finally:
            self._stop(result)
        return result

    def _start(self) -> None:
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "zstream.cli", "up", str(self.topology_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                start_new_session=True,  # a Ctrl-C meant for this script reaches it through _stop only
            )
        self.root = psutil.Process(self.process.pid)

    def _start_profiles(self) -> list[tuple[str, Path, subprocess.Popen[bytes]]]:
        """py-spy record of every worker for the window's first seconds, in the background:
        (worker, its raw stacks file, the py-spy process). Capture is sampled only while a
        thread holds the GIL (--gil), else its dozens of threads waiting for it would dominate."""
        assert self.options.profile is not None
        self.options.profile.mkdir(parents=True, exist_ok=True)
        started = []
        seconds = str(int(min(PROFILE_S, self.options.window)))
        for name, row in read_status(self.run_dir).get("workers", {}).items():
            path = self.options.profile / f"profile-{self.n}-{name}.txt"
            command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(row["pid"])]
            command += ["--duration", seconds, "--rate", "100", "--format", "raw", "--output", str(path)]
            command += ["--gil"] if name.startswith("capture") else []
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started.append((name, path, process))
        return started

    def _alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"zstream up exited with {self.process.returncode}: see {self.log_file}")

    def _wait_streaming(self) -> int:
        """Wait for /metrics and for every camera to stream; how many do."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S + 0.2 * self.n
        streaming = 0
        while time.monotonic() < deadline:
            self._alive()
            status = read_status(self.run_dir)
            self.metrics = status.get("endpoints", {}).get("metrics", "")
            cameras = status.get("cameras", {}).values()
            streaming = sum(1 for camera in cameras if camera.get("state") == "streaming")
            if self.metrics and streaming == self.n:
                return streaming
            time.sleep(0.5)
        if not self.metrics:
            raise RuntimeError(f"no metrics endpoint within the start-up timeout: see {self.log_file}")
        return streaming

    def _snapshot(self) -> Snapshot:
        assert self.root is not None
        uptime, counters, dropped, latency, latency_sum = scrape(self.metrics)
        workers = {
            name: row["pid"]
            for name, row in read_status(self.run_dir).get("workers", {}).items()
            if row["pid"]
        }
        cpu = {}
        for process in processes(self.root):
            with contextlib.suppress(psutil.Error):
                cpu[process.pid] = (stage_of(process.pid, self.root.pid, workers), cpu_seconds(process))
        extra = {}
        for name, pid in self.extra.items():
            with contextlib.suppress(psutil.Error):
                extra[name] = cpu_seconds(psutil.Process(pid))
        times = psutil.cpu_times()
        busy = times.user + times.nice + times.system + times.irq + times.softirq + times.steal
        total_s = busy + times.idle + times.iowait
        return Snapshot(uptime, counters, dropped, latency, latency_sum, cpu, (busy, total_s), extra)

    def _memory(self) -> tuple[int, int]:
        """(RSS, PSS) summed over the pipeline's processes, without their shared memory (the
        rings, reported on their own): anonymous and file-backed pages, from /proc."""
        assert self.root is not None
        rss = pss = 0
        for process in processes(self.root):
            with contextlib.suppress(OSError):
                status = proc_fields(f"/proc/{process.pid}/status")
                rollup = proc_fields(f"/proc/{process.pid}/smaps_rollup")
                rss += status.get("RssAnon", 0) + status.get("RssFile", 0)
                pss += rollup.get("Pss_Anon", 0) + rollup.get("Pss_File", 0)
        return rss, pss

    def _measure(self, result: StepResult) -> None:
        self._alive()
        samples = [self._snapshot()]
        started = time.monotonic()
        rss, pss = self._memory()
        memory_read = started
        while (elapsed := time.monotonic() - started) < self.options.window:
            time.sleep(min(SAMPLE_S, self.options.window - elapsed))
            self._alive()
            if time.monotonic() - memory_read >= MEMORY_S:
                rss, pss = (max(pair) for pair in zip((rss, pss), self._memory(), strict=True))
                memory_read = time.monotonic()
            samples.append(self._snapshot())
            if time.monotonic() - started >= min(EARLY_STOP_AFTER_S, self.options.window / 2):
                decoded = self._share(samples, "received", SOURCE_FPS)
                if decoded is not None and decoded < self.options.min_decoded:
                    result.note += (
                        f"stopped after {samples[-1].uptime - samples[0].uptime:.0f} s: saturated; "
                    )
                    break
        shm = sum(path.stat().st_size for path in SHM_DIR.glob(f"zstream-{self.run_id}-*"))
        streaming = read_status(self.run_dir).get("cameras", {}).values()
        self._fill(result, samples, (rss, pss), shm)
        result.streaming = sum(1 for camera in streaming if camera.get("state") == "streaming")
        if result.streaming < self.n:
            result.note += f"{result.streaming}/{self.n} cameras streaming at the end; "

    def _share(self, samples: list[Snapshot], counter: str, fps: float) -> float | None:
        """The rate of `counter` over the samples, in % of `fps` frames per second per camera.

        A least-squares slope against the pipeline's uptime: workers report every
        stats_interval_s, so a count is up to that old, and two readings alone would be off by
        that much."""
        points = sorted({s.uptime: s.counters.get(counter, 0.0) for s in samples}.items())
        if len(points) < 2:
            return None
        times, counts = zip(*points, strict=True)
        mean_t, mean_c = sum(times) / len(times), sum(counts) / len(counts)
        spread = sum((t - mean_t) ** 2 for t in times)
        rate = sum((t - mean_t) * (c - mean_c) for t, c in points) / spread
        return 100.0 * rate / (fps * self.n)

    @staticmethod
    def _delivered(first: Snapshot, last: Snapshot) -> float:
        """Written / (written + dropped after the output rate selected them), in the window: the
        frames the output rate selected that reached Redis. The batcher reports both counts at
        once, so unlike two rates from different workers they are never out of step. (Frames no
        counter accounts for would escape this: `lost`, from the pipeline's exit, checks that.)"""
        written = last.counters.get("written", 0.0) - first.counters.get("written", 0.0)
        dropped = sum(
            n - first.dropped.get(reason, 0.0)
            for reason, n in last.dropped.items()
            if reason.startswith("batch:") or reason == "validate:batcher_full"
        )
        return 100.0 * written / (written + dropped) if written + dropped > 0 else 0.0

    def _fill(self, result: StepResult, samples: list[Snapshot], memory: tuple[int, int], shm: int) -> None:
        first, last = samples[0], samples[-1]
        seconds = last.uptime - first.uptime
        if seconds <= 0:
            raise RuntimeError("the pipeline's counters did not move during the window")
        result.seconds = seconds
        result.decoded = self._share(samples, "received", SOURCE_FPS) or 0.0
        result.validated = self._share(samples, "through", SOURCE_FPS) or 0.0
        result.delivered = self._delivered(first, last)

        def delta(now: dict[Any, float], then: dict[Any, float], key: Any) -> float:
            return now.get(key, 0.0) - then.get(key, 0.0)

        result.rejected = round(delta(last.counters, first.counters, "rejected"))
        result.skipped = round(delta(last.counters, first.counters, "skipped"))
        drops = {reason: round(delta(last.dropped, first.dropped, reason)) for reason in last.dropped}
        result.dropped = {reason: n for reason, n in sorted(drops.items()) if n}
        buckets = {bound: delta(last.latency, first.latency, bound) for bound in last.latency}
        p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
        result.latency_p50_ms = None if p50 is None else p50 * 1000
        result.latency_p99_ms = None if p99 is None else p99 * 1000
        count = buckets.get(float("inf"), 0.0)
        result.latency_mean_ms = (last.latency_sum - first.latency_sum) * 1000 / count if count else None

        # CPU over the pipeline's own clock would mix clocks: use the wall time between readings.
        wall = (last.machine[1] - first.machine[1]) / cores()
        by_stage: dict[str, float] = defaultdict(float)
        for pid, (stage, spent) in last.cpu.items():
            before = first.cpu.get(pid, (stage, 0.0))[1]  # a process started meanwhile: all of it
            by_stage[stage] += spent - before
        result.cpu_by_stage = {stage: 100.0 * by_stage.get(stage, 0.0) / wall for stage in STAGES}
        result.cpu_machine = 100.0 * sum(by_stage.values()) / wall / cores()
        for stage, counter in (("capture", "received"), ("validate", "through"), ("batch", "written")):
            frames = delta(last.counters, first.counters, counter)
            if frames > 0:
                result.cpu_ms_per_frame[stage] = 1000.0 * by_stage.get(stage, 0.0) / frames
        result.cpu_machine_total = 100.0 * (last.machine[0] - first.machine[0]) / wall / cores()
        for name in self.extra:
            if name in first.extra_cpu and name in last.extra_cpu:
                setattr(result, f"cpu_{name}", 100.0 * (last.extra_cpu[name] - first.extra_cpu[name]) / wall)
        result.rss_mib, result.pss_mib = (value / 2**20 for value in memory)
        result.shm_mib = shm / 2**20

    def _stop(self, result: StepResult) -> None:
        """SIGINT (drain), then SIGKILL of the process group; delete the streams, check the rings."""
        if self.process is not None and self.root is not None:
            family = processes(self.root)  # psutil handles: a recycled pid is never mistaken for them
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                result.note += f"did not stop within {STOP_TIMEOUT_S:.0f} s: killed; "
            for process in family:  # the supervisor if it hangs, and any worker it left behind
                with contextlib.suppress(psutil.Error):
                    process.kill()
            self.process.wait()
            with contextlib.suppress(OSError):
                found = re.search(r"final: unaccounted (\d+)", self.log_file.read_text())
                result.lost = int(found.group(1)) if found else None
        client = redis.Redis.from_url(self.options.redis_url)
        try:
            client.delete(f"{self.stream}:frames", f"{self.stream}:qc")
        except redis.RedisError as exc:
            result.note += f"could not delete the streams: {exc}; "
        finally:
            client.close()
        leaked = list(SHM_DIR.glob(f"zstream-{self.run_id}-*"))
        if leaked:
            result.note += f"{len(leaked)} ring(s) left in /dev/shm, removed; "
            for path in leaked:
                path.unlink(missing_ok=True)


def summarise_profiles(profiles: list[tuple[str, Path, subprocess.Popen[bytes]]], top: int = 8) -> str:
    """Per worker, the functions where its samples were (own time), in % of its samples."""
    lines = []
    for name, path, process in profiles:
        try:
            process.wait(PROFILE_S + 30)
            stacks = path.read_text().splitlines()
        except (subprocess.TimeoutExpired, OSError) as exc:
            process.kill()
            lines.append(f"profile of {name}: none ({exc})")
            continue
        own: dict[str, int] = defaultdict(int)
        for stack in stacks:
            frames, _, count = stack.rpartition(" ")
            own[frames.rpartition(";")[2]] += int(count)
        total = sum(own.values()) or 1
        ranked = sorted(own.items(), key=lambda item: -item[1])[:top]
        lines.append(f"profile of {name} ({total} samples, {path}):")
        lines += [f"  {100 * n / total:5.1f} %  {where}" for where, n in ranked]
    return "\n".join(lines)


# ---- the ramp, the table, the plot -------------------------------------------------------------


def ramp(
    steps: list[int], options: Options, rtsp: bool, clip_seconds: float, passes: int, paced_s: float
) -> tuple[Ceiling, list[StepResult]]:
    results: list[StepResult] = []
    with tempfile.TemporaryDirectory(prefix="zs-scale-", dir="/tmp") as workdir:
        clips = make_clips(Path(workdir), clip_seconds, options.size, options.key_phases)
        ceiling = decode_ceiling(clips, passes)
        ceiling.paced_threads = PACED_THREADS
        ceiling.paced_ms = paced_cost(clips, PACED_THREADS, paced_s)
        print(
            f"ceiling: ffmpeg decodes {ceiling.fps:.0f} fps = {ceiling.cameras:.0f} cameras", file=sys.stderr
        )
        with contextlib.ExitStack() as stack:
            extra: dict[str, int] = {}
            urls = [str(clip) for clip in clips]
            if rtsp:
                url, pid = stack.enter_context(rtsp_source(clips[0]))
                urls, extra["rtsp"] = [url], pid
            redis_server = find_redis(options.redis_url)
            if redis_server is not None:
                extra["redis"] = redis_server.pid
            for n in steps:
                cameras = [urls[i % len(urls)] for i in range(n)]
                print(f"step: {n} cameras ...", file=sys.stderr, flush=True)
                step = Step(Path(workdir), cameras, options, extra)
                result = step.run()
                result.of_ceiling = result.decoded * n * SOURCE_FPS / ceiling.fps
                results.append(result)
                print(row(result), file=sys.stderr, flush=True)
                if result.failed:
                    with contextlib.suppress(OSError):
                        print(step.log_file.read_text()[-3000:], file=sys.stderr)
                    break
                if result.decoded < options.min_decoded:
                    result.note += f"decoded < {options.min_decoded:.0f} %: ramp stopped"
                    break
    return ceiling, results


HEADER = (
    "cameras",
    "decoded %",
    "decoded fps % of ceiling",
    "validated %",
    "delivered %",
    "drops (stage:reason)",
    "lost",
    "QC rejected",
    "latency p50 / p99 (mean) ms",
    "CPU % machine (all)",
    "CPU % of a core: capture / validate / batch / sup.",
    "CPU ms/frame: capture / validate / batch",
    "Redis CPU %",
    "RTSP server CPU %",
    "RSS / PSS MiB excl. shm",
    "shm MiB",
    "note",
)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def cells(r: StepResult) -> list[str]:
    drops = ", ".join(f"{reason} {n}" for reason, n in r.dropped.items()) or "none"
    stages = " / ".join(f"{r.cpu_by_stage.get(stage, 0.0):.0f}" for stage in STAGES)
    return [
        f"{r.cameras}",
        f"{r.decoded:.1f}",
        f"{r.of_ceiling:.0f}",
        f"{r.validated:.1f}",
        f"{r.delivered:.1f}",
        drops,
        "n/a" if r.lost is None else f"{r.lost}",
        f"{r.rejected}",
        f"{_ms(r.latency_p50_ms)} / {_ms(r.latency_p99_ms)} ({_ms(r.latency_mean_ms)})",
        f"{r.cpu_machine:.0f} ({r.cpu_machine_total:.0f})",
        stages,
        " / ".join(f"{r.cpu_ms_per_frame.get(stage, 0.0):.2f}" for stage in STAGES[:3]),
        "n/a" if r.cpu_redis is None else f"{r.cpu_redis:.0f}",
        "n/a" if r.cpu_rtsp is None else f"{r.cpu_rtsp:.0f}",
        f"{r.rss_mib:.0f} / {r.pss_mib:.0f}",
        f"{r.shm_mib:.1f}",
        (r.note.strip().rstrip(";") or "").replace("|", "/"),
    ]


def row(result: StepResult) -> str:
    return "| " + " | ".join(cells(result)) + " |"


def table(results: list[StepResult]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + [row(r) for r in results])


def verdict(ceiling: Ceiling, results: list[StepResult]) -> str:
    """The run in two sentences: the baseline, and how close the pipeline came to it."""
    line = (
        f"Decode ceiling (baseline, same clip, same run): {ceiling.processes} x `ffmpeg -threads 1 -f null` "
        f"at once decode {ceiling.fps:.0f} fps, {ceiling.cameras:.0f} cameras at {SOURCE_FPS} fps, "
        "with no copy, validation or output. "
        f"CPU per frame: {ceiling.flat_out_ms:.2f} ms for ffmpeg flat out; {ceiling.paced_ms:.2f} ms for "
        f"{ceiling.paced_threads} bare PyAV decoders in one process, each paced at {SOURCE_FPS} fps like "
        "a camera (the baseline of capture's ms/frame: the decode alone, interleaved, caches cold). "
    )
    if results and results[0].decoded > 100 + RATE_RESOLUTION:  # flat out: throughput is the figure
        best_run = max(results, key=lambda r: r.of_ceiling)
        return line + (
            f"Flat out, the pipeline decoded, validated and delivered {best_run.of_ceiling / 100:.2f} of "
            f"the ceiling's frames per second (best step: {best_run.cameras} cameras)."
        )
    best = sustained(results)
    if best is None:
        return line + "No step met every target."
    return line + (
        f"Largest step meeting every target (no frame dropped, decoders keeping pace: decoded and "
        f"validated >= {100 - RATE_RESOLUTION:g} %, the rates' resolution; delivered >= 99.9 %; "
        f"p99 <= {TARGET_LATENCY_MS} ms; nothing lost): {best.cameras} cameras, "
        f"{best.cameras / ceiling.cameras:.2f} of the ceiling."
    )


def key_phases(options: Options) -> str:
    if options.key_phases == 1:
        return "every camera's key frames at once"
    return f"the cameras' key frames spread over {options.key_phases} phases"


def describe(options: Options, mode: str) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rate = f"{options.output_fps:g} fps" if options.output_fps else f"every frame ({SOURCE_FPS} fps)"
    width, height = options.size
    output = rate + (f", {options.output_width} px wide" if options.output_width else f", {width}x{height}")
    return (
        f"Scale benchmark ({mode} cameras), run of {when} on {platform.node()} "
        f"({cores()} CPUs, {platform.machine()}, Python {platform.python_version()}): "
        f"{width}x{height} H.264 at {SOURCE_FPS} fps "
        f"{'in real time' if options.realtime else 'read flat out (realtime = false)'} "
        f"(key frame every {GOP}, {key_phases(options)}), "
        f"{options.capture_workers} capture / {options.validation_workers} validation workers "
        f"(capture.nice {'19, the default' if options.capture_nice is None else options.capture_nice}), "
        f"output {output} as JPEG q{options.jpeg_quality} (after validation); "
        f"{options.warmup:g} s warm-up, {options.window:g} s window per step.\n\n"
        "decoded % = frames decoded by capture / frames produced (10 fps x N x s); validated % = "
        "frames through validation (measured, or skipped by the output rate) / frames produced; "
        "delivered % = frames written to the Redis batch stream "
        "/ frames the output rate selected (written + dropped after it). CPU % machine: pipeline "
        "processes in % of all CPUs (everything that ran, other load included, in brackets); by "
        "stage in % of one core; ms/frame: capture per frame decoded, validate per frame through it, "
        "batch per frame written. Memory without shared memory (the rings: shm MiB): RSS sums count "
        "shared library pages once per process; PSS splits them, so it is the true total. Latency: "
        "capture (frame in shared memory) to Redis, interpolated in the histogram's buckets (..., "
        "150, 200, 220, 250, 300 ms ...), mean exact."
    )


def plot(path: Path, results: dict[str, list[StepResult]], ceiling: Ceiling) -> str:
    """delivered % (and decoded %), latency and CPU against camera count; '' or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return PLOT_MISSING
    figure, (rates, latency, cpu) = plt.subplots(1, 3, figsize=(15, 4.5))
    for index, (mode, rows) in enumerate(results.items()):
        if not rows:
            continue
        x, color = [r.cameras for r in rows], f"C{index}"  # one colour per kind of camera
        rates.plot(x, [r.delivered for r in rows], "o-", color=color, label=f"delivered ({mode})")
        rates.plot(x, [r.decoded for r in rows], "s--", color=color, label=f"decoded ({mode})")
        p50 = [r.latency_p50_ms for r in rows]
        p99 = [r.latency_p99_ms for r in rows]
        nan = float("nan")
        latency.plot(x, [v or nan for v in p50], "o-", color=color, label=f"p50 ({mode})")
        latency.plot(x, [v or nan for v in p99], "^--", color=color, label=f"p99 ({mode})")
        cpu.plot(x, [r.cpu_machine for r in rows], "o-", color=color, label=f"pipeline ({mode})")
        cpu.plot(x, [r.cpu_machine_total for r in rows], ":", color=color, label=f"machine total ({mode})")
    rates.axhline(99.9, color="grey", linewidth=0.8, linestyle=":", label="target 99.9 %")
    rates.axvline(
        ceiling.cameras, color="black", linewidth=0.8, linestyle="-.", label="ffmpeg decode ceiling"
    )
    latency.axhline(TARGET_LATENCY_MS, color="grey", linewidth=0.8, linestyle=":", label="target p99")
    rates.set(title="frames", xlabel="cameras", ylabel="%", ylim=(0, 110))
    latency.set(title="capture -> Redis latency", xlabel="cameras", ylabel="ms", yscale="log")
    cpu.set(title="CPU", xlabel="cameras", ylabel="% of the machine", ylim=(0, 105))
    for axes in (rates, latency, cpu):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return ""


def load_results(path: Path) -> list[StepResult]:
    try:
        return [StepResult(**row) for row in json.loads(path.read_text())["steps"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", help="camera counts, comma-separated (10,25,50,75,100,150)")
    parser.add_argument("--window", type=float, help="measured seconds per step (30)")
    parser.add_argument("--warmup", type=float, help="seconds after every camera streams (10)")
    parser.add_argument("--rtsp", action="store_true", help="cameras pull the clip from one RTSP server")
    parser.add_argument("--quick", action="store_true", help="2 cameras, a few seconds: a smoke test")
    parser.add_argument(
        "--flat-out",
        action="store_true",
        help="files read as fast as the pipeline takes them (realtime = false)",
    )
    parser.add_argument("--capture-workers", type=int, default=1, help="(the topology default, 1)")
    parser.add_argument("--validation-workers", type=int, default=1, help="(the topology default, 1)")
    parser.add_argument("--output-fps", type=float, default=5.0, help="per camera to Redis; 0 = all")
    parser.add_argument("--output-width", type=int, default=640, help="of frames to Redis; 0 = unscaled")
    parser.add_argument("--size", default="1280x720", help="WxH of the cameras (1280x720)")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--clip-seconds", type=float, help="length of the looped clip (20)")
    parser.add_argument(
        "--passes", type=int, help="times each ffmpeg of the decode ceiling plays the clip (5)"
    )
    parser.add_argument(
        "--min-decoded", type=float, default=50.0, help="decoded %% below which the ramp stops (saturated)"
    )
    parser.add_argument(
        "--capture-nice", type=int, help="capture.nice of the topology (default: the topology's, 19)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy profiles of every worker (into --out), summarised"
    )
    parser.add_argument(
        "--cores", help="scaling: the flat-out run on each of these core counts (1,2), with taskset"
    )
    parser.add_argument(
        "--key-phases",
        type=int,
        default=1,
        help=f"spread the cameras' key frames over this many of the GOP's {GOP} frames, as a fleet's "
        "cameras, started at different times, have them (default 1: all at once, the worst case)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="directory of the results")
    args = parser.parse_args(argv)
    defaults = ("2", 4.0, 2.0, 3.0, 1) if args.quick else ("10,25,50,75,100,150", 30.0, 10.0, 20.0, 5)
    if args.flat_out and not args.quick:  # a few cameras fill 2 cores; more only show the overhead
        defaults = ("2,4,8", 30.0, 10.0, 20.0, 5)
    for name, default in zip(("steps", "window", "warmup", "clip_seconds", "passes"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    try:
        args.frame_size = tuple(int(n) for n in args.size.lower().split("x"))
        assert len(args.frame_size) == 2 and all(n > 0 and n % 2 == 0 for n in args.frame_size)
    except (ValueError, AssertionError):
        parser.error(f"--size: expected an even WIDTHxHEIGHT such as 1920x1080, got {args.size!r}")
    try:
        args.step_list = [int(n) for n in args.steps.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--steps: expected camera counts such as 10,25,50, got {args.steps!r}")
    try:
        args.core_list = [int(n) for n in (args.cores or "").split(",") if n.strip()]
    except ValueError:
        parser.error(f"--cores: expected core counts such as 1,2, got {args.cores!r}")
    if args.core_list and (min(args.core_list) < 1 or args.rtsp):
        parser.error("--cores: counts of at least 1, files only (not --rtsp)")
    if not 1 <= args.key_phases <= GOP or (args.key_phases > 1 and args.rtsp):
        parser.error(f"--key-phases: 1 to {GOP}, files only (one RTSP server plays one clip)")
    if not args.step_list or min(args.step_list) < 1:
        parser.error("--steps: at least one step, each of at least 1 camera")
    return args


def scaling(args: argparse.Namespace, options: Options) -> str:
    """--cores: the flat-out run on 1, 2, ... cores (taskset: this script's CPU affinity, which
    ffmpeg and the pipeline inherit; Redis is not ours and runs where it runs), 2 cameras a core
    and one validation worker per 2 cores: speed-up of the pipeline against the ceiling's."""
    allowed = sorted(os.sched_getaffinity(0))
    rows = []
    for count in args.core_list:
        if count > len(allowed):
            raise SystemExit(f"--cores: {count} cores asked for, this machine lets us use {len(allowed)}")
        os.sched_setaffinity(0, allowed[:count])
        workers = {"validation_workers": max(1, count // 2), "capture_workers": max(1, count // 4)}
        step = replace(options, realtime=False, **workers)
        print(f"cores: {count} ...", file=sys.stderr, flush=True)
        ceiling, results = ramp([2 * count], step, False, args.clip_seconds, args.passes, QUICK_PACED_S)
        result = results[-1]
        rows.append((count, ceiling.fps, result.decoded * result.cameras * SOURCE_FPS / 100, result))
    os.sched_setaffinity(0, allowed)
    first = rows[0]
    lines = [
        "| cores | workers: capture / validation | cameras | ceiling fps | pipeline fps | of ceiling "
        "| ceiling speed-up | pipeline speed-up | efficiency | CPU ms/frame: capture / validate / batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for count, ceiling_fps, fps, result in rows:
        ceiling_up, pipeline_up = ceiling_fps / first[1], fps / first[2]
        workers = f"{max(1, count // 4)} / {max(1, count // 2)}"
        ms = " / ".join(f"{result.cpu_ms_per_frame.get(stage, 0.0):.2f}" for stage in STAGES[:3])
        lines.append(
            f"| {count} | {workers} | {result.cameras} | {ceiling_fps:.0f} | {fps:.0f} "
            f"| {fps / ceiling_fps:.2f} | {ceiling_up:.2f}x | {pipeline_up:.2f}x "
            f"| {pipeline_up / ceiling_up:.2f} | {ms} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(
        redis_url=args.redis_url,
        capture_workers=args.capture_workers,
        validation_workers=args.validation_workers,
        output_fps=args.output_fps,
        output_width=args.output_width,
        jpeg_quality=args.jpeg_quality,
        window=args.window,
        warmup=args.warmup,
        min_decoded=args.min_decoded,
        capture_nice=args.capture_nice,
        profile=args.out if args.profile else None,
        size=args.frame_size,
        realtime=not args.flat_out,
        key_phases=args.key_phases,
    )
    try:
        redis.Redis.from_url(args.redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        print(f"Redis at {args.redis_url} does not answer ({exc}): start it first", file=sys.stderr)
        return 2
    if args.flat_out and args.rtsp:
        print("bench_scale: --flat-out reads files; an RTSP server paces its clients", file=sys.stderr)
        return 2
    if args.core_list:
        report = describe(replace(options, realtime=False), "flat-out") + "\n\n" + scaling(args, options)
        print(report)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale-cores.md").write_text(report + "\n")
        return 0
    mode = "rtsp" if args.rtsp else "flat-out" if args.flat_out else "file"
    try:
        paced_s = QUICK_PACED_S if args.quick else PACED_S
        ceiling, results = ramp(args.step_list, options, args.rtsp, args.clip_seconds, args.passes, paced_s)
    except RuntimeError as exc:  # the RTSP server did not start (GStreamer missing, ...)
        print(f"bench_scale: {exc}", file=sys.stderr)
        return 2
    report = describe(options, mode) + "\n\n" + table(results) + "\n\n" + verdict(ceiling, results) + "\n"
    print(report)

    args.out.mkdir(parents=True, exist_ok=True)
    size = "" if options.size == SIZE else f"-{args.size}"
    name = f"scale-{mode}{size}" + ("-quick" if args.quick else "")
    (args.out / f"{name}.md").write_text(report)
    data = {"description": describe(options, mode), "steps": [asdict(r) for r in results]}
    data["ceiling"] = asdict(ceiling) | {"cameras": ceiling.cameras}
    (args.out / f"{name}.json").write_text(json.dumps(data, indent=1))
    # Both kinds of camera on one plot when the other mode's results are there (same --quick or not).
    other = "file" if args.rtsp else "rtsp"
    series = {mode: results}
    if not args.flat_out:
        series[other] = load_results(args.out / f"{name.replace(mode, other)}.json")
    why_not = plot(args.out / f"{name}.png", series, ceiling)
    print(why_not or f"plot: {args.out / f'{name}.png'}", file=sys.stderr if why_not else sys.stdout)
    print(f"table: {args.out / f'{name}.md'}")
    return 1 if not results or any(r.failed or r.delivered <= 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

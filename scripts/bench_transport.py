"""Transport benchmark: how fast 1080p I420 frames cross capture → validation → batch.

Three variants carry the same pre-decoded frames through three OS processes, with
validation and the Redis write replaced by no-ops:

  (a) multiprocessing.Queue, each frame pickled whole, per hop;
  (b) ZeroMQ PUSH/PULL over ipc://, the frame bytes inline (copy=False);
  (c) zstream: one copy into a shared-memory ring slot, msgpack FrameRef/Verdict over
      ZeroMQ, one copy out at the batcher (what raw output costs).

Every variant is drop-free (bounded queues, blocking sends; for (c) the producer waits
for a released slot), and the sink checks every frame's order and sampled content, so a
broken transport cannot look fast. Each pipeline runs two phases: flat out (fps), then,
once drained, paced at 30 fps (per-hop latency without the queueing a saturated pipeline
adds to it).

    .venv/bin/python scripts/bench_transport.py [--frames N] [--seconds S] [--quick] [--markdown]

Exit status: 0 when every run delivered every frame intact; the fps targets are
reported, not enforced (timings are noisy).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import queue
import struct
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zmq

from zstream.core.planes import i420_size
from zstream.core.ring import Ring, WriteSlot, ring_path
from zstream.core.wire import FrameRef, Verdict, decode, encode

WIDTH, HEIGHT = 1920, 1080
ROWS = HEIGHT * 3 // 2  # I420 as one (rows, width) array: Y, then U, then V
FRAME_BYTES = i420_size(WIDTH, HEIGHT)
DISTINCT = 8  # distinct frames, sent in rotation
DEPTH = 16  # frames a hop may hold: Queue maxsize, ZeroMQ high-water marks, ring slots
CAMERA = "bench"
CREDIT_POLL_S = 100e-6
PACED_FPS = 30.0
DRAIN_TIMEOUT_S = 10.0
# A stage blocked this long on a hop gives up: a stuck run, or a parent killed with -9, leaves
# no process behind for longer than this.
STALL_TIMEOUT_S = 30.0
STAMP = struct.Struct("<qqq")  # frame index, t_capture_ns, t_validate_ns
END = b"END"
ROLES = ("capture", "validate", "batch")
MODES = ("throughput", "paced")
VARIANTS = {
    "a": "(a) mp.Queue, pickled arrays",
    "w": "(w) = (a), malloc pre-warmed",
    "b": "(b) ZeroMQ, bytes inline",
    "c": "(c) zstream shm ring + refs",
}
# (c) must reach this many times the other's fps; None: printed for information, no target.
TARGETS = (("a", 15.0), ("b", 3.0), ("w", None))

# Latency stamps are time.monotonic_ns(): on Linux that is CLOCK_MONOTONIC, one clock for the
# whole system, so a stamp taken in one process can be subtracted from one taken in another.
now_ns = time.monotonic_ns


# ---- the frames ----------------------------------------------------------------------------


class Frame(NamedTuple):
    """One pre-decoded frame: the whole I420 buffer and views of its planes."""

    whole: np.ndarray  # (ROWS, WIDTH) uint8, contiguous
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray


def make_frames() -> list[Frame]:
    """Distinct, deterministic frames (gradient + noise), so the sink can recompute what it
    should have received instead of trusting the transport."""
    ramp = np.add.outer(np.arange(ROWS, dtype=np.uint8), np.arange(WIDTH, dtype=np.uint8))
    noise = np.random.default_rng(20240601).integers(0, 64, size=(ROWS, WIDTH), dtype=np.uint8)
    frames = []
    for tag in range(DISTINCT):
        whole = ramp * np.uint8(2 * tag + 1) + np.roll(noise, 4099 * tag)
        whole[0, :8] = tag
        chroma = whole[HEIGHT:].reshape(-1)
        half = chroma.size // 2
        u = chroma[:half].reshape(HEIGHT // 2, WIDTH // 2)
        v = chroma[half:].reshape(HEIGHT // 2, WIDTH // 2)
        frames.append(Frame(whole, whole[:HEIGHT], u, v))
    return frames


# Where the sink samples each frame: the tag bytes, the last byte, and random spots.
SAMPLE_AT = np.concatenate(
    [np.arange(8), [FRAME_BYTES - 1], np.random.default_rng(7).integers(0, FRAME_BYTES, 64)]
)


def signatures(frames: list[Frame]) -> np.ndarray:
    return np.stack([f.whole.reshape(-1)[SAMPLE_AT] for f in frames])


def intact(data: Any, index: int, expected: np.ndarray) -> bool:
    """The received buffer is a whole frame and is the frame `index` should be."""
    flat = data.reshape(-1) if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    return flat.size == FRAME_BYTES and bool((flat[SAMPLE_AT] == expected[index % DISTINCT]).all())


# ---- what one pipeline run is --------------------------------------------------------------


@dataclass
class Plan:
    """Everything a stage process needs; pickled to it at spawn."""

    variant: str
    frames: int  # cap of the throughput phase
    seconds: float  # cap of the throughput phase
    paced_seconds: float
    hop1: str = ""  # ipc:// endpoints for (b) and (c)
    hop2: str = ""
    ring: str = ""  # ring file for (c)
    queues: tuple[Any, Any] | None = None  # multiprocessing queues for (a)
    warm_allocator: bool = False


Delivery = tuple[int, int, int, Any]  # index, t_capture_ns, t_validate_ns, the frame's bytes


# ---- the three transports ------------------------------------------------------------------


class QueueLink:
    """(a): the frame array goes through a multiprocessing.Queue, pickled, at each hop."""

    def __init__(self, plan: Plan, role: str) -> None:
        assert plan.queues is not None
        hop1, hop2 = plan.queues
        self.inbox = {"capture": None, "validate": hop1, "batch": hop2}[role]
        self.outbox = {"capture": hop1, "validate": hop2, "batch": None}[role]
        self.overwritten: list[int] = []
        self.credit_waits = 0

    def send(self, index: int, frame: Frame, t0: int) -> None:
        self.outbox.put((index, t0, 0, frame.whole), timeout=STALL_TIMEOUT_S)

    def send_end(self) -> None:
        self.outbox.put(None, timeout=STALL_TIMEOUT_S)

    def relay(self) -> int | None:
        item = self.inbox.get(timeout=STALL_TIMEOUT_S)
        if item is None:
            self.send_end()
            return None
        index, t0, _, whole = item
        t1 = now_ns()
        int(whole[0, 0])  # validation reads the pixels it was sent
        self.outbox.put((index, t0, t1, whole), timeout=STALL_TIMEOUT_S)
        return index

    def receive(self) -> Delivery | None:
        return self.inbox.get(timeout=STALL_TIMEOUT_S)

    def close(self) -> None:
        if self.outbox is not None:
            self.outbox.close()
            self.outbox.join_thread()  # the feeder thread has pickled and written everything


class ZmqLink:
    """(b) and (c) share the sockets: downstream binds PULL, upstream connects PUSH, with
    blocking sends and the same high-water marks, so nothing is dropped."""

    def __init__(self, plan: Plan, role: str) -> None:
        self.context = zmq.Context(io_threads=1)
        self.context.setsockopt(zmq.RCVTIMEO, int(STALL_TIMEOUT_S * 1000))
        self.context.setsockopt(zmq.SNDTIMEO, int(STALL_TIMEOUT_S * 1000))
        self.pull: zmq.Socket | None = None
        self.push: zmq.Socket | None = None
        self.overwritten: list[int] = []
        self.credit_waits = 0
        inbound = {"validate": plan.hop1, "batch": plan.hop2}.get(role)
        outbound = {"capture": plan.hop1, "validate": plan.hop2}.get(role)
        if inbound:
            self.pull = self.context.socket(zmq.PULL)
            self.pull.setsockopt(zmq.RCVHWM, DEPTH)
            self.pull.bind(inbound)
        if outbound:
            self.push = self.context.socket(zmq.PUSH)
            self.push.setsockopt(zmq.SNDHWM, DEPTH)
            self.push.setsockopt(zmq.LINGER, 5000)
            self.push.connect(outbound)

    def send_end(self) -> None:
        assert self.push is not None
        self.push.send(END)

    def close(self) -> None:
        for sock in (self.pull, self.push):
            if sock is not None:
                sock.close()
        self.context.term()


class InlineLink(ZmqLink):
    """(b): [stamp, frame bytes]; zero-copy into and out of libzmq, but the kernel copies the
    frame through the socket once per hop each way."""

    def send(self, index: int, frame: Frame, t0: int) -> None:
        assert self.push is not None
        self.push.send_multipart([STAMP.pack(index, t0, 0), frame.whole], copy=False)

    def relay(self) -> int | None:
        assert self.pull is not None and self.push is not None
        parts = self.pull.recv_multipart(copy=False)
        if len(parts) == 1:
            self.send_end()
            return None
        index, t0, _ = STAMP.unpack(parts[0].bytes)
        t1 = now_ns()
        np.frombuffer(parts[1].buffer, np.uint8, count=1)[0]  # validation reads the pixels
        self.push.send_multipart([STAMP.pack(index, t0, t1), parts[1]], copy=False)
        return index

    def receive(self) -> Delivery | None:
        assert self.pull is not None
        parts = self.pull.recv_multipart(copy=False)
        if len(parts) == 1:
            return None
        index, t0, t1 = STAMP.unpack(parts[0].bytes)
        return index, t0, t1, parts[1].buffer


class RingLink(ZmqLink):
    """(c): pixels go into a ring slot once; only [FrameRef | Verdict, stamp] crosses sockets;
    the batcher copies the frame out once, re-checks the generation, releases the slot."""

    def __init__(self, plan: Plan, role: str) -> None:
        super().__init__(plan, role)
        self.ring = Ring.attach(Path(plan.ring))

    def send(self, index: int, frame: Frame, t0: int) -> None:
        assert self.push is not None
        claimed = self._claim()
        np.copyto(claimed.y, frame.y)
        np.copyto(claimed.u, frame.u)
        np.copyto(claimed.v, frame.v)
        seq, generation = self.ring.commit(claimed, None, time.time())
        ref = FrameRef(CAMERA, seq, claimed.slot, generation, WIDTH, HEIGHT, None, time.time())
        self.push.send_multipart([encode(ref), STAMP.pack(index, t0, 0)])

    def _claim(self) -> WriteSlot:
        """Wait for credit: drop_newest=True makes claim refuse (None) a slot nobody released,
        so a full ring holds the producer back instead of overwriting a frame in flight."""
        while (claimed := self.ring.claim(WIDTH, HEIGHT, drop_newest=True)) is None:
            self.credit_waits += 1
            time.sleep(CREDIT_POLL_S)
        return claimed

    def relay(self) -> int | None:
        """What validation does with a FrameRef, minus the measuring."""
        assert self.pull is not None and self.push is not None
        parts = self.pull.recv_multipart()
        if len(parts) == 1:
            self.send_end()
            return None
        ref = decode(parts[0], FrameRef)
        index, t0, _ = STAMP.unpack(parts[1])
        t1 = now_ns()
        assert isinstance(ref, FrameRef)
        current = self.ring.is_current(ref.slot, ref.generation)
        if current:
            int(self.ring.planes(ref.slot)[0][0, 0])  # reads the luma plane in place
            current = self.ring.is_current(ref.slot, ref.generation)
        if not current:
            self.overwritten.append(index)  # dropped here, as validation would
            return index
        verdict = Verdict(ref, {}, (), time.time())
        self.push.send_multipart([encode(verdict), STAMP.pack(index, t0, t1)])
        return index

    def receive(self) -> Delivery | None:
        assert self.pull is not None
        while True:
            parts = self.pull.recv_multipart()
            if len(parts) == 1:
                return None
            verdict = decode(parts[0], Verdict)
            assert isinstance(verdict, Verdict)
            index, t0, t1 = STAMP.unpack(parts[1])
            data = self._copy_out(verdict.frame)
            if data is not None:
                return index, t0, t1, data
            self.overwritten.append(index)

    def _copy_out(self, ref: FrameRef) -> bytes | None:
        """The batcher's raw path: one copy out, kept only if the slot was not rewritten."""
        data = None
        if self.ring.is_current(ref.slot, ref.generation):
            data = self.ring.frame(ref.slot).tobytes()
            if not self.ring.is_current(ref.slot, ref.generation):
                data = None
        self.ring.release(ref.slot, ref.generation)
        return data

    def close(self) -> None:
        super().close()
        self.ring.close()


LINKS: dict[str, Callable[[Plan, str], Any]] = {
    "a": QueueLink,
    "w": QueueLink,
    "b": InlineLink,
    "c": RingLink,
}


# ---- the stage processes -------------------------------------------------------------------


def stage_main(role: str, plan: Plan, sync: dict[str, Any], results: Any) -> None:
    """Body of one stage process: set up, say ready, wait for go, run, report."""
    try:
        upstream_of = {"capture": "validate", "validate": "batch"}
        if role in upstream_of and not sync[upstream_of[role]].wait(60):
            raise TimeoutError(f"{upstream_of[role]} never became ready")  # it binds, we connect
        frames = make_frames() if role != "validate" else []  # before timing: no decoding measured
        if plan.warm_allocator:
            warm_allocator()
        link = LINKS[plan.variant](plan, role)
        try:
            sync[role].set()
            if not sync["go"].wait(2 * STALL_TIMEOUT_S):
                raise TimeoutError("never told to start")
            report = STAGES[role](plan, link, frames, sync)
            report["overwritten"] = link.overwritten
        finally:
            link.close()
        results.put({"role": role, **report})
    except BaseException:
        results.put({"role": role, "error": traceback.format_exc()})


def warm_allocator() -> None:
    """glibc malloc serves blocks above a threshold (128 KiB at start) with a fresh mmap(),
    page-faulted in and unmapped again on every frame, until it has freed a block that large
    and raises the threshold. Freeing one 4-frame block now starts every stage in the steady
    state of a long-running worker; without it, per-frame allocations (pickle buffers, pipe
    reads, libzmq messages) can cost more than the copies, depending on what ran before."""
    block = bytearray(4 * FRAME_BYTES)
    del block


def run_capture(plan: Plan, link: Any, frames: list[Frame], sync: dict[str, Any]) -> dict[str, Any]:
    """Flat out, wait until the sink has everything, then paced; the sink splits by index."""
    cpu: list[tuple[int, int]] = []
    sent = _send_phase(link, frames, 0, plan.frames, plan.seconds, None, cpu)
    drained = _wait_drained(sync["delivered"], sent)
    paced_frames = round(plan.paced_seconds * PACED_FPS)
    paced = _send_phase(link, frames, sent, paced_frames, plan.paced_seconds + 1, PACED_FPS, cpu)
    link.send_end()
    return {"sent": (sent, paced), "drained": drained, "credit_waits": link.credit_waits, "cpu": cpu}


def _send_phase(
    link: Any,
    frames: list[Frame],
    first: int,
    count: int,
    seconds: float,
    rate: float | None,
    cpu: list[tuple[int, int]],
) -> int:
    """Send up to `count` frames within `seconds`, at `rate` or as fast as possible."""
    start = time.monotonic()
    sent = 0
    while sent < count and time.monotonic() - start < seconds:
        if rate is not None and (delay := start + sent / rate - time.monotonic()) > 0:
            time.sleep(delay)
        index = first + sent
        link.send(index, frames[index % DISTINCT], now_ns())
        cpu.append((index, time.process_time_ns()))
        sent += 1
    return sent


def _wait_drained(delivered: Any, total: int) -> bool:
    """So the paced phase starts on an empty pipeline, not behind the flat-out backlog."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while delivered.value < total:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def run_validate(plan: Plan, link: Any, frames: list[Frame], sync: dict[str, Any]) -> dict[str, Any]:
    cpu: list[tuple[int, int]] = []
    while (index := link.relay()) is not None:
        cpu.append((index, time.process_time_ns()))
    return {"cpu": cpu}


def run_batch(plan: Plan, link: Any, frames: list[Frame], sync: dict[str, Any]) -> dict[str, Any]:
    """Receive until the end marker; keep every frame's stamps, check order and content."""
    expected = signatures(frames)
    rows: list[tuple[int, int, int, int]] = []
    cpu: list[tuple[int, int]] = []
    bad: list[int] = []
    out_of_order: list[int] = []
    while (delivery := link.receive()) is not None:
        index, t0, t1, data = delivery
        t2 = now_ns()
        cpu.append((index, time.process_time_ns()))
        if not intact(data, index, expected):
            bad.append(index)
        if rows and index <= rows[-1][0]:
            out_of_order.append(index)
        rows.append((index, t0, t1, t2))
        sync["delivered"].value += 1
    return {"rows": rows, "cpu": cpu, "bad": bad, "out_of_order": out_of_order}


STAGES: dict[str, Callable[[Plan, Any, list[Frame], dict[str, Any]], dict[str, Any]]] = {
    "capture": run_capture,
    "validate": run_validate,
    "batch": run_batch,
}


# ---- running one pipeline ------------------------------------------------------------------


@dataclass
class Outcome:
    """One phase's figures, or why it has none."""

    variant: str
    mode: str
    sent: int = 0
    delivered: int = 0
    bad: int = 0  # wrong content, or out of order
    overwritten: int = 0
    credit_waits: int = 0
    fps: float = 0.0
    hop1: tuple[float, float] = (0.0, 0.0)  # p50, p99 in ms
    hop2: tuple[float, float] = (0.0, 0.0)
    e2e: tuple[float, float] = (0.0, 0.0)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per frame, per stage
    error: str = ""

    @property
    def clean(self) -> bool:
        return not self.error and self.sent == self.delivered and not (self.bad or self.overwritten)


def run_pipeline(plan: Plan, timeout: float) -> list[Outcome]:
    """Spawn the three stages, start them together, collect their reports; kill on timeout."""
    ctx = mp.get_context("spawn")
    ring: Ring | None = None
    procs: list[Any] = []
    try:
        ring = _make_ring(plan)
        if LINKS[plan.variant] is QueueLink:
            plan.queues = (ctx.Queue(DEPTH), ctx.Queue(DEPTH))
        sync: dict[str, Any] = {name: ctx.Event() for name in (*ROLES, "go")}
        sync["delivered"] = ctx.RawValue("q", 0)  # written by the sink only
        results = ctx.Queue()
        procs = [
            ctx.Process(target=stage_main, args=(role, plan, sync, results), name=role, daemon=True)
            for role in ROLES
        ]
        for proc in procs:
            proc.start()
        return summarize(plan, _collect(procs, sync, results, timeout))
    finally:
        _stop(procs)
        if ring is not None:
            ring.close()
            ring.unlink()


def _make_ring(plan: Plan) -> Ring | None:
    """The ring is created and unlinked by the parent, as the supervisor does in zstream."""
    if plan.variant != "c":
        return None
    path = ring_path(f"bench{os.getpid()}-{uuid.uuid4().hex[:8]}", CAMERA)
    plan.ring = str(path)
    return Ring.create(path, DEPTH, FRAME_BYTES)


def _collect(procs: list[Any], sync: dict[str, Any], results: Any, timeout: float) -> dict[str, Any]:
    """Wait for every stage to be ready, say go, gather the three reports (or an error)."""
    deadline = time.monotonic() + timeout
    for role in ROLES:
        while not sync[role].wait(0.1):
            _check_alive(procs, deadline)
    sync["go"].set()
    reports: dict[str, Any] = {}
    while len(reports) < len(ROLES):
        try:
            report = results.get(timeout=0.2)
        except queue.Empty:
            _check_alive(procs, deadline)
            continue
        if "error" in report:
            raise RuntimeError(f"{report['role']} stage failed:\n{report['error']}")
        reports[report["role"]] = report
    return reports


def _check_alive(procs: list[Any], deadline: float) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError("the run did not finish in time")
    for proc in procs:
        if proc.exitcode not in (None, 0):
            raise RuntimeError(f"{proc.name} stage died with exit code {proc.exitcode}")


def _stop(procs: list[Any]) -> None:
    """Join, then terminate, then kill whatever is left of this run's own children."""
    deadline = time.monotonic() + 5
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2)


def summarize(plan: Plan, reports: dict[str, Any]) -> list[Outcome]:
    """Split the sink's rows into the two phases by frame index, and reduce each."""
    batch, capture = reports["batch"], reports["capture"]
    rows = np.array(batch["rows"], dtype=np.int64).reshape(-1, 4)
    n1, n2 = capture["sent"]
    warmup = min(DEPTH, n1 // 4)  # connection set-up, first touches of ring pages and buffers
    windows = {"throughput": (0, n1, warmup), "paced": (n1, n1 + n2, n1)}
    outcomes = []
    for mode in MODES:
        lo, hi, steady_from = windows[mode]

        def within(indices: list[int], lo: int = lo, hi: int = hi) -> int:
            return sum(lo <= i < hi for i in indices)

        out = Outcome(plan.variant, mode, sent=hi - lo, credit_waits=capture["credit_waits"])
        out.delivered = within(list(rows[:, 0]))
        out.bad = within(batch["bad"]) + within(batch["out_of_order"])
        out.overwritten = sum(within(reports[role]["overwritten"]) for role in ROLES)
        if mode == "paced" and not capture["drained"]:
            out.error = "the pipeline did not drain after the throughput phase"
        steady = rows[(rows[:, 0] >= steady_from) & (rows[:, 0] < hi)]
        _timings(out, steady)
        out.cpu_ms = {role: _cpu_per_frame(reports[role]["cpu"], steady_from, hi) for role in ROLES}
        outcomes.append(out)
    return outcomes


def _timings(out: Outcome, steady: np.ndarray) -> None:
    """fps at the sink, first to last frame received; latency percentiles per hop."""
    if len(steady) < 2:
        return
    _, t0, t1, t2 = steady.T
    out.fps = (len(steady) - 1) / ((t2[-1] - t2[0]) / 1e9)
    out.hop1, out.hop2, out.e2e = _p50_p99(t1 - t0), _p50_p99(t2 - t1), _p50_p99(t2 - t0)


def _p50_p99(ns: np.ndarray) -> tuple[float, float]:
    p50, p99 = np.percentile(ns, [50, 99]) / 1e6
    return float(p50), float(p99)


def _cpu_per_frame(samples: list[tuple[int, int]], lo: int, hi: int) -> float:
    """Process CPU time (all threads) spent per frame between two frames of the window."""
    inside = [ns for index, ns in samples if lo <= index < hi]
    if len(inside) < 2:
        return 0.0
    return (inside[-1] - inside[0]) / (len(inside) - 1) / 1e6


# ---- the report ----------------------------------------------------------------------------

COLUMNS = (
    ("variant", 28),
    ("ok/sent", 11),
    ("fps", 6),
    ("hop1 p50/p99", 13),
    ("hop2 p50/p99", 13),
    ("e2e p50/p99", 13),
    ("cpu ms/frame c/v/b", 18),
    ("overwr", 6),
    ("bad", 4),
)


def row_cells(o: Outcome) -> list[str]:
    if o.error and not o.sent:
        return [VARIANTS[o.variant], "FAILED: " + o.error.strip().splitlines()[-1]]

    def pair(p: tuple[float, float]) -> str:
        return f"{p[0]:.1f}/{p[1]:.1f}"

    return [
        VARIANTS[o.variant],
        f"{o.delivered}/{o.sent}",
        f"{o.fps:.0f}",
        pair(o.hop1),
        pair(o.hop2),
        pair(o.e2e),
        "/".join(f"{o.cpu_ms[r]:.2f}" for r in ROLES),
        str(o.overwritten),
        str(o.bad),
    ]


def table(outcomes: list[Outcome], markdown: bool) -> str:
    heads = [name for name, _ in COLUMNS]
    rows = [row_cells(o) for o in outcomes]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])
    widths = [width for _, width in COLUMNS]

    def line(cells: list[str]) -> str:
        padded = (
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        )
        return "  ".join(padded).rstrip()

    rule = "-" * len(line(heads))
    return "\n".join([line(heads), rule, *(line(cells) for cells in rows)])


def verdict_lines(throughput: dict[str, Outcome]) -> list[str]:
    """The ratios of (c)'s fps to the others', against the issue's targets."""
    lines = []
    c = throughput.get("c")
    for other, target in TARGETS:
        o = throughput.get(other)
        goal = f"target >= {target:.0f}x" if target else "no target: the baseline hand-tuned"
        if c is None or o is None or not (c.fps and o.fps):
            lines.append(f"(c)/({other}) fps:   n/a  ({goal})" + (": MISS" if target else ""))
            continue
        status = (": PASS" if c.fps / o.fps >= target else ": MISS") if target else ""
        lines.append(f"(c)/({other}) fps: {c.fps / o.fps:5.1f}x  ({goal}){status}")
    return lines


def report(args: argparse.Namespace, outcomes: list[Outcome]) -> str:
    by_mode = {mode: [o for o in outcomes if o.mode == mode] for mode in MODES}
    ring = next((o for o in by_mode["throughput"] if o.variant == "c" and not o.error), None)
    return "\n".join(
        [
            f"zstream transport benchmark: {WIDTH}x{HEIGHT} I420 ({FRAME_BYTES / 2**20:.2f} MiB/frame), "
            f"capture -> validation -> batch in 3 processes; {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, pyzmq {zmq.__version__}, depth {DEPTH}",
            "(w) pre-frees a 12 MB block in each stage so glibc raises its mmap threshold: a tuning a",
            "plain multiprocessing program does not have; (a), (b), (c) run as they are written.",
            "",
            f"Throughput (flat out, up to {args.frames} frames / {args.seconds:g} s; "
            "latency here is queueing):",
            table(by_mode["throughput"], args.markdown),
            "",
            f"Latency (paced at {PACED_FPS:.0f} fps for {args.paced_seconds:g} s, after draining):",
            table(by_mode["paced"], args.markdown),
            "",
            "ms: hop1 capture->validation, hop2 validation->batch (for (c) incl. the copy out), e2e both.",
            "cpu ms/frame: process CPU time (all threads) per frame, capture/validate/batch.",
            f"(c) producer waited for a released ring slot {ring.credit_waits if ring else 0} times.",
            "",
            *verdict_lines({o.variant: o for o in by_mode["throughput"]}),
        ]
    )


# ---- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, help="cap on frames of each throughput phase")
    parser.add_argument("--seconds", type=float, help="cap on seconds of each throughput phase")
    parser.add_argument("--paced-seconds", type=float, help=f"seconds of each {PACED_FPS:.0f} fps phase")
    parser.add_argument("--quick", action="store_true", help="short phases (smoke test), ~10 s in all")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--variants", default="awbc", help="which variants to run, e.g. 'ac'")
    args = parser.parse_args(argv)
    frames, seconds, paced = (400, 0.8, 0.5) if args.quick else (20000, 10.0, 4.0)
    args.frames = args.frames or frames
    args.seconds = args.seconds or seconds
    args.paced_seconds = args.paced_seconds or paced
    if not args.variants or set(args.variants) - set(VARIANTS):
        parser.error(f"--variants takes letters among {', '.join(VARIANTS)}")
    return args


def run_all(args: argparse.Namespace) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="zstream-bench-") as workdir:
        for variant in [v for v in VARIANTS if v in args.variants]:
            plan = Plan(
                variant,
                args.frames,
                args.seconds,
                args.paced_seconds,
                hop1=f"ipc://{workdir}/{variant}-hop1",
                hop2=f"ipc://{workdir}/{variant}-hop2",
                warm_allocator=variant == "w",
            )
            print(f"running {VARIANTS[variant]} ...", file=sys.stderr, flush=True)
            try:
                outcomes += run_pipeline(plan, timeout=args.seconds + args.paced_seconds + 40)
            except (RuntimeError, TimeoutError, OSError) as exc:
                outcomes += [Outcome(variant, mode, error=str(exc)) for mode in MODES]
    return outcomes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcomes = run_all(args)
    print(report(args, outcomes))
    failures = [o for o in outcomes if not o.clean]
    for o in failures:
        why = o.error or "lost, torn, overwritten or reordered frames"
        print(f"NOT CLEAN: {VARIANTS[o.variant]} ({o.mode}): {why}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

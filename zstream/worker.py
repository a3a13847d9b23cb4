"""Entry point of every worker process: `python -m zstream.worker STAGE INDEX RUN_DIR PARENT_PID`.

The supervisor starts workers this way (not by fork) so each is a clean interpreter with
its own ZeroMQ context. A worker reads the resolved topology the supervisor wrote, runs
its stage until SIGTERM, and exits by itself if the supervisor dies.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import cv2

from zstream.rundir import PipelineWatcher, RunDir
from zstream.stats import Counters

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int, stop: threading.Event) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, and watch for it ourselves too
    (the parent may have died before the request was made)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                logging.getLogger(__name__).error("supervisor (pid %d) is gone; stopping", parent_pid)
                stop.set()

    if os.getppid() != parent_pid:
        sys.exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _stop_on_sigterm(stop: threading.Event) -> None:
    """Set `stop` on SIGTERM from a thread of its own, not from a Python handler.

    SIGTERM can come several times within microseconds: the kernel sends the parent-death signal
    again at each reparenting while a killed supervisor's threads exit. A handler runs in the
    main thread between bytecodes, so a second one entered while the first held the Event's lock
    deadlocked the worker (an orphan that never exited). The handler here does nothing; the C-level
    handler writes each signal's number to a wakeup pipe (whichever thread took the signal), and
    one thread reads it and sets `stop`. An asyncio stage (the batcher) takes the wakeup fd for
    its event loop, and has the loop deliver SIGTERM instead."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda *_: None)

    def wait() -> None:
        while os.read(read_end, 1) != bytes([signal.SIGTERM]):
            pass
        stop.set()

    threading.Thread(target=wait, name="sigterm", daemon=True).start()


def configure_logging(name: str, level: str | None = None) -> None:
    """Log lines name their process; the level is the argument, else ZSTREAM_LOG_LEVEL (set
    by `zstream up --log-level` for its workers), else INFO."""
    shard = os.environ.get("ZSTREAM_SHARD")  # set by `zstream up --shard` (see zstream.shard)
    tag = f"shard {shard} " if shard else ""
    logging.basicConfig(
        level=level or os.environ.get("ZSTREAM_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {tag}{name:<11} %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Libraries that narrate every ICE check and HTTP request at INFO: their warnings suffice.
    for chatty in ("aioice", "aiortc", "httpx", "httpcore", "zeep"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _stage(stage: str) -> Callable[[PipelineWatcher, int, threading.Event, Counters], None]:
    """The run() of a stage, imported here: a worker loads its own stage and its libraries only."""
    if stage == "capture":
        from zstream.capture import run as run_capture

        return run_capture
    if stage == "validate":
        from zstream.validation import run as run_validation

        return run_validation
    if stage == "batch":
        from zstream.batch import run as run_batcher

        return run_batcher
    raise SystemExit(f"unknown stage {stage!r}")


def main(argv: list[str]) -> NoReturn:
    stage, index, run_dir, parent_pid = argv[0], int(argv[1]), Path(argv[2]), int(argv[3])
    configure_logging(f"{stage}-{index}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle, in order
    _stop_on_sigterm(stop)
    _die_with_parent(parent_pid, stop)
    # OpenCV's own thread pool splits each resize or filter of a frame over every core: on
    # frames this small the hand-offs cost as much CPU as the work (validation of a 720p frame:
    # 0.49 ms of CPU against 0.23 ms on one thread). Our parallelism is processes and cameras.
    cv2.setNumThreads(1)
    watcher = PipelineWatcher(run_dir)
    topology, _ = watcher.read()
    run = _stage(stage)
    # The ledger is made before the stage starts counting, and read by the supervisor after exit.
    run(watcher, index, stop, Counters.for_worker(run_dir, f"{stage}-{index}"))
    if os.getppid() != parent_pid:  # orphaned: the first worker out removes what the supervisor owned
        RunDir(topology).clean_up_after_supervisor()
    logging.shutdown()
    # Skip interpreter finalisation: a camera thread stuck in a C-level network read
    # (already given up on) must not turn a clean exit into a crash.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])

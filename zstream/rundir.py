"""The run directory: one pipeline's lock, sockets and status files, and their cleanup.

Whoever holds the lock owns the run's shared memory and files. The supervisor holds it
for the pipeline's life. If the supervisor is killed, the kernel drops its lock, and the
first worker to exit takes it and removes the rings and sockets, so nothing outlives the
run. A `zstream up` on the same run dir does the same for anything a crash still left.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import IO

from zstream.errors import PreflightError
from zstream.ring import ring_paths_of_run
from zstream.topology import Topology

log = logging.getLogger(__name__)
LOCK_FILE = "supervisor.lock"
TOPOLOGY_FILE = "topology.json"
STATUS_FILE = "status.json"


class RunDir:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.path = Path(topology.run_dir)
        self._lock: IO[str] | None = None

    def acquire(self) -> None:
        """Lock the run dir for a new pipeline and clear what an earlier run left; refuses
        when another pipeline holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self._try_lock():
            owner = (self.path / LOCK_FILE).read_text().strip() or "?"
            raise PreflightError(f"another `zstream up` (pid {owner}) is running with run_dir {self.path}")
        assert self._lock is not None
        self._lock.truncate(0)
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        self.remove_leftovers()

    def clean_up_after_supervisor(self) -> bool:
        """For a worker whose supervisor died: remove the run's rings and files unless a new
        pipeline already holds the run dir. True when this call cleaned up."""
        if not self.path.is_dir() or not self._try_lock():
            return False
        log.warning("supervisor gone: removing the run's shared memory and sockets")
        self.release()
        return True

    def _try_lock(self) -> bool:
        """Take the lock without waiting. The lock file is re-checked after locking: a file
        unlinked meanwhile by a cleanup is no longer the lock of this run dir."""
        for _ in range(3):
            lock = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 - held until release()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                return False
            try:
                same = os.fstat(lock.fileno()).st_ino == os.stat(self.path / LOCK_FILE).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock = lock
                return True
            lock.close()
        return False

    def remove_leftovers(self) -> None:
        """Only what zstream itself creates: its socket names, its two JSON files, its rings."""
        ours = [*self.path.glob("validate-*.sock"), self.path / "batch.sock", self.path / "stats.sock"]
        for path in [*ours, self.path / TOPOLOGY_FILE, self.path / STATUS_FILE]:
            path.unlink(missing_ok=True)
        for path in ring_paths_of_run(self.topology.run_id):
            log.warning("removing shared memory left by an earlier run: %s", path)
            path.unlink(missing_ok=True)

    def release(self) -> None:
        self.remove_leftovers()
        if self._lock is not None:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None
        with contextlib.suppress(OSError):  # not empty: someone else's files; leave them
            self.path.rmdir()

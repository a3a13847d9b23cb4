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
import stat
import time
from pathlib import Path
from typing import IO

from zstream.core.files import PRIVATE_DIR, PRIVATE_FILE, replace_file
from zstream.core.planes import i420_size
from zstream.core.ring import Ring, ring_path, ring_paths_of_run
from zstream.errors import PreflightError
from zstream.ledger import IN_FLIGHT_PREFIX, LEDGER_PREFIX
from zstream.topology import Camera, Placement, Topology

log = logging.getLogger(__name__)
LOCK_FILE = "supervisor.lock"
TOPOLOGY_FILE = "topology.json"
PLACEMENT_FILE = "placement.json"
STATUS_FILE = "status.json"
ENDPOINTS_FILE = "endpoints.json"  # the control, tap and metrics addresses actually bound
TAP_ENDPOINT_FILE = "tap.endpoint"  # written by the batcher, which binds the tap
TAP_WANTED_FILE = "tap.wanted"  # the batcher: its tap subscribers' camera prefixes, one a line


def create_ring(topology: Topology, camera: Camera, first_seq: int = 0) -> Ring:
    """The camera's ring, sized for its largest frame: made by the supervisor at start, and for a
    camera added or resized live (`first_seq` continues its sequence)."""
    width, height = topology.frame_capacity(camera)
    return Ring.create(
        ring_path(topology.run_id, camera.id),
        topology.ring_slots_for(camera),
        i420_size(width, height),
        first_seq,
    )


def write_pipeline(run_dir: Path, topology: Topology, placement: Placement) -> None:
    """Publish the pipeline's current topology and placement to its workers.

    Placement first, then the topology, each replaced atomically: a worker that sees the
    new topology (what it watches) always finds the placement that goes with it.
    """
    replace_file(run_dir / PLACEMENT_FILE, placement.to_json())
    replace_file(run_dir / TOPOLOGY_FILE, topology.model_dump_json())


class PipelineWatcher:
    """A worker's view of the topology and placement the supervisor publishes; cameras added,
    changed or removed live show up as a new version."""

    CHECK_EVERY_S = 0.2  # a stat() per call would cost a busy stage more than it is worth

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._seen: tuple[int, int] | None = None
        self._next_check = 0.0

    def read(self) -> tuple[Topology, Placement]:
        self._seen = self._stamp()
        topology = Topology.model_validate_json((self.run_dir / TOPOLOGY_FILE).read_text())
        placement = Placement.from_json((self.run_dir / PLACEMENT_FILE).read_text())
        return topology, placement

    def changed(self) -> tuple[Topology, Placement] | None:
        """The new version if the supervisor published one since the last read, else None."""
        now = time.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + self.CHECK_EVERY_S
        try:
            if self._stamp() == self._seen:
                return None
            return self.read()
        except (OSError, ValueError) as exc:  # mid-cleanup, or a torn read: try again next time
            log.debug("cannot read the published topology: %s", exc)
            return None

    def _stamp(self) -> tuple[int, int]:
        info = os.stat(self.run_dir / TOPOLOGY_FILE)
        return info.st_ino, info.st_mtime_ns


def make_private_dir(path: Path) -> None:
    """Create `path` (mode 0700), or make an existing one of ours private; refuse one that belongs
    to another user, who could read (or swap) what we put in it."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    info = path.lstat()  # not stat(): a link planted in /tmp would lead us into someone else's dir
    if not stat.S_ISDIR(info.st_mode):
        raise PreflightError(f"run_dir {path} is a link or not a directory; choose a run_dir of your own")
    if info.st_uid != os.geteuid():
        raise PreflightError(
            f"run_dir {path} belongs to another user (uid {info.st_uid}); choose a run_dir of your own"
        )
    if info.st_mode & 0o777 != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR, follow_symlinks=False)


class RunDir:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.path = Path(topology.run_dir)
        self._lock: IO[str] | None = None

    def acquire(self) -> None:
        """Lock the run dir for a new pipeline and clear what an earlier run left; refuses
        when another pipeline holds it."""
        make_private_dir(self.path)
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
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
            lock = os.fdopen(fd, "a+")  # held until release()
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
        ours += [*self.path.glob(f"{LEDGER_PREFIX}*"), *self.path.glob(f"{IN_FLIGHT_PREFIX}*")]
        ours += self.path.glob("*.tmp")  # a replace_file cut short by a crash
        files = [
            TOPOLOGY_FILE,
            PLACEMENT_FILE,
            STATUS_FILE,
            ENDPOINTS_FILE,
            TAP_ENDPOINT_FILE,
            TAP_WANTED_FILE,
        ]
        for path in [*ours, *(self.path / name for name in files)]:
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

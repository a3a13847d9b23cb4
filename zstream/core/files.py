"""Files zstream writes: private to their user (0600) from their creation on, and replaced
atomically, so a reader sees the old file or the new one, whole."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700  # the run dir: its files name cameras with their passwords, its sockets take frames
PRIVATE_FILE = 0o600


def replace_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically: a reader sees the old file or the new one, whole.

    Every file zstream writes is private to its user (0600), from its creation on: the
    topology and the live overlay hold camera URLs with their passwords, and a file made with
    the umask's mode and narrowed afterwards would be readable by anyone in between.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a crash's leftover, possibly of an older, wider mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    tmp.replace(path)

"""Start scripts/rtsp_server.py for a test, and make sure it is gone afterwards.

The server runs under the system python, which has GStreamer's `gi` bindings; the
venv running the tests does not. If they are missing, that is a broken test machine:
the tests fail with the fix in the message, they never skip.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).resolve().parent.parent / "scripts" / "rtsp_server.py"
READY_TIMEOUT = 15.0  # s; a cold GStreamer registry scan takes a few seconds of it
STOP_TIMEOUT = 5.0  # s between SIGTERM and SIGKILL


@functools.cache
def check_gstreamer() -> None:
    """Raise RuntimeError unless the system python can import GstRtspServer."""
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{SYSTEM_PYTHON} cannot run ({exc}): run `scripts/setup --test`") from exc
    if result.returncode != 0:
        detail = result.stderr.strip()
        raise RuntimeError(
            f"{SYSTEM_PYTHON} cannot import GstRtspServer: run `scripts/setup --test`\n{detail}"
        )


def with_credentials(url: str, user: str, password: str) -> str:
    """rtsp://host/... -> rtsp://user:password@host/... (test credentials need no escaping)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}"


@contextmanager
def rtsp_server(
    file: str | Path | None = None,
    pattern: bool = False,
    size: tuple[int, int] = (640, 360),
    fps: int = 10,
    user: str | None = None,
    password: str | None = None,
    loop: bool = False,
    auth: str = "digest",
    mount: str = "/stream",
    port: int = 0,
    transport: str = "tcp",
) -> Iterator[str]:
    """Serve `file` (or a live test pattern) over RTSP on 127.0.0.1; yield its URL.

    The URL carries no credentials: add them with `with_credentials`. Each client that
    connects gets its own pipeline, starting at the file's first frame.
    """
    if (file is None) == (not pattern):
        raise ValueError("give either file=... or pattern=True")
    check_gstreamer()
    cmd = [SYSTEM_PYTHON, str(SERVER), "--port", str(port), "--mount", mount, "--transport", transport]
    cmd.append("--exit-on-stdin-eof")
    if file is not None:
        cmd += ["--file", str(file)] + (["--loop"] if loop else [])
    else:
        cmd += ["--pattern", "--size", f"{size[0]}x{size[1]}", "--fps", str(fps)]
    if user is not None or password is not None:
        cmd += ["--user", user or "", "--password", password or "", "--auth", auth]

    # stdin is a pipe that only this process holds: if the test run dies without
    # reaching the `finally` below, the pipe closes and the server exits by itself.
    # stderr is inherited, so pytest shows GStreamer's complaints with a failed test.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    # A reader thread, because a plain readline() could block past any deadline.
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
    reader.start()
    try:
        yield _wait_ready(proc, lines)
    finally:
        _stop(proc)
        reader.join(STOP_TIMEOUT)  # the dead server's stdout gives EOF: the thread ends
        proc.stdout.close()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):  # a broken pipe on close is of no interest
                proc.stdin.close()


def _wait_ready(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> str:
    """Return the URL from the server's READY line, or raise if it does not come in time."""
    deadline = time.monotonic() + READY_TIMEOUT
    line = None
    while line is None:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if proc.poll() is not None:
                line = ""  # died without a word; its stderr is in the test output
            elif time.monotonic() > deadline:
                raise RuntimeError(f"rtsp_server.py said no READY within {READY_TIMEOUT:.0f} s") from None
    if not line:  # EOF: the server is on its way out
        raise RuntimeError(f"rtsp_server.py exited with code {proc.wait()} before READY")
    word, _, url = line.strip().partition(" ")
    if word != "READY" or not url.startswith("rtsp://"):
        raise RuntimeError(f"rtsp_server.py said {line!r} instead of 'READY rtsp://...'")
    return url


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; always reap the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""A camera's life as an explicit state machine: where it is, why, and what may come next.

    connecting ──> streaming ──> stalled ──> streaming (frames again)
        │              │            │
        │              ├────────────┴──> reconnecting ──> connecting   (network trouble: back-off)
        ├──────────────┴───────────────> failed ───────> connecting   (refused: slow retry)
        │              └──> ended                                      (a finite source is done)
        └── any state ──> stopped

Every change goes through CameraLifecycle.change(), which refuses an illegal transition and
logs the change in one line; what it records is what status and metrics read.
"""

from __future__ import annotations

import logging
import threading
import time

from zstream.core.vocabulary import CameraState
from zstream.errors import ZStreamError

log = logging.getLogger(__name__)


S = CameraState
TRANSITIONS: dict[CameraState, frozenset[CameraState]] = {
    S.CONNECTING: frozenset({S.STREAMING, S.RECONNECTING, S.FAILED, S.STOPPED}),
    S.STREAMING: frozenset({S.STALLED, S.RECONNECTING, S.FAILED, S.ENDED, S.STOPPED}),
    S.STALLED: frozenset({S.STREAMING, S.RECONNECTING, S.FAILED, S.ENDED, S.STOPPED}),
    S.RECONNECTING: frozenset({S.CONNECTING, S.STOPPED}),
    S.FAILED: frozenset({S.CONNECTING, S.STOPPED}),
    S.ENDED: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}


class IllegalTransition(ZStreamError):
    """A bug: code asked for a state change the machine does not allow."""


class CameraLifecycle:
    """One camera's state, shared by its capture thread and the worker's stall watchdog."""

    def __init__(self, camera_id: str, shown_url: str) -> None:
        self.camera_id = camera_id
        self.shown_url = shown_url  # password already masked
        self.state = CameraState.CONNECTING
        self.detail = ""
        self._last_frame: float | None = None  # monotonic
        self._lock = threading.Lock()

    def change(self, state: CameraState, detail: str = "") -> bool:
        """Move to `state` (or update the detail of the current one); False when nothing changed."""
        with self._lock:
            return self._change(state, detail)

    def _change(self, state: CameraState, detail: str) -> bool:
        if (state, detail) == (self.state, self.detail):
            return False
        if state is not self.state and state not in TRANSITIONS[self.state]:
            raise IllegalTransition(
                f"camera {self.camera_id}: {self.state.value} -> {state.value} is not allowed"
            )
        previous, self.state, self.detail = self.state, state, detail
        if state is CameraState.STREAMING and previous is not CameraState.STREAMING:
            self._last_frame = time.monotonic()  # the stall clock starts with the stream
        level = logging.WARNING if state in (S.STALLED, S.RECONNECTING, S.FAILED) else logging.INFO
        log.log(
            level,
            "camera %s (%s): %s%s",
            self.camera_id,
            self.shown_url,
            state.value,
            f": {detail}" if detail else "",
        )
        return True

    def frame_arrived(self) -> None:
        with self._lock:
            self._last_frame = time.monotonic()
            if self.state is CameraState.STALLED:
                self._change(CameraState.STREAMING, "frames again")

    def check_stall(self, timeout_s: float) -> bool:
        """Called periodically by the worker: a streaming camera with no frame for timeout_s
        stalls. True when this call declared the stall."""
        with self._lock:
            if self.state is not CameraState.STREAMING or self._last_frame is None:
                return False
            silent = time.monotonic() - self._last_frame
            if silent < timeout_s:
                return False
            self._change(CameraState.STALLED, f"no frame for {silent:.1f}s")
            return True

    def snapshot(self) -> tuple[str, str]:
        with self._lock:
            return self.state.value, self.detail

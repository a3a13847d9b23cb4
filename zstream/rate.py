"""Frame-rate caps by stream time: capture's `fps` (frames decoded) and the output rate
(frames written to Redis) both keep at most N frames per second of a camera's own clock."""

from __future__ import annotations

import time


class FpsCap:
    """Lets through at most `fps` frames per second of stream time (pts, else arrival);
    `fps` None or 0 lets every frame through."""

    def __init__(self, fps: float | None) -> None:
        self.fps = fps or 0.0
        self.interval = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def admit(self, pts: float | None) -> bool:
        if not self.interval:
            return True
        now = pts if pts is not None else time.monotonic()
        if self._next is not None and self._next - 2 * self.interval <= now < self._next - 1e-6:
            return False
        # Beyond that window, time jumped (a reconnect, a looped or restarted stream): start afresh.
        # Schedule from the ideal time, not from `now`, so jitter does not lower the rate.
        ideal = (self._next or now) + self.interval
        self._next = ideal if abs(now - ideal) < 2 * self.interval else now + self.interval
        return True

"""The one back-off rule of every part that retries: camera reconnects, worker restarts,
Redis writes and consumer reads (written once, as dramatiq's compute_backoff)."""

from __future__ import annotations

import random
from dataclasses import dataclass


def backoff(failures: int, first_s: float, max_s: float) -> float:
    """Seconds to wait after `failures` consecutive failures (1 for the first): `first_s`
    doubling at each failure up to `max_s`, then jittered to half to all of it, so that many
    clients behind one outage do not retry in step."""
    return min(max_s, first_s * 2 ** max(0, failures - 1)) * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class RestartPolicy:
    """How the supervisor restarts a worker that died: back-off() from `initial_s` to `max_s`;
    a worker that ran `stable_after_s` starts over."""

    initial_s: float
    max_s: float
    stable_after_s: float = 10.0

    def delay(self, failures: int) -> float:
        return backoff(failures, self.initial_s, self.max_s)

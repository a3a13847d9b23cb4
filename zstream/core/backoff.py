"""The one back-off rule of every part that retries: camera reconnects, worker restarts,
Redis writes and consumer reads (written once, as dramatiq's compute_backoff)."""

from __future__ import annotations

import random


def backoff(failures: int, first_s: float, max_s: float) -> float:
    """Seconds to wait after `failures` consecutive failures (1 for the first): `first_s`
    doubling at each failure up to `max_s`, then jittered to half to all of it, so that many
    clients behind one outage do not retry in step."""
    return min(max_s, first_s * 2 ** max(0, failures - 1)) * random.uniform(0.5, 1.0)

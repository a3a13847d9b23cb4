"""Restart back-off: exponential, capped, jittered so crashed workers do not restart in step."""

from __future__ import annotations

import statistics

from zstream.supervisor import RestartPolicy


def test_delay_doubles_per_consecutive_failure_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_s=0.5, max_s=8.0)
    for failures, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = [policy.delay(failures) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays), (failures, min(delays), max(delays))
        assert statistics.pstdev(delays) > base * 0.05  # jittered, not all equal

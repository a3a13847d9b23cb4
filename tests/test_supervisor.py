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


def test_latency_quantiles_come_from_the_bucket_counts() -> None:
    from zstream.stats import latency_bucket, latency_quantile

    assert [latency_bucket(s) for s in (0.001, 0.005, 0.0051, 0.15, 99.0)] == ["5", "5", "10", "200", "inf"]
    counts = {("latency_ms", "", "50"): 90, ("latency_ms", "", "500"): 9, ("latency_ms", "", "inf"): 1}
    assert latency_quantile(counts, 0.5) == "<= 50 ms"
    assert latency_quantile(counts, 0.95) == "<= 500 ms"
    assert latency_quantile(counts, 1.0) == "> 10000 ms"
    assert latency_quantile({}, 0.5) == "n/a"

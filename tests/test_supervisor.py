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

    seconds = (0.001, 0.005, 0.0051, 0.15, 0.16, 0.21, 99.0)
    assert [latency_bucket(s) for s in seconds] == ["5", "5", "10", "150", "200", "220", "inf"]
    counts = {("latency_ms", "", "50"): 90, ("latency_ms", "", "500"): 9, ("latency_ms", "", "inf"): 1}
    assert latency_quantile(counts, 0.5) == "<= 50 ms"
    assert latency_quantile(counts, 0.95) == "<= 500 ms"
    assert latency_quantile(counts, 1.0) == "> 10000 ms"
    assert latency_quantile({}, 0.5) == "n/a"


def test_counters_split_by_camera_lose_nothing_and_mix_nothing() -> None:
    from zstream.stats import by_camera, by_reason, total

    counts = {
        ("written", "a", ""): 5,
        ("dropped", "a", "batch:overwritten"): 2,
        ("written", "b", ""): 7,
        ("batches_written", "", ""): 3,
    }
    split = by_camera(counts)
    assert set(split) == {"a", "b", ""}
    assert sum(len(part) for part in split.values()) == len(counts)
    assert total(split["a"], "written", "a") == 5 and total(split["b"], "written", "b") == 7
    assert (
        by_reason(split["a"], "dropped", "a") == {"batch:overwritten": 2}
        and split["b"].get(("dropped", "a", "")) is None
    )

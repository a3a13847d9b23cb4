"""Restart back-off, counters and rates as the supervisor computes them from workers' reports."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import pytest

from zstream.core.backoff import RestartPolicy
from zstream.stats import CameraRates


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


def _rates_of(received: Callable[[float], int], written: Callable[[float], int], until: float) -> list:
    """fps in/out as status shows them each second, for counts given as functions of time."""
    rates, views = CameraRates(), []
    for step in range(int(until * 10) + 1):  # the supervisor samples once per stats interval (1 s)
        now = step / 10
        if step % 10 == 0:
            counts = {("received", "cam", ""): received(now), ("written", "cam", ""): written(now)}
            counts[("written_span_us", "cam", "")] = round(written(now) * 1e5)  # 10 fps: 0.1 s a frame
            rates.update({"cam": counts}, ["cam"], now)
            views.append((now, rates.view("cam", now)))
    return views


@pytest.mark.parametrize("phase", [0.0, 0.13, 0.37, 0.61, 0.89])
@pytest.mark.parametrize("batch_every_s", [0.3, 0.8, 1.6])
def test_fps_out_is_right_when_frames_leave_in_batches(phase: float, batch_every_s: float) -> None:
    """A 10 fps camera written in batches, reports sampled once a second, whatever the phase."""

    def received(t: float) -> int:
        return int(max(0.0, t - 2.0) * 10)  # the camera starts 2 s in

    def written(t: float) -> int:
        batches = int(max(0.0, t - 2.0 - phase) / batch_every_s)
        return int(batches * batch_every_s * 10)

    for now, view in _rates_of(received, written, until=20):
        if now >= 2.0 + 2 * batch_every_s + 3:  # a few steps in: no ramp-up, even this early
            assert abs(view["fps_in"] - 10) <= 0.5, (now, view)
            assert abs(view["fps_out"] - 10) <= 0.5, (now, view)


def test_fps_falls_to_zero_when_a_camera_stops() -> None:
    def counts(t: float) -> int:
        return int(min(t, 10.0) * 10)  # stops at 10 s

    views = dict(_rates_of(counts, counts, until=20))
    assert views[9.0]["fps_in"] == pytest.approx(10, abs=0.5)
    assert views[20.0]["fps_in"] == 0 and views[20.0]["fps_out"] == 0

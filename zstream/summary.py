"""What `zstream up` logs about the whole pipeline: a summary line every `log_interval_s`, and at
exit, per camera, where every captured frame went (its books)."""

from __future__ import annotations

import logging

from zstream.core.vocabulary import CameraState, Metric
from zstream.ledger import CounterKey
from zstream.stats import books, by_camera, by_reason, latency_quantile, total
from zstream.status import CameraStatus, Quality

log = logging.getLogger("zstream.supervisor")  # these lines are the supervisor's


def log_summary(
    counts: dict[CounterKey, int], states: list[str], cameras: int, restarts: int, final: bool = False
) -> None:
    """One line: cameras streaming, frames through each stage, latency, drops and restarts."""
    streaming = states.count(CameraState.STREAMING.value)
    dropped = by_reason(counts, Metric.DROPPED)
    drops = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items())) or "none"
    log.info(
        "%scameras streaming %d/%d · captured %d · validated %d (failed QC %d) · written %d in %d "
        "batches · latency p50 %s, p99 %s · dropped %s · restarts %d",
        "final: " if final else "",
        streaming,
        cameras,
        total(counts, Metric.CAPTURED),
        total(counts, Metric.VALIDATED),
        total(counts, Metric.QC_WRITTEN),
        total(counts, Metric.WRITTEN),
        total(counts, Metric.BATCHES_WRITTEN),
        latency_quantile(counts, 0.5),
        latency_quantile(counts, 0.99),
        drops,
        restarts,
    )


def log_books(
    counts: dict[CounterKey, int], rows: dict[str, CameraStatus], committed: dict[str, int]
) -> None:
    """Per camera (`rows`: status.json's cameras), where every captured frame went: the parts
    add up to `captured`, its ring's count of frames written (`committed`)."""
    lost = sum(row["unaccounted"] for row in rows.values())
    (log.warning if lost else log.info)(
        "final: unaccounted %d (frames lost in a crash or cut off at the drain deadline)", lost
    )
    per_camera = by_camera(counts)
    for camera, row in rows.items():
        parts = books(per_camera.get(camera, {}), committed[camera], camera)
        log.info(
            "  %-24s %-12s captured %7d  written %7d  qc %d  skipped %d  dropped %d  lost %d  passed QC %s",
            camera,
            row["state"],
            *parts.values(),
            _describe_quality(row["quality"]),
        )


def _describe_quality(quality: Quality) -> str:
    if quality["pass_rate"] is None:
        return "n/a"
    failures = ", ".join(f"{reason} {n}" for reason, n in quality["top_failures"].items())
    return f"{quality['pass_rate']:.1%}" + (f" (most failed: {failures})" if failures else "")

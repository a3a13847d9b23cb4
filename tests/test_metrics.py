"""Prometheus /metrics: scraped over real HTTP and read back with prometheus_client's own parser."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import topology_text, wait_until
from zstream.camera import CameraState
from zstream.core.vocabulary import Metric
from zstream.core.wire import WorkerStats
from zstream.errors import PreflightError
from zstream.metrics import METRICS, MetricsExporter, families, parse_address
from zstream.stats import LATENCY_BUCKETS_MS, Counters, StatsBoard, latency_bucket
from zstream.status import CameraStatus, read_status
from zstream.topology import parse_topology

Families = dict[str, dict[str, Any]]  # family name -> {"type": ..., "samples": [...]}


def scrape(address: str) -> Families:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    parsed: Families = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in parsed, f"family {family.name} exported twice"
        parsed[family.name] = {"type": family.type, "samples": family.samples}
    return parsed


def value(parsed: Families, sample_name: str, **labels: str) -> float:
    """The value of the one sample with this name and exactly these labels."""
    found = [
        s.value
        for family in parsed.values()
        for s in family["samples"]
        if s.name == sample_name and s.labels == labels
    ]
    assert len(found) == 1, f"{sample_name}{labels}: {len(found)} samples"
    return found[0]


def samples(parsed: Families, sample_name: str) -> list[Sample]:
    return [s for family in parsed.values() for s in family["samples"] if s.name == sample_name]


def fleet_snapshot() -> tuple[dict[tuple[str, str, str], int], dict[str, Any]]:
    """What the supervisor would hand over: board totals of several worker processes (one a
    restarted worker whose old process's last report still counts) and the status built on them."""
    capture_old, capture_new, validate, batch = Counters(), Counters(), Counters(), Counters()
    capture_old.add("received", "cam-a", n=40)
    capture_old.add("captured", "cam-a", n=38)
    capture_old.drop("capture", "queue_full", "cam-a", n=2)
    capture_old.add("reconnects", "cam-a")
    capture_new.add("received", "cam-a", n=60)
    capture_new.add("captured", "cam-a", n=60)
    capture_new.add("received", "cam-b", n=30)
    capture_new.add("skipped", "cam-b", "fps_cap", n=15)
    capture_new.add("captured", "cam-b", n=15)
    capture_new.add("stalls", "cam-b", n=2)
    capture_new.add("corrupt_packets", "cam-b", n=3)
    validate.add("validated", "cam-a", n=97)
    validate.add("rejected", "cam-a", n=5)
    for reason, n in (("blurred", 5), ("too_dark", 2)):
        validate.add("failed", "cam-a", reason, n)
    validate.drop("validate", "overwritten", "cam-a")
    validate.drop("validate", "bad_message")  # no camera: the message could not be read
    validate.add("validated", "cam-b", n=15)
    for latency_s in [0.004] * 10 + [0.03] * 60 + [0.15] * 30 + [12.0] * 2:
        batch.add("latency_ms", reason=latency_bucket(latency_s))
        batch.add("latency_ms_sum", n=round(latency_s * 1000))
    for size, n in ((4, 20), (2, 5), (1, 2)):  # 92 frames in 27 batches
        batch.add("batch_frames", reason=str(size), n=n)
    batch.add("batches_written", n=27)
    batch.add("written", "cam-a", n=80)
    batch.add("written", "cam-b", n=12)
    batch.add("qc_written", "cam-a", n=5)
    batch.drop("batch", "redis_backlog", "cam-b", n=3)
    batch.add("redis_errors", n=4)
    board = StatsBoard()
    board.update(WorkerStats("capture-0", 100, capture_old.snapshot(), {"cam-a": ("reconnecting", "x")}))
    board.update(WorkerStats("capture-0", 101, capture_new.snapshot(), {"cam-a": ("streaming", "")}))
    board.update(WorkerStats("validate-0", 102, validate.snapshot(), {}))
    board.update(WorkerStats("batch-0", 103, batch.snapshot(), {}))
    board.count("worker_restarts", reason="capture-0")
    counts = board.totals()
    camera = {"fps_in": None, "fps_out": None, "last_frame_age_s": None, "unaccounted": 0}
    status = {
        "uptime_s": 12.5,
        "shard": None,
        "cameras": {
            "cam-a": {
                **camera,
                "state": "streaming",
                "fps_in": 25.0,
                "fps_out": 24.5,
                "last_frame_age_s": 0.2,
            },
            "cam-b": {**camera, "state": "stalled", "fps_in": 0.0, "fps_out": 0.0, "last_frame_age_s": 7.1},
            "cam-c": {**camera, "state": "starting"},  # no report yet: no rate, no age, all counters 0
        },
        "workers": {
            "batch-0": {"state": "running", "pid": 103, "restarts": 0},
            "validate-0": {"state": "running", "pid": 102, "restarts": 0},
            "capture-0": {"state": "backoff", "pid": None, "restarts": 1},
        },
    }
    return counts, status


@pytest.fixture
def exporter() -> Any:
    exporter = MetricsExporter("127.0.0.1:0")
    exporter.start()
    yield exporter
    exporter.stop()


def test_scrape_shows_every_counter_summed_across_processes_with_its_labels(exporter) -> None:
    assert exporter.port and exporter.address == f"127.0.0.1:{exporter.port}"
    assert not any(name.startswith("zstream_") for name in scrape(exporter.address))  # nothing pushed yet
    exporter.update(*fleet_snapshot())
    parsed = scrape(exporter.address)

    assert {name for name in parsed} == {name.removesuffix("_total") for name in METRICS}
    for name, family in parsed.items():  # Prometheus conventions: counters end in _total, units spelled out
        assert name.startswith("zstream_")
        assert all(s.name == f"{name}_total" for s in family["samples"]) == (family["type"] == "counter")
        assert not name.endswith(("_ms", "_total"))

    assert value(parsed, "zstream_frames_received_total", camera="cam-a") == 100  # 40 (old pid) + 60
    assert value(parsed, "zstream_frames_captured_total", camera="cam-a") == 98
    assert value(parsed, "zstream_frames_validated_total", camera="cam-a") == 97
    assert value(parsed, "zstream_frames_rejected_total", camera="cam-a") == 5
    assert value(parsed, "zstream_frames_written_total", camera="cam-b") == 12
    assert value(parsed, "zstream_qc_entries_written_total", camera="cam-a") == 5
    for name in ("received", "captured", "validated", "written"):  # series exist before any frame
        assert value(parsed, f"zstream_frames_{name}_total", camera="cam-c") == 0
    assert value(parsed, "zstream_frames_skipped_total", camera="cam-b", reason="fps_cap") == 15
    assert value(parsed, "zstream_camera_reconnects_total", camera="cam-a") == 1
    assert value(parsed, "zstream_camera_stalls_total", camera="cam-b") == 2
    assert value(parsed, "zstream_corrupt_packets_total", camera="cam-b") == 3

    drops = {
        (s.labels["camera"], s.labels["stage"], s.labels["reason"]): s.value
        for s in samples(parsed, "zstream_frames_dropped_total")
    }
    assert drops == {
        ("cam-a", "capture", "queue_full"): 2,
        ("cam-a", "validate", "overwritten"): 1,
        ("", "validate", "bad_message"): 1,
        ("cam-b", "batch", "redis_backlog"): 3,
    }
    failures = {
        (s.labels["camera"], s.labels["reason"]): s.value
        for s in samples(parsed, "zstream_qc_failures_total")
    }
    assert failures == {("cam-a", "blurred"): 5, ("cam-a", "too_dark"): 2}

    assert value(parsed, "zstream_batches_written_total") == 27
    assert value(parsed, "zstream_redis_errors_total") == 4
    assert value(parsed, "zstream_batches_shed_total") == 0
    assert value(parsed, "zstream_worker_restarts_total", worker="capture-0") == 1
    assert value(parsed, "zstream_worker_restarts_total", worker="batch-0") == 0
    assert value(parsed, "zstream_worker_up", worker="capture-0") == 0
    assert value(parsed, "zstream_worker_up", worker="validate-0") == 1
    assert value(parsed, "zstream_uptime_seconds") == 12.5


def test_camera_state_is_one_hot_over_every_state_and_rates_are_absent_until_known(exporter) -> None:
    exporter.update(*fleet_snapshot())
    parsed = scrape(exporter.address)
    states: dict[str, dict[str, float]] = {}
    for s in samples(parsed, "zstream_camera_state"):
        states.setdefault(s.labels["camera"], {})[s.labels["state"]] = s.value
    for camera, current in (("cam-a", "streaming"), ("cam-b", "stalled"), ("cam-c", "starting")):
        assert set(states[camera]) == {"starting"} | {state.value for state in CameraState}
        assert {state for state, v in states[camera].items() if v == 1} == {current}
        assert sum(states[camera].values()) == 1
    assert value(parsed, "zstream_camera_fps", camera="cam-a", direction="in") == 25.0
    assert value(parsed, "zstream_camera_fps", camera="cam-a", direction="out") == 24.5
    assert value(parsed, "zstream_camera_last_frame_age_seconds", camera="cam-b") == 7.1
    assert not [s for s in samples(parsed, "zstream_camera_fps") if s.labels["camera"] == "cam-c"]
    assert not [
        s for s in samples(parsed, "zstream_camera_last_frame_age_seconds") if s.labels["camera"] == "cam-c"
    ]


def test_histograms_have_cumulative_second_buckets_count_and_sum(exporter) -> None:
    exporter.update(*fleet_snapshot())
    parsed = scrape(exporter.address)
    assert parsed["zstream_capture_to_redis_latency_seconds"]["type"] == "histogram"
    assert parsed["zstream_batch_frames"]["type"] == "histogram"

    latency = {
        s.labels["le"]: s.value for s in samples(parsed, "zstream_capture_to_redis_latency_seconds_bucket")
    }
    assert list(latency) == [*(str(float(ms) / 1000) for ms in LATENCY_BUCKETS_MS), "+Inf"]
    assert latency["0.005"] == 10 and latency["0.05"] == 70 and latency["0.2"] == 100
    assert latency["10.0"] == 100 and latency["+Inf"] == 102  # 12 s is beyond the last bound
    assert list(latency.values()) == sorted(latency.values())  # cumulative
    assert value(parsed, "zstream_capture_to_redis_latency_seconds_count") == 102
    assert value(parsed, "zstream_capture_to_redis_latency_seconds_sum") == pytest.approx(
        (10 * 4 + 60 * 30 + 30 * 150 + 2 * 12000) / 1000
    )

    batches = {s.labels["le"]: s.value for s in samples(parsed, "zstream_batch_frames_bucket")}
    assert batches["1.0"] == 2 and batches["2.0"] == 7 and batches["4.0"] == 27 and batches["+Inf"] == 27
    assert list(batches.values()) == sorted(batches.values())
    assert value(parsed, "zstream_batch_frames_count") == value(parsed, "zstream_batches_written_total") == 27
    assert value(parsed, "zstream_batch_frames_sum") == 92  # = frames written, over all cameras


def test_stop_closes_the_port_and_leaves_no_thread() -> None:
    exporter = MetricsExporter("127.0.0.1:0")
    exporter.start()
    port, thread = exporter.port, exporter._thread
    assert port and thread is not None and thread.is_alive()
    scrape(f"127.0.0.1:{port}")
    exporter.stop()
    assert exporter.port is None and exporter.address is None
    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    exporter.stop()  # twice is harmless
    again = MetricsExporter(f"127.0.0.1:{port}")  # the port is free again
    again.start()
    assert again.port == port
    again.stop()


def test_a_busy_or_malformed_address_is_refused_and_an_empty_one_disables_metrics(exporter) -> None:
    with pytest.raises(PreflightError, match="cannot listen"):
        MetricsExporter(exporter.address).start()
    for bad in ("localhost", "127.0.0.1:http", "127.0.0.1:70000", "::1:9108"):
        with pytest.raises(PreflightError, match="host:port"):
            MetricsExporter(bad)
    assert parse_address("[::1]:9108") == ("::1", 9108)
    assert parse_address(":9108") == ("0.0.0.0", 9108)
    disabled = MetricsExporter("")
    disabled.start()
    disabled.update({}, {})
    assert disabled.port is None and disabled.address is None
    disabled.stop()


def test_the_supervisors_own_status_is_what_the_exporter_reads() -> None:
    """The status dict comes from Supervisor.status: a renamed key there must fail here."""
    from zstream.supervisor import Supervisor

    topology = parse_topology(
        {"run_dir": "/tmp/zs-metrics-unused", "cameras": [{"id": "cam-a", "url": "synthetic://traffic"}]},
        Path("/tmp"),
    )
    counts, _ = fleet_snapshot()
    status = Supervisor(topology).status(counts)
    parsed = {family.name: family for family in families(counts, status)}
    received = parsed["zstream_frames_received"].samples
    assert {(s.labels["camera"], s.value) for s in received} >= {("cam-a", 100)}
    state = {s.labels["state"]: s.value for s in parsed["zstream_camera_state"].samples}
    assert state["starting"] == 1 and sum(state.values()) == 1
    workers = {s.labels["worker"] for s in parsed["zstream_worker_up"].samples}
    assert workers == {"batch-0", "validate-0", "capture-0"}
    assert parsed["zstream_uptime_seconds"].samples[0].value >= 0
    # What it builds is what zstream.status types, what status.json and the control endpoint carry,
    # and the counters a camera shows are named as the counters are.
    assert read_status(json.loads(json.dumps(status))) == status
    counted = set(CameraStatus.__annotations__) & {metric.value for metric in Metric}
    assert counted == {"received", "captured", "validated", "written", "failed", "skipped"} | {
        "corrupt_packets",
        "reconnects",
        "reconnected",
        "stalls",
        "dropped",
    }


def test_a_running_pipeline_serves_metrics_that_agree_with_its_status(
    pipeline, run_dir: Path, streams: tuple[str, str]
) -> None:
    # topology_text's [metrics] section asks for a port the pipeline picks itself.
    running = pipeline(
        topology_text(run_dir, streams, [{"id": "cam-a", "url": "synthetic://traffic?size=320x240&fps=25"}])
    )

    def metrics_address() -> str | None:
        return running.status().get("endpoints", {}).get("metrics")

    address = wait_until(metrics_address, 60, message="endpoints.metrics in status.json")
    assert address.startswith("127.0.0.1:") and not address.endswith(":0")
    wait_until(lambda: running.camera("cam-a").get("written", 0) >= 20, 60, message="frames written")

    def settled() -> Families | None:
        parsed = scrape(address)
        written = value(parsed, "zstream_frames_written_total", camera="cam-a")
        return parsed if written >= 20 else None

    parsed = wait_until(settled, 30, message="metrics showing written frames")
    written = value(parsed, "zstream_frames_written_total", camera="cam-a")
    # Counters of one process agree; those of different processes are reported at different times.
    captured = value(parsed, "zstream_frames_captured_total", camera="cam-a")
    assert value(parsed, "zstream_frames_received_total", camera="cam-a") >= captured > 0
    assert value(parsed, "zstream_camera_state", camera="cam-a", state="streaming") == 1
    # One snapshot: the histograms count exactly the frames and batches the counters do.
    assert value(parsed, "zstream_capture_to_redis_latency_seconds_count") == written
    assert value(parsed, "zstream_capture_to_redis_latency_seconds_sum") > 0
    assert value(parsed, "zstream_batch_frames_sum") == written
    assert value(parsed, "zstream_batch_frames_count") == value(parsed, "zstream_batches_written_total") > 0
    for worker in ("batch-0", "validate-0", "validate-1", "capture-0", "capture-1"):
        assert value(parsed, "zstream_worker_up", worker=worker) == 1
        assert value(parsed, "zstream_worker_restarts_total", worker=worker) == 0
    assert value(parsed, "zstream_uptime_seconds") > 0

    code = running.stop()
    assert code == 0, running.log
    port = int(address.rpartition(":")[2])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass

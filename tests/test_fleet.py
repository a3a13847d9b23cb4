"""Three shard instances on one host writing to a real three-node Redis Cluster, one consumer
group reading every camera of every shard; one instance killed with SIGKILL and restarted."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.crc import key_slot

from tests.conftest import REDIS_URL, REPO, Pipeline, topology_text, wait_until
from tests.redis_cluster import LocalCluster
from zstream.consumer import BatchConsumer
from zstream.shard import owner

SHARDS = 3
PER_SHARD = 2
FPS = 5
BASE = ("fleet:frames", "fleet:qc")


def camera_ids() -> dict[int, list[str]]:
    """PER_SHARD camera ids owned by each shard."""
    owned: dict[int, list[str]] = {index: [] for index in range(SHARDS)}
    number = 0
    while any(len(ids) < PER_SHARD for ids in owned.values()):
        camera = f"cam-{number}"
        if len(owned[owner(camera, SHARDS)]) < PER_SHARD:
            owned[owner(camera, SHARDS)].append(camera)
        number += 1
    return owned


@dataclass
class Seen:
    """What the consumer received: per camera, (capture time, arrival time) of every frame."""

    frames: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def since(self, camera: str, t: float) -> int:
        with self.lock:
            return sum(1 for captured, _ in self.frames.get(camera, []) if captured > t)


@dataclass
class Fleet:
    cluster: LocalCluster
    files: list[Path]
    run_dirs: list[Path]
    instances: list[Pipeline]
    owned: dict[int, list[str]]
    seen: Seen
    consumer: BatchConsumer

    def start(self, index: int) -> Pipeline:
        instance = Pipeline(self.files[index], self.run_dirs[index], ("--shard", f"{index}/{SHARDS}"))
        self.instances[index] = instance
        return instance

    def endpoints(self, index: int) -> dict[str, str]:
        return json.loads((self.run_dirs[index] / "endpoints.json").read_text())


def _consume(consumer: BatchConsumer, seen: Seen, stop: threading.Event) -> None:
    while not stop.is_set():
        for batch in consumer.read(block_ms=200):
            now = time.time()
            with seen.lock:
                for frame in batch.frames:
                    seen.frames.setdefault(frame.camera, []).append((frame.capture_ts, now))
            consumer.ack(batch)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    (root / "redis").mkdir()
    cluster = LocalCluster(root / "redis")
    cluster.start()
    owned = camera_ids()
    cameras = [
        {"id": camera, "url": f"synthetic://traffic?size=320x240&fps={FPS}"}
        for index in range(SHARDS)
        for camera in owned[index]
    ]
    sections = {
        "capture": "[capture]\nworkers = 1\nring_slots = 16\nqueue_depth = 6",
        "validation": "[validation]\nworkers = 1\n[validation.thresholds]\nmin_sharpness = 0.0",
    }
    files, run_dirs = [], []
    for index in range(SHARDS):
        run_dir = Path(f"/tmp/zs-fleet-{os.getpid()}-{index}")
        text = topology_text(run_dir, BASE, cameras, **sections)
        text = text.replace(f'url = "{REDIS_URL}"', f'url = "{cluster.url}"\ncluster = true')
        files.append(root / f"shard-{index}.toml")
        files[-1].write_text(text)
        run_dirs.append(run_dir)
    consumer = BatchConsumer(cluster.url, stream=BASE[0], group="fleet", start="0", block_ms=200)
    fleet = Fleet(cluster, files, run_dirs, [], owned, Seen(), consumer)
    fleet.instances = [Pipeline(files[i], run_dirs[i], ("--shard", f"{i}/{SHARDS}")) for i in range(SHARDS)]
    stop = threading.Event()
    reader = threading.Thread(target=_consume, args=(consumer, fleet.seen, stop), daemon=True)
    reader.start()
    try:
        yield fleet
    finally:
        for instance in fleet.instances:
            instance.stop()
        stop.set()
        reader.join(10)
        consumer.close()
        cluster.stop()


def test_consumer_group_reads_every_camera_of_every_shard(fleet: Fleet) -> None:
    everyone = [camera for ids in fleet.owned.values() for camera in ids]
    wait_until(lambda: all(fleet.seen.since(c, 0) >= 3 for c in everyone), 60, message="every camera")
    shard_streams = sorted(s for s in fleet.consumer.streams if s != BASE[0])
    assert shard_streams == [f"{BASE[0]}:{{shard-{i}}}" for i in range(SHARDS)]  # found, not configured
    assert len({key_slot(stream.encode()) for stream in shard_streams}) == SHARDS
    for index, instance in enumerate(fleet.instances):
        status = instance.status()
        assert status["shard"] == f"{index}/{SHARDS}"
        assert sorted(status["cameras"]) == sorted(fleet.owned[index])
        assert f"shard {index}/{SHARDS} supervisor" in instance.log


def test_metrics_say_the_shard(fleet: Fleet) -> None:
    address = fleet.endpoints(2)["metrics"]
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    assert f'zstream_shard_info{{shard="2",shards="{SHARDS}"}} 1.0' in text


def exported(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Every series name /metrics can show (a counter's _total, a histogram's _bucket...),
    and the label names of those that have samples."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in text_string_to_metric_families(text):
        names |= {family.name, *(family.name + suffix for suffix in suffixes.get(family.type, ()))}
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return names, labels


def test_dashboard_queries_name_metrics_that_metrics_exports(fleet: Fleet) -> None:
    address = fleet.endpoints(0)["metrics"]
    names, labels = exported(urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode())
    dashboard = json.loads((REPO / "deploy" / "grafana" / "zstream-dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queries += [
        v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)
    ]
    assert len(queries) > 20
    for query in queries:
        used = re.findall(r"\b(zstream_[a-z0-9_]+)(?:\{([^}]*)\})?", query)
        assert used, query
        for name, selector in used:
            assert name in names, f"{name} (in {query}) is not exported"
            for label in re.findall(r"(\w+)\s*=~?", selector):
                assert name not in labels or label in labels[name], f"{name} has no label {label}"


def zstream(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "zstream.cli", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_health_and_queues_work_on_the_cluster(fleet: Fleet) -> None:
    health = zstream("health", "-t", str(fleet.files[1]))
    assert health.returncode == 0 and health.stdout.strip() == "healthy", health.stdout + health.stderr
    queues = json.loads(zstream("queues", "--json", "-t", str(fleet.files[1])).stdout)
    frames = next(q for q in queues if q["stream"] == f"{BASE[0]}:{{shard-1}}")
    assert frames["length"] > 0 and [g["group"] for g in frames["groups"]] == ["fleet"]


def test_cameras_add_on_the_wrong_shard_names_the_owner(fleet: Fleet) -> None:
    stranger = next(f"new-{n}" for n in range(100) if owner(f"new-{n}", SHARDS) != 0)
    url = "synthetic://traffic?size=320x240&fps=5"
    result = zstream("cameras", "add", "-t", str(fleet.files[0]), stranger, url)
    assert result.returncode == 1
    assert f"belongs to shard {owner(stranger, SHARDS)}/{SHARDS}" in result.stderr
    assert f"this pipeline is shard 0/{SHARDS}" in result.stderr


def test_kill_one_instance_others_continue_then_it_resumes(fleet: Fleet) -> None:
    victim, others = 1, [c for i, ids in fleet.owned.items() if i != 1 for c in ids]
    watch_from = time.time()
    wait_until(lambda: all(fleet.seen.since(c, 0) >= 3 for ids in fleet.owned.values() for c in ids), 60)
    fleet.instances[victim].process.send_signal(signal.SIGKILL)
    fleet.instances[victim].process.wait(10)
    killed = time.time()
    time.sleep(4)
    for camera in fleet.owned[victim]:  # stopped: nothing captured a moment after the kill
        assert fleet.seen.since(camera, killed + 1.0) == 0, camera
    for camera in others:
        assert fleet.seen.since(camera, killed + 1.0) >= FPS, camera
    fleet.instances[victim].stop()
    restarted = time.time()
    fleet.start(victim)
    wait_until(
        lambda: all(fleet.seen.since(c, restarted) >= 3 for c in fleet.owned[victim]), 60, message="resumed"
    )
    time.sleep(1)
    with fleet.seen.lock:
        for camera in others:  # no gap in the others' frames across the kill and the restart
            arrivals = sorted(captured for captured, _ in fleet.seen.frames[camera] if captured >= watch_from)
            gaps = [b - a for a, b in itertools.pairwise(arrivals)]
            assert max(gaps) < 1.5, (camera, max(gaps))
            assert arrivals[-1] > time.time() - 2

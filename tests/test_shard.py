"""Shards: parsing, rendezvous hashing, what one shard runs, and the CLI's refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from zstream.shard import Shard, ShardError, owner, parse_shard, shard_streams_pattern, shard_topology
from zstream.topology import parse_topology

CAMERA_IDS = [f"cam-{i:04d}" for i in range(3000)]


def test_parse_accepts_index_and_pod_name_forms() -> None:
    assert parse_shard("0/3") == Shard(0, 3)
    assert parse_shard(" 2/3 ") == Shard(2, 3)
    assert parse_shard("zstream-2/3") == Shard(2, 3)  # a StatefulSet pod's name ends in its ordinal
    assert parse_shard("ingest.city-b-11/12") == Shard(11, 12)
    assert str(Shard(1, 4)) == "1/4"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("3/3", "the index must be from 0 to 2"),
        ("-1/2", "the index must be from 0 to 1"),
        ("a/b", "expected I/N such as 0/3"),
        ("1/0", "the number of shards must be from 1"),
        ("2", "expected I/N"),
        ("zstream/3", "expected I/N"),
    ],
)
def test_parse_refuses_bad_values(text: str, says: str) -> None:
    with pytest.raises(ShardError, match=says) as info:
        parse_shard(text)
    assert repr(text) in str(info.value)


def test_rendezvous_spreads_evenly_and_moves_about_one_in_n_plus_one() -> None:
    for count in (2, 3, 5, 8):
        before = {camera: owner(camera, count) for camera in CAMERA_IDS}
        after = {camera: owner(camera, count + 1) for camera in CAMERA_IDS}
        per_shard = [list(before.values()).count(index) for index in range(count)]
        assert min(per_shard) > 0.8 * len(CAMERA_IDS) / count, per_shard
        moved = [camera for camera in CAMERA_IDS if before[camera] != after[camera]]
        # Only to the new shard, and about 1/(N+1) of the cameras.
        assert all(after[camera] == count for camera in moved)
        assert abs(len(moved) / len(CAMERA_IDS) - 1 / (count + 1)) < 0.03, (count, len(moved))


def test_every_camera_has_exactly_one_owner() -> None:
    shards = [Shard(index, 4) for index in range(4)]
    for camera in CAMERA_IDS[:500]:
        assert sum(shard.owns(camera) for shard in shards) == 1


def test_shard_topology_keeps_owned_cameras_and_renames_streams(tmp_path: Path) -> None:
    raw = {
        "run_dir": str(tmp_path / "run"),
        "redis": {"stream": "city:frames", "qc_stream": "city:qc"},
        "cameras": [{"id": camera, "url": "synthetic://traffic?size=320x240"} for camera in CAMERA_IDS[:40]],
    }
    topology = parse_topology(raw, tmp_path)
    parts = [shard_topology(topology, Shard(index, 3)) for index in range(3)]
    ids = [camera.id for part in parts for camera in part.cameras]
    assert sorted(ids) == sorted(CAMERA_IDS[:40])
    assert [part.redis.stream for part in parts] == [f"city:frames:{{shard-{i}}}" for i in range(3)]
    assert parts[1].redis.qc_stream == "city:qc:{shard-1}"
    # One shard's streams share a hash slot; different shards' streams need not.
    from redis.crc import key_slot

    assert key_slot(parts[1].redis.stream.encode()) == key_slot(parts[1].redis.qc_stream.encode())
    assert shard_streams_pattern("a*b") == "a\\*b:{shard-*}"


def test_a_shard_may_own_no_camera_but_a_file_needs_one(tmp_path: Path) -> None:
    raw = {"run_dir": str(tmp_path / "run"), "cameras": [{"id": "only", "url": "synthetic://traffic"}]}
    topology = parse_topology(raw, tmp_path)
    empty = next(shard_topology(topology, Shard(i, 2)) for i in range(2) if not Shard(i, 2).owns("only"))
    assert empty.cameras == []
    assert type(topology).model_validate_json(empty.model_dump_json()).cameras == []  # what workers read
    from zstream.errors import TopologyError

    with pytest.raises(TopologyError, match=r"cameras: at least one camera is needed"):
        parse_topology({"cameras": []}, tmp_path)


@pytest.mark.parametrize(("args", "env"), [(["--shard", "3/3"], {}), ([], {"ZSTREAM_SHARD": "a/b"})])
def test_up_refuses_a_bad_shard_in_one_line(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zstream.cli", "up", "topology.toml", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zstream: shard "), result.stderr
    assert "Traceback" not in result.stderr

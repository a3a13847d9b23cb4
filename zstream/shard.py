"""Shards: the part of a fleet one `zstream up` runs when a topology is split over instances.

Every instance reads the same topology and keeps the cameras that hash to it, by
rendezvous (highest random weight) hashing on the camera id: each computes every camera's
owner alone, from the id and the shard count, so no coordinator is needed, and going from
N to N+1 shards moves only the cameras the new shard wins (about 1/(N+1) of them).

Each shard writes its own streams, `STREAM:{shard-I}`: instances never race for entry ids,
and in a Redis Cluster the hash tag keeps one shard's batch and QC streams in one slot
while different shards spread over the nodes. Consumers find them by that name
(`zstream.consumer.BatchConsumer`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zstream.errors import ZStreamError

if TYPE_CHECKING:
    from zstream.topology import Topology

SHARD_ENV = "ZSTREAM_SHARD"
# I/N, or POD-NAME/N where the pod name ends in its StatefulSet ordinal ("zstream-2/3").
SHARD_PATTERN = re.compile(r"^(?:(?P<name>[A-Za-z0-9][A-Za-z0-9.-]*)-)?(?P<index>-?\d+)/(?P<count>-?\d+)$")
STREAM_SUFFIX = ":{shard-%d}"
MAX_SHARDS = 4096


class ShardError(ZStreamError):
    """A shard given as anything but I/N with 0 <= I < N."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, camera_id: str) -> bool:
        return owner(camera_id, self.count) == self.index

    def stream(self, base: str) -> str:
        """This shard's name for the stream `base`."""
        return base + STREAM_SUFFIX % self.index


def owner(camera_id: str, count: int) -> int:
    """The shard (0 to count-1) that runs `camera_id`: the one with the highest weight."""
    return max(range(count), key=lambda index: _weight(camera_id, index))


def _weight(camera_id: str, index: int) -> int:
    digest = hashlib.blake2b(f"{index}\0{camera_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def parse_shard(text: str) -> Shard:
    """ "I/N" (or "POD-NAME-I/N", the StatefulSet pod name ending in its ordinal) as a Shard."""
    match = SHARD_PATTERN.match(text.strip())
    if match is None:
        raise ShardError(
            f"shard {text!r}: expected I/N such as 0/3 (shard I of N, I from 0 to N-1), "
            "or POD-NAME-I/N such as zstream-0/3"
        )
    index, count = int(match["index"]), int(match["count"])
    if not 1 <= count <= MAX_SHARDS:
        raise ShardError(f"shard {text!r}: the number of shards must be from 1 to {MAX_SHARDS}, got {count}")
    if not 0 <= index < count:
        raise ShardError(
            f"shard {text!r}: the index must be from 0 to {count - 1} (shards count from 0), got {index}"
        )
    return Shard(index, count)


def shard_topology(topology: Topology, shard: Shard) -> Topology:
    """The topology one shard runs: its own cameras (possibly none yet) and its own streams."""
    redis = topology.redis.model_copy(
        update={
            "stream": shard.stream(topology.redis.stream),
            "qc_stream": shard.stream(topology.redis.qc_stream),
        }
    )
    cameras = [camera for camera in topology.cameras if shard.owns(camera.id)]
    return topology.model_copy(update={"cameras": cameras, "redis": redis})


def shard_streams_pattern(base: str) -> str:
    """A SCAN MATCH pattern for every shard's name of the stream `base`."""
    escaped = re.sub(r"([*?\[\]\\])", r"\\\1", base)
    return escaped + ":{shard-*}"

"""What waits in the pipeline's Redis streams for the ML consumers, and purging it.

An operator's questions: how long is each stream, which consumer groups read it, how far
behind are they (lag, pending entries), and how long has the oldest pending entry waited
for an acknowledgement (a consumer that died holding work).
"""

from __future__ import annotations

from typing import Any

import redis

from zstream.errors import ZStreamError, mask_url
from zstream.redis_client import topology_client
from zstream.topology import Topology


def describe_streams(topology: Topology) -> list[dict[str, Any]]:
    """One row per stream of the pipeline (batches, QC): length and consumer groups."""
    try:
        with topology_client(topology.redis) as client:
            return [_describe(client, name) for name in (topology.redis.stream, topology.redis.qc_stream)]
    except redis.RedisError as exc:
        raise ZStreamError(f"Redis at {mask_url(topology.redis.url)}: {exc}") from exc


def _describe(client: Any, stream: str) -> dict[str, Any]:
    if not client.exists(stream):
        return {"stream": stream, "length": 0, "groups": []}
    groups = []
    for group in client.xinfo_groups(stream):
        name = _text(group["name"])
        oldest = client.xpending_range(stream, name, min="-", max="+", count=1)
        groups.append(
            {
                "group": name,
                "consumers": int(group["consumers"]),
                "pending": int(group["pending"]),
                "lag": group.get("lag"),
                "oldest_pending_s": round(oldest[0]["time_since_delivered"] / 1000, 1) if oldest else None,
            }
        )
    return {"stream": stream, "length": int(client.xlen(stream)), "groups": groups}


def purge(topology: Topology, stream: str) -> int:
    """Delete every entry of one of the pipeline's streams, keeping its consumer groups (so
    consumers carry on with what comes next); the number of entries deleted."""
    if stream not in (topology.redis.stream, topology.redis.qc_stream):
        known = f"{topology.redis.stream}, {topology.redis.qc_stream}"
        raise ZStreamError(f"{stream!r} is not one of this pipeline's streams ({known})")
    try:
        with topology_client(topology.redis) as client:
            return int(client.xtrim(stream, maxlen=0, approximate=False))
    except redis.RedisError as exc:
        raise ZStreamError(f"Redis at {mask_url(topology.redis.url)}: {exc}") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

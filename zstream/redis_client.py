"""Redis clients for a single server or a Redis Cluster, made in one place.

With `redis.cluster = true` the URL names any node of a cluster: the cluster client learns
the others and sends each command to the node of its key's slot. zstream's commands each
touch one key (a stream), except a consumer's read of several streams, which it splits by
slot (`slot_groups`). A `${NAME}` in the URL is filled in from the environment (see
zstream.envrefs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.crc import key_slot

from zstream.envrefs import expand

if TYPE_CHECKING:
    from zstream.topology import RedisSettings


def connect(url: str, *, cluster: bool = False, **options: Any) -> Any:
    """A synchronous client; a cluster client connects (and may raise RedisError) at once."""
    if cluster:
        return redis.RedisCluster.from_url(expand(url), **options)
    return redis.Redis.from_url(expand(url), **options)


def connect_async(url: str, *, cluster: bool = False, **options: Any) -> Any:
    """An asyncio client (it connects on its first command)."""
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(expand(url), **options)
    return redis.asyncio.from_url(expand(url), **options)


def topology_client(settings: RedisSettings, timeout_s: float | None = None) -> Any:
    """The synchronous client of a topology's Redis, with its connect timeout."""
    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    return connect(
        settings.url, cluster=settings.cluster, socket_connect_timeout=timeout, socket_timeout=timeout
    )


def is_cluster(client: redis.Redis) -> bool:
    """Whether the server `client` talks to is a node of a Redis Cluster."""
    return bool(client.info("cluster").get("cluster_enabled"))


def slot_groups(keys: Iterable[str], cluster: bool) -> list[list[str]]:
    """`keys` split into lists that one command may take together: one list on a single
    server, one per hash slot on a cluster (a multi-key command must stay in one slot)."""
    keys = list(keys)
    if not cluster:
        return [keys] if keys else []
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    return list(groups.values())

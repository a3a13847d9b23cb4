"""A real three-node Redis Cluster on loopback, for tests (redis-server --cluster-enabled yes,
then redis-cli --cluster create): three masters, no replicas, no persistence."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
from pathlib import Path

import redis

from tests.conftest import wait_until

NODES = 3


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports free with their cluster bus port (port + 10000) free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 45000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


class LocalCluster:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = _free_ports(NODES)
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Start the nodes and join them; none is left running if that fails."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for port in self.ports:
            command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
            command += ["--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000"]
            command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
            command += ["--logfile", str(self.directory / f"redis-{port}.log")]
            self.processes.append(subprocess.Popen(command, stdin=subprocess.DEVNULL))
        for port in self.ports:
            wait_until(lambda port=port: _pings(port), 10, message=f"cluster node on port {port}")
        create = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports)]
        subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60
        )
        wait_until(self._ok, 20, interval=0.2, message="cluster_state:ok on every node")

    def _ok(self) -> bool:
        for port in self.ports:
            with redis.Redis(port=port, socket_timeout=2) as client:
                if client.info("cluster").get("cluster_enabled") != 1:
                    return False
                if client.cluster("INFO").get("cluster_state") != "ok":
                    return False
        return True

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        self.processes.clear()


def _pings(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False

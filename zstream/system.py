"""What the pipeline costs the machine: CPU and memory per process, shared memory.

CPU percentages need two readings, so the sampler keeps each process's psutil handle
between calls: the figure is the average since the previous status, not a fresh 0.
"""

from __future__ import annotations

import psutil

from zstream.core.ring import shm_space
from zstream.status import ProcessCost, SharedMemory


class ProcessSampler:
    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def sample(self, named_pids: dict[str, int]) -> list[ProcessCost]:
        """One row per live process: name, pid, CPU % (of one core) since the last sample (None
        on a process's first sample), RSS."""
        rows: list[ProcessCost] = []
        for name, pid in named_pids.items():
            process = self._processes.get(pid)
            try:
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                    cpu = process.cpu_percent(None)  # 0.0: the first reading only starts the clock
                    first = True
                else:
                    cpu, first = process.cpu_percent(None), False
                rss = process.memory_info().rss
            except psutil.Error:
                self._processes.pop(pid, None)
                continue
            rows.append(
                {"name": name, "pid": pid, "cpu_percent": None if first else round(cpu, 1), "rss_bytes": rss}
            )
        for pid in set(self._processes) - set(named_pids.values()):
            del self._processes[pid]
        return rows


def shared_memory(ring_bytes: int) -> SharedMemory:
    """The rings' size against /dev/shm's size and free space."""
    total, free = shm_space()
    return {"rings_bytes": ring_bytes, "shm_total_bytes": total, "shm_free_bytes": free}

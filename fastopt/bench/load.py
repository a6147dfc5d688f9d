"""How busy the rest of the machine was while the bench ran."""
from __future__ import annotations

import os
import time

__all__ = ["LoadMeter"]


class LoadMeter:
    """CPU time used by *other* processes while the benchmark runs (Linux: busy time in
    /proc/stat less this process's own CPU time), in CPUs. Competing load makes the
    multi-thread figures wrong: a parallel step waits for its slowest thread."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / tick      # all but idle and iowait
        own = sum(os.times()[:2])
        return busy, own, time.monotonic()

    def other_cpus(self):
        """Average CPUs used by other processes since the start (None when unknown)."""
        end = self._sample()
        if self.start is None or end is None or end[2] - self.start[2] <= 0:
            return None
        other = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(0.0, other / (end[2] - self.start[2]))

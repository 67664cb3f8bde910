"""Measure one call of a test: wall and CPU time with no tracer running, and resident memory."""

from __future__ import annotations

import resource
import time

from ..records import Sample
from . import rss


def _cpu_seconds() -> float:
    """CPU of this process, all its threads, and the children it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class CallMeter:
    def __init__(self, memory: bool):
        self.rss = rss.RssMeter() if memory and rss.available() else None

    @property
    def measures_memory(self) -> bool:
        return self.rss is not None

    def start(self):
        started_rss = self.rss.start() if self.rss else None
        return started_rss, _cpu_seconds(), time.perf_counter()

    def stop(self, token) -> Sample:
        wall = time.perf_counter()
        cpu = _cpu_seconds()
        started_rss, cpu0, wall0 = token
        peak = tmu = None
        if self.rss:
            peak, tmu = self.rss.stop(started_rss)
        return Sample(time_s=wall - wall0, cpu_s=cpu - cpu0, peak_mb=peak, tmu_mbs=tmu)

    def close(self) -> None:
        if self.rss:
            self.rss.close()

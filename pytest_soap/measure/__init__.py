"""Measure one call of a test: its time with no tracer running, its CPU, and its resident memory."""

from __future__ import annotations

import os
import resource
import time

from ..records import Sample
from . import rss


def _cpu_seconds() -> float:
    """CPU of this process, all its threads, and the children it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class RunQueueWait:
    """How long this thread has waited, runnable, for a CPU that others held (Linux schedstat).

    Subtracting it from the wall time removes what another busy process on the machine costs us:
    on this 2-core machine with both cores loaded, a 70 ms loop read 180-240 ms of wall time, and
    60-65 ms once its run-queue wait was taken off.
    """

    def __init__(self):
        try:
            self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def seconds(self) -> float:
        if self._fd is None:
            return 0.0
        return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class CallMeter:
    def __init__(self, memory: bool):
        self.rss = rss.RssMeter() if memory and rss.available() else None
        self.wait = RunQueueWait()

    @property
    def measures_memory(self) -> bool:
        return self.rss is not None

    def start(self):
        started_rss = self.rss.start() if self.rss else None
        return started_rss, _cpu_seconds(), self.wait.seconds(), time.perf_counter()

    def stop(self, token) -> Sample:
        wall = time.perf_counter()
        waited = self.wait.seconds()
        cpu = _cpu_seconds()
        started_rss, cpu0, waited0, wall0 = token
        peak = tmu = None
        if self.rss:
            peak, tmu = self.rss.stop(started_rss)
        return Sample(time_s=(wall - wall0) - (waited - waited0), cpu_s=cpu - cpu0, peak_mb=peak, tmu_mbs=tmu,
                      wait_s=waited - waited0)

    def close(self) -> None:
        self.wait.close()
        if self.rss:
            self.rss.close()

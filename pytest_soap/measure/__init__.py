"""Measure one call of a test: its time with no tracer running, its CPU, and its resident memory."""

from __future__ import annotations

import resource
import time

from ..records import Sample
from . import rss


def _cpu_seconds() -> float:
    """CPU of this process, all its threads, and the children it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _run_queue_wait() -> float:
    """How long the calling thread has waited, runnable, for a CPU that others held (Linux schedstat).

    Subtracting it from the wall time removes what another busy process on the machine costs us:
    on this 2-core machine with both cores loaded, a 70 ms loop read 180-240 ms of wall time, and
    60-65 ms once its run-queue wait was taken off. Read fresh each time: the file names the thread
    that opens it, and the thread that runs the tests is not always the one that configured pytest.
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class CallMeter:
    def __init__(self, memory: bool):
        self.rss = rss.RssMeter() if memory and rss.available() else None

    @property
    def measures_memory(self) -> bool:
        return self.rss is not None

    def start(self):
        started_rss = self.rss.start() if self.rss else None
        return started_rss, _cpu_seconds(), _run_queue_wait(), time.perf_counter()

    def stop(self, token) -> Sample:
        wall = time.perf_counter()
        waited = _run_queue_wait()
        cpu = _cpu_seconds()
        started_rss, cpu0, waited0, wall0 = token
        peak = tmu = None
        if self.rss:
            peak, tmu = self.rss.stop(started_rss)
        elapsed = wall - wall0
        waited = min(max(waited - waited0, 0.0), elapsed)
        if tmu is not None and elapsed > 0:
            tmu *= (elapsed - waited) / elapsed  # memory held while running, not while queued behind others
        return Sample(time_s=elapsed - waited, cpu_s=cpu - cpu0, peak_mb=peak, tmu_mbs=tmu, wait_s=waited)

    def close(self) -> None:
        if self.rss:
            self.rss.close()

"""Measure one call of a test: its time with no tracer running, its CPU, and its resident memory."""

from __future__ import annotations

import gc
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


class FullCollections:
    """Time the garbage collector spends in full (generation 2) collections.

    A full collection walks every object the process holds, and when it fires depends on what all the
    earlier tests allocated: it is the process's history, not the test's code. On networkx's suite one
    landing in a 1 ms test made it read 55 ms. Young collections stay in the test's time: they follow
    its own allocations.
    """

    def __init__(self):
        self.seconds = 0.0
        self._started = None
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


class CallMeter:
    def __init__(self, memory: bool):
        self.rss = rss.RssMeter() if memory and rss.available() else None
        self.full_gc = FullCollections()

    @property
    def measures_memory(self) -> bool:
        return self.rss is not None

    def start(self):
        started_rss = self.rss.start() if self.rss else None
        return (started_rss, _cpu_seconds(), _run_queue_wait(), self.full_gc.seconds, time.thread_time(),
                time.perf_counter())

    def stop(self, token) -> Sample:
        wall = time.perf_counter()
        waited = _run_queue_wait()
        ran = time.thread_time()
        collected = self.full_gc.seconds
        cpu = _cpu_seconds()
        started_rss, cpu0, waited0, collected0, ran0, wall0 = token
        peak = tmu = None
        if self.rss:
            peak, tmu = self.rss.stop(started_rss)
        elapsed = wall - wall0 - (collected - collected0)
        # The thread's wall time is its time on a CPU, queued, and asleep: less the queue it is never shorter
        # than its time on a CPU. In a duet the scheduler's clock once put a whole 1.3 ms call in the queue, and
        # the test read 0.0 s.
        waited = min(max(waited - waited0, 0.0), max(elapsed - (ran - ran0), 0.0))
        if tmu is not None and elapsed > 0:
            tmu *= (elapsed - waited) / elapsed  # memory held while running, not while queued behind others
        return Sample(time_s=elapsed - waited, cpu_s=cpu - cpu0, peak_mb=peak, tmu_mbs=tmu, wait_s=waited)

    def close(self) -> None:
        self.full_gc.close()
        if self.rss:
            self.rss.close()

"""Resident memory of this process during a call, read from Linux's /proc at almost no cost.

Peak: the kernel keeps a high-water mark of resident memory (VmHWM); writing "5" to
/proc/self/clear_refs resets it to the current size, so after the call it is the call's peak.
TMU: a sampler thread reads /proc/self/statm every millisecond while a call runs (it holds the
GIL for microseconds, and only asks for it between the interpreter's switch intervals), and the
curve is closed with exact points at the call's start and end.
Both figures are growth over the resident size at the call's start, so the test runner's own
memory does not drown the test's.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from itertools import pairwise

MIB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE")


def available() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return os.path.exists("/proc/self/statm")
    except OSError:
        return False


def _malloc_trim():
    """glibc's malloc_trim(0), or a no-op elsewhere."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


def trapezoid(points: list[tuple[float, float]]) -> float:
    """Area under a (time, value) curve by the trapezoid rule, as the SOAP paper computes TMU."""
    return sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in pairwise(points))


def _high_water_mark() -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class RssMeter:
    def __init__(self, interval_s: float = 0.001):
        self._interval_s = interval_s
        self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        self._active = threading.Event()
        self._points: list[tuple[float, int]] = []
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self._closed = False
        self._trim = _malloc_trim()

    def resident(self) -> int:
        return int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE

    def _sample_while_active(self) -> None:
        while True:
            self._active.wait()
            if self._closed:
                return
            self._points.append((time.perf_counter(), self.resident()))
            time.sleep(self._interval_s)

    def start(self) -> tuple[float, int]:
        if self._thread is None or self._owner_pid != os.getpid():  # a forked child has no sampler thread
            self._owner_pid = os.getpid()
            self._thread = threading.Thread(target=self._sample_while_active, name="soap-rss", daemon=True)
            self._thread.start()
        # Hand freed heap pages back to the kernel first. Otherwise glibc keeps what earlier tests
        # freed resident (its mmap threshold grows with each large free), a later test reuses it,
        # and its growth reads as zero.
        self._trim()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = (time.perf_counter(), self.resident())
        self._points = [start]
        self._active.set()
        return start

    def stop(self, start: tuple[float, int]) -> tuple[float, float]:
        """Peak MiB and TMU MiB·s of the call that began at `start`."""
        self._active.clear()
        end = (time.perf_counter(), self.resident())
        base = start[1]
        # The sampler may add one late point after `end`; the curve stops at the call's end.
        points = sorted(p for p in self._points if p[0] <= end[0]) + [end]
        peak = max(_high_water_mark(), *(rss for _, rss in points)) - base
        growth = [(t, max(rss - base, 0) / MIB) for t, rss in points]
        return max(peak, 0) / MIB, trapezoid(growth)

    def close(self) -> None:
        """End the sampler thread and release the file it reads."""
        self._closed = True
        self._active.set()
        if self._thread is not None and self._owner_pid == os.getpid():
            self._thread.join()
        os.close(self._statm)

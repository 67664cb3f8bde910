"""memray's exact heap for one call: the high-water mark and the area under heap-over-time.

Tracking every allocation costs about 2x, so this runs only for memory suspects, in a run of
their own whose time is not used.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from .rss import MIB, trapezoid


@dataclass
class HeapResult:
    peak_mb: float = 0.0
    tmu_mbs: float = 0.0
    mean_mb: float = 0.0  # TMU over the call's duration: the memory held, whatever the time taken

    def figures(self) -> dict:
        return asdict(self)


@contextmanager
def track_heap(interval_ms: int = 1, python_allocators: bool = False):
    """Track the block's heap with memray; the yielded result is filled when the block ends.

    With `python_allocators`, every object pymalloc hands out is counted, so the figures are the block's
    own whatever ran before it; without, memray sees pymalloc's arenas, which a block allocates only when
    the arenas freed earlier are gone (cheaper, but history shows through)."""
    import memray  # here, not at the top: most sessions never track a heap, and it costs 30 ms to import

    result = HeapResult()
    fd, path = tempfile.mkstemp(prefix="soap-", suffix=".memray")
    os.close(fd)
    os.remove(path)  # memray refuses to overwrite a file
    try:
        with memray.Tracker(path, memory_interval_ms=interval_ms, trace_python_allocators=python_allocators,
                            file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS):
            started = time.time()
            yield result
            ended = time.time()
        reader = memray.FileReader(path)
        # Snapshots carry epoch milliseconds; close the curve at the block's start and end so
        # that a 5 ms call is not judged by the one snapshot it happened to get.
        at_end = sum(r.size for r in reader.get_leaked_allocation_records(merge_threads=True))
        points = [(0.0, 0.0)]
        points += [(s.time / 1000 - started, s.heap / MIB) for s in reader.get_memory_snapshots()
                   if started <= s.time / 1000 <= ended]
        points.append((ended - started, at_end / MIB))
        result.peak_mb = reader.metadata.peak_memory / MIB
        result.tmu_mbs = trapezoid(points)
        result.mean_mb = result.tmu_mbs / (ended - started) if ended > started else 0.0
        reader.close()
    finally:
        if os.path.exists(path):
            os.remove(path)

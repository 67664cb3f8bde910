"""Score programs: does each pass its tests, and its ET, peak and TMU. Run in the sandbox, never in-process:

    python -m pytest_soap.eval.score A.py [B.py ...] --out RESULT.json [--repeat 3] [--memory-mb N]

Each program (dataset.program: prelude, code, tests) runs once to check that it passes. The passing ones are
then timed with no tracer running, in `repeat` rounds; in each, every program gives one sample, in an order
that rotates from round to round, so a slow spell of the machine hits them all alike. The programs of one
problem (the canonical solution, the initial code, each round's best) are compared in one process, so NET
does not move with process-to-process noise. A sample follows one untimed run, since the run before it may
have been another program's, and it repeats a short program until it has taken 10 ms. ET is the median
sample: one warm run of the whole program, where the paper timed one cold run.

Last, each program runs under memray, which counts every object Python allocates, so what ran before does not
show through. Peak is the heap's high-water mark. TMU is the area under heap-over-time, sampled every 1 ms
and closed at the run's end (the trapezoid rule, as in the paper). A program shorter than 50 ms runs again
under the same tracker until it has been tracked that long, and its TMU is the area divided by the number of
runs: a 1 ms program would otherwise get one snapshot or none. Memory is the heap the program allocates,
not the process's RSS that the paper's mprof read: an interpreter's 10 MiB of RSS would drown a solution's own
memory, and it is the same for every solution.

This is `soap eval --metrics exact`; paper.py scores as the paper's harness did (`--metrics paper`).

`score_all()` is the caller's side. It runs the above in a scratch directory, under a timeout and a memory
limit, with an environment scrubbed of keys and tokens, as the loop runs candidates.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from ..measure.heap import track_heap
from ..soap.sandbox import (
    behind_wall,
    crash_reason,
    memory_limit_mb,
    network_namespace,
    read_wall_log,
    refusal,
    run_limited,
    scrubbed_env,
)

REPEAT = 3
SAMPLE_S = 0.01  # the least time a timed sample takes: a shorter program runs several times in it
TRACKED_S = 0.05  # the least time a program is tracked for its TMU: 50 snapshots
MAX_RUNS = 1000


@dataclass
class Score:
    passed: bool
    reason: str = ""  # why it did not pass, in one line
    time_s: float | None = None  # ET: the median of the timed runs (paper.py: first to last RSS sample)
    peak_mb: float | None = None  # the heap's high-water mark, MiB (paper.py: the largest RSS sample)
    tmu_mbs: float | None = None  # the area under heap-over-time, MiB·s (paper.py: under RSS-over-time)

    def to_dict(self) -> dict:
        return asdict(self)


def score_all(programs: list[str], timeout_s: float, memory_mb: int, repeat: int = REPEAT) -> list[Score]:
    """Every program scored in one sandboxed process, with `timeout_s` for each; when that process is
    stopped (a program that hangs, or the kernel's OOM killer), each is scored alone, so that the one to
    blame gets the reason and the others their figures."""
    scores = _run_scorer(programs, timeout_s * len(programs), memory_mb, repeat)
    if isinstance(scores, Score) and len(programs) > 1:
        return [score_all([p], timeout_s, memory_mb, repeat)[0] for p in programs]
    return [scores] if isinstance(scores, Score) else scores


def score(program_text: str, timeout_s: float, memory_mb: int, repeat: int = REPEAT) -> Score:
    return score_all([program_text], timeout_s, memory_mb, repeat)[0]


def _run_scorer(programs: list[str], timeout_s: float, memory_mb: int, repeat: int) -> list[Score] | Score:
    with tempfile.TemporaryDirectory(prefix="soap-eval-") as tmp:
        work = Path(tmp)
        names = [f"program{n}.py" for n in range(len(programs))]
        for name, text in zip(names, programs):
            (work / name).write_text(text, encoding="utf-8")
        out = work / "result.json"
        cmd = [sys.executable, "-m", "pytest_soap.eval.score", *names, "--out", str(out), "--repeat", str(repeat),
               "--memory-mb", str(memory_limit_mb(memory_mb))]
        # Behind the sandbox's wall: the scorer loads, then closes it (see main), and a program that then does
        # anything the scorer did not (reach the network, write outside this folder, start a program or a
        # thread) is stopped there.
        wall_log = work / "wall.jsonl"
        cmd = behind_wall(cmd, work, wall_log, None, network_namespace()[0], until_closed=True)
        env = {**scrubbed_env(os.environ, work), "TMPDIR": str(work)}
        finished = run_limited(cmd, work, env, work / "output.txt", timeout_s, memory_mb)
        if refused := refusal(read_wall_log(wall_log), "no program scored here may do"):
            return Score(False, refused)
        if finished.timed_out:
            return Score(False, f"timed out after {timeout_s:.1f} s")
        try:
            return [Score(**result) for result in json.loads(out.read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError):
            if finished.out_of_memory():
                return Score(False, f"exceeded the {memory_limit_mb(memory_mb)} MiB memory limit")
            return Score(False, crash_reason(finished, "the scorer"))


# ---- inside the sandbox -------------------------------------------------------------------------------------

def _run(code, label: str) -> None:
    exec(code, {"__name__": "__main__", "__file__": label})  # in the sandbox only


def _failure(exc: BaseException, label: str) -> str:
    """`a test failed at line 71: assert solution.f(3) == 4` or `TypeError at line 12: bad`."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == label]
    where = f"line {frames[-1].lineno}" if frames else "the program"
    if isinstance(exc, AssertionError):
        line = (frames[-1].line or "").strip() if frames else ""
        return f"a test failed at {where}" + (f": {line}" if line else "")
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__} at {where}" + (f": {message}" if message else "")


def _attempt(code, label: str, memory_mb: int) -> tuple[str, float]:
    """Run once: "" when it passed, else why not; and its seconds."""
    started = time.perf_counter()
    try:
        _run(code, label)
    except MemoryError:
        return f"exceeded the {memory_mb} MiB memory limit", 0.0
    except Exception as e:  # the program's own failure is the result
        return _failure(e, label), 0.0
    return "", time.perf_counter() - started


def _sample(code, label: str, runs: int) -> float:
    """Seconds a run, over `runs` runs after one untimed: the run before it may have been another program's,
    which left the allocator's arenas returned to the system or the caches cold, and that is not this one's cost."""
    _run(code, label)
    started = time.perf_counter()
    for _ in range(runs):
        _run(code, label)  # it passed once: the same code on the same tests passes again
    return (time.perf_counter() - started) / runs


def measure(sources: dict[str, str], repeat: int, memory_mb: int) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    compiled, first_s = {}, {}
    for label, source in sources.items():
        try:
            code = compile(source, label, "exec")
        except SyntaxError as e:
            scores[label] = Score(False, f"SyntaxError at line {e.lineno}: {e.msg}")
            continue
        why, first_s[label] = _attempt(code, label, memory_mb)
        if why:
            scores[label] = Score(False, why)
        else:
            compiled[label] = code
    labels = list(compiled)
    # A sample runs a short program enough times to take SAMPLE_S: the timer and one run's hiccups stay small.
    runs = {label: min(MAX_RUNS, max(1, math.ceil(SAMPLE_S / first_s[label]))) if first_s[label] > 0 else MAX_RUNS
            for label in labels}
    times: dict[str, list[float]] = {label: [] for label in labels}
    for round_number in range(max(1, repeat)):
        shift = round_number % len(labels) if labels else 0
        for label in labels[shift:] + labels[:shift]:
            times[label].append(_sample(compiled[label], label, runs[label]))
    for label in labels:
        et = statistics.median(times[label])
        # TMU from 1 ms snapshots needs a run longer than a few of them: a short program runs again and again
        # under one tracker, and its TMU is the area over the runs; its peak, the highest of any run.
        tracked = min(MAX_RUNS, max(1, math.ceil(TRACKED_S / et))) if et > 0 else MAX_RUNS
        gc.collect()  # the garbage of earlier runs is not this one's
        with track_heap(interval_ms=1, python_allocators=True) as heap:  # not what ran before it
            for run in range(tracked):
                if run:
                    gc.collect()  # cycles a run left (its functions and their globals) would pile up on the next
                _run(compiled[label], label)
        scores[label] = Score(True, "", et, heap.peak_mb, heap.tmu_mbs / tracked)
    return {label: scores[label] for label in sources}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_soap.eval.score", description=__doc__.splitlines()[0])
    parser.add_argument("programs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--memory-mb", type=int, default=0, help="the limit the caller set, for the message")
    options = parser.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))  # as deep as a LeetCode-style recursion goes
    sources = {str(path): path.read_text(encoding="utf-8") for path in options.programs}
    sys.audit("soap.wall.close")  # behind the wall, from here on only what the scorer did so far is allowed
    scores = measure(sources, options.repeat, options.memory_mb)
    options.out.write_text(json.dumps([s.to_dict() for s in scores.values()]), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

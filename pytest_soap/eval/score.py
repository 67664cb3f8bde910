"""Score programs: does each pass its tests, and its ET, peak and TMU. Run in the sandbox, never in-process:

    python -m pytest_soap.eval.score A.py [B.py ...] --out RESULT.json [--repeat 3] [--memory-mb N]

Each program (dataset.program: prelude, code, tests) runs once to check it passes. Then the passing ones
are timed with no tracer running, `repeat` rounds in which each runs once, in an order that rotates from
round to round, so that a slow spell of the machine hits them all alike: the programs of one problem (the
canonical solution, the initial code, each round's best) are compared in one process, and NET does not move
with process-to-process noise. ET is a program's median. Last, each runs once under memray: the heap's peak,
and the area under heap-over-time sampled every 1 ms and closed at the run's end (TMU, the trapezoid rule,
as the paper). Memory is the heap the program allocates, not the process's RSS as the paper's mprof read
it: an interpreter's 10 MiB of RSS would drown a solution's own memory, and it is the same for every one.

`score_all()` is the caller's side: it runs that in a scratch directory, under a timeout and a memory limit,
with an environment scrubbed of keys and tokens, as the loop runs candidates.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from ..measure.heap import track_heap
from ..soap.sandbox import memory_limit_mb, run_limited, scrubbed_env

REPEAT = 3


@dataclass
class Score:
    passed: bool
    reason: str = ""  # why it did not pass, in one line
    time_s: float | None = None  # ET: the median of the timed runs
    peak_mb: float | None = None  # the heap's high-water mark, MiB
    tmu_mbs: float | None = None  # the area under heap-over-time, MiB·s

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
        finished = run_limited(cmd, work, scrubbed_env(os.environ, work), work / "output.txt", timeout_s, memory_mb)
        if finished.timed_out:
            return Score(False, f"timed out after {timeout_s:.1f} s")
        try:
            return [Score(**result) for result in json.loads(out.read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError):
            if finished.out_of_memory():
                return Score(False, f"exceeded the {memory_limit_mb(memory_mb)} MiB memory limit")
            tail = [line for line in finished.output.splitlines() if line.strip()]
            return Score(False, f"the scorer stopped (exit code {finished.returncode}): {tail[-1] if tail else 'no output'}")


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


def _attempt(code, label: str, memory_mb: int) -> str:
    """Run once; "" when it passed, else why not."""
    try:
        _run(code, label)
    except MemoryError:
        return f"exceeded the {memory_mb} MiB memory limit"
    except Exception as e:  # noqa: BLE001 - the program's own failure is the result
        return _failure(e, label)
    return ""


def measure(sources: dict[str, str], repeat: int, memory_mb: int) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    compiled = {}
    for label, source in sources.items():
        try:
            compiled[label] = compile(source, label, "exec")
        except SyntaxError as e:
            scores[label] = Score(False, f"SyntaxError at line {e.lineno}: {e.msg}")
            continue
        why = _attempt(compiled[label], label, memory_mb)
        if why:
            scores[label] = Score(False, why)
            del compiled[label]
    labels = list(compiled)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for round_number in range(max(1, repeat)):
        shift = round_number % len(labels) if labels else 0
        for label in labels[shift:] + labels[:shift]:
            started = time.perf_counter()
            _run(compiled[label], label)  # it passed once: the same code on the same tests passes again
            times[label].append(time.perf_counter() - started)
    for label in labels:
        with track_heap(interval_ms=1) as heap:
            _run(compiled[label], label)
        scores[label] = Score(True, "", statistics.median(times[label]), heap.peak_mb, heap.tmu_mbs)
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
    scores = measure(sources, options.repeat, options.memory_mb)
    options.out.write_text(json.dumps([s.to_dict() for s in scores.values()]), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

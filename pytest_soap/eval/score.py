"""Score one program: does it pass its tests, and its ET, peak and TMU. Run in the sandbox, never in-process:

    python -m pytest_soap.eval.score PROGRAM.py --out RESULT.json [--repeat 3]

The program (dataset.program: prelude, code, tests) runs `repeat` times with no tracer for its time (ET is
the median), then once under memray for its heap: the peak, and the area under heap-over-time sampled every
1 ms and closed at the run's end (TMU, the trapezoid rule, as the paper). Memory is the heap the program
allocates, not the process's RSS as the paper's mprof read it: an interpreter's 10 MiB of RSS would drown
a solution's own memory, and it is the same for every solution.

`score()` is the caller's side: it runs that in a scratch directory, under a timeout and a memory limit, with
an environment scrubbed of keys and tokens, as the loop runs candidates.
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
from ..soap.sandbox import run_limited, scrubbed_env

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


def score(program_text: str, timeout_s: float, memory_mb: int, repeat: int = REPEAT) -> Score:
    """Run the program in a scratch directory under the sandbox's limits; every failure is a Score with a reason."""
    with tempfile.TemporaryDirectory(prefix="soap-eval-") as tmp:
        work = Path(tmp)
        (work / "program.py").write_text(program_text, encoding="utf-8")
        out = work / "result.json"
        cmd = [sys.executable, "-m", "pytest_soap.eval.score", "program.py", "--out", str(out), "--repeat", str(repeat)]
        env = scrubbed_env(os.environ, work)
        finished = run_limited(cmd, work, env, work / "output.txt", timeout_s, memory_mb)
        if finished.timed_out:
            return Score(False, f"timed out after {timeout_s:.1f} s")
        if finished.out_of_memory():
            return Score(False, f"exceeded the {memory_mb} MiB memory limit")
        try:
            return Score(**json.loads(out.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            tail = [line for line in finished.output.splitlines() if line.strip()]
            return Score(False, f"the scorer stopped (exit code {finished.returncode}): {tail[-1] if tail else 'no output'}")


def _run(code, label: str) -> None:
    exec(code, {"__name__": "__main__", "__file__": label})  # in the sandbox only


def _failure(exc: BaseException, label: str) -> str:
    """`a test failed at line 71: assert solution.f(3) == 4` or `line 12: ValueError: bad`."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == label]
    where = f"line {frames[-1].lineno}" if frames else "the program"
    if isinstance(exc, AssertionError):
        line = (frames[-1].line or "").strip() if frames else ""
        return f"a test failed at {where}" + (f": {line}" if line else "")
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__} at {where}" + (f": {message}" if message else "")


def measure(source: str, label: str, repeat: int) -> Score:
    try:
        code = compile(source, label, "exec")
    except SyntaxError as e:
        return Score(False, f"SyntaxError at line {e.lineno}: {e.msg}")
    times = []
    try:
        for _ in range(max(1, repeat)):
            started = time.perf_counter()
            _run(code, label)
            times.append(time.perf_counter() - started)
        with track_heap(interval_ms=1) as heap:
            _run(code, label)
    except MemoryError:
        raise  # the caller reports the limit
    except Exception as e:  # noqa: BLE001 - the program's own failure is the result
        return Score(False, _failure(e, label))
    return Score(True, "", statistics.median(times), heap.peak_mb, heap.tmu_mbs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_soap.eval.score", description=__doc__.splitlines()[0])
    parser.add_argument("program", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    options = parser.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))  # as deep as a LeetCode-style recursion goes
    result = measure(options.program.read_text(encoding="utf-8"), str(options.program), options.repeat)
    options.out.write_text(json.dumps(result.to_dict()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

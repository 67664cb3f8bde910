"""Score programs as the SOAP paper's harness does (`soap eval --metrics paper`): each in a cold process, its
whole RSS sampled from outside by memory_profiler, as `timeout 10 mprof run --interval 0.001` samples it.

A program is the harness's: the prelude, the code, `solution = Solution()`, and the first 100 lines of the
tests. It runs as mprof starts a Python file, under `python -m memory_profiler --timestamp`, so that start-up
and imports cost what they cost there; this process samples its RSS with memory_profiler's `memory_usage`
every 1 ms (about every 2 ms in practice). ET is the last sample's timestamp minus the first's, MU the
largest sample, TMU the trapezoid area under the samples. Unlike the harness, which never reads the exit
status (a timed-out program whose samples survive passes with ET near 10 s), a program that times out, fails
an assertion or crashes is failing here.

It runs behind the sandbox's wall, allowed none of what the wall watches (no network, no writes outside its
folder, no programs or threads started), in a network namespace where the system allows one, under the
memory limit, with an environment scrubbed of keys and tokens, as score.py runs the exact scorer.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]
from memory_profiler import memory_usage  # type: ignore[import-untyped]

from ..measure.rss import trapezoid
from ..soap.sandbox import (
    Finished,
    behind_wall,
    crash_reason,
    memory_limit_mb,
    network_namespace,
    read_wall_log,
    refusal,
    run_limited,
    scrubbed_env,
)
from .score import Score

TIMEOUT_S = 10.0  # the harness's `timeout 10`
TEST_LINES = 100  # the harness runs the first 100 lines of a problem's tests
INTERVAL_S = 0.001  # `mprof run --interval 0.001`
PROGRAM = "program.py"
# memory_profiler's stream format, as in mprof's .dat files: `MEM <MiB> <timestamp>`, one sample a line.
SAMPLE = re.compile(r"^MEM\s+(\S+)\s+(\S+)\s*$", re.MULTILINE)
FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')


@dataclass
class Figures:
    et_s: float  # the last sample's timestamp minus the first's
    mu_mb: float  # the largest sample, MiB
    tmu_mbs: float  # the trapezoid area under the samples, MiB·s


def first_lines(tests: str) -> str:
    """The tests as the harness runs them: their first 100 lines (`test_case.split("\\n")[:100]`)."""
    return "\n".join(tests.split("\n")[:TEST_LINES])


def read_samples(text: str) -> list[tuple[float, float]]:
    """The (MiB, timestamp) samples of memory_profiler's `MEM` lines (mprof's .dat format)."""
    return [(float(mib), float(at)) for mib, at in SAMPLE.findall(text)]


def figures(samples: Sequence[tuple[float, float]]) -> Figures:
    """ET, MU and TMU from (MiB, timestamp) samples in time order, as the harness computes them: the first
    sample only starts the area. One sample gives ET and TMU 0."""
    if not samples:
        raise ValueError("no memory sample to compute ET, MU and TMU from")
    return Figures(samples[-1][1] - samples[0][1], max(mib for mib, _ in samples),
                   trapezoid([(at, mib) for mib, at in samples]))


def score_all(programs: list[str], timeout_s: float, memory_mb: int) -> list[Score]:
    """Each program in a cold process of its own, one after the other: the sampler and the program get a core each."""
    return [score(text, timeout_s, memory_mb) for text in programs]


def score(program_text: str, timeout_s: float, memory_mb: int) -> Score:
    with tempfile.TemporaryDirectory(prefix="soap-paper-") as tmp:
        work = Path(tmp)
        (work / PROGRAM).write_text(program_text, encoding="utf-8")
        wall_log = work / "wall.jsonl"
        # `mprof run X.py` runs `python -m memory_profiler --timestamp X.py`; behind the wall, allowed nothing.
        cmd = behind_wall([sys.executable, "-m", "memory_profiler", "--timestamp", PROGRAM], work, wall_log, (),
                          network_namespace()[0])
        env = {**scrubbed_env(os.environ, work), "TMPDIR": str(work)}
        finished, samples = sampled(cmd, work, env, work / "stderr.txt", timeout_s, memory_mb)
        if refused := refusal(read_wall_log(wall_log), "no program scored here may do"):
            return Score(False, refused)
    if finished.timed_out:
        return Score(False, f"timed out after {timeout_s:.1f} s")
    if finished.returncode != 0:
        if finished.out_of_memory():
            return Score(False, f"exceeded the {memory_limit_mb(memory_mb)} MiB memory limit")
        return Score(False, failure(finished.output) or crash_reason(finished, "the program"))
    if not samples:
        return Score(False, "memory_profiler took no sample of the program")
    found = figures(samples)
    return Score(True, "", found.et_s, found.mu_mb, found.tmu_mbs)


def sampled(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, timeout_s: float,
            memory_mb: int) -> tuple[Finished, list[tuple[float, float]]]:
    """Run `cmd` as the sandbox runs any program, its stderr to `log` (its stdout, as the harness's, unread),
    sampling its RSS every INTERVAL_S until it ends or `timeout_s` has passed."""
    stream = io.StringIO()

    def sample(proc: subprocess.Popen[bytes]) -> None:
        try:
            memory_usage(proc=proc, interval=INTERVAL_S, timestamps=True, max_usage=False, include_children=False,
                         stream=stream)
        except psutil.NoSuchProcess:
            pass  # it was gone before a sample: the samples taken stand

    finished = run_limited(cmd, cwd, env, log, timeout_s, memory_mb, watch=sample, keep_stdout=False)
    return finished, read_samples(stream.getvalue())


def failure(stderr: str, program: str = PROGRAM) -> str | None:
    """`a test failed at line 71: assert solution.f(3) == 4` or `TypeError at line 12: bad`, from the traceback
    Python printed, as the exact scorer words it; None when no frame is the program's."""
    lines = stderr.splitlines()
    frames = [(n, m["line"]) for n, line in enumerate(lines)
              if (m := FRAME.match(line)) and Path(m["file"]).name == program]
    if not frames:
        return None
    last, where = frames[-1][0], f"line {frames[-1][1]}"
    source = lines[last + 1].strip() if last + 1 < len(lines) and lines[last + 1].startswith(" ") else ""
    # The exception is the first line after the program's frame that is not indented (the frames below it
    # are: a library function the program called).
    raised = next((line for line in lines[last + 1:] if line.strip() and not line[0].isspace()), "")
    name, _, message = raised.partition(": ")
    name = name.rsplit(".", 1)[-1] or "an error"
    if name == "AssertionError":
        return f"a test failed at {where}" + (f": {source}" if source and not source.startswith("^") else "")
    return f"{name} at {where}" + (f": {message}" if message else "")

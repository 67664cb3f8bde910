"""`soap eval`'s two metric definitions beside the SOAP paper's harness, on the 20 bundled problems
(examples/eval/problems.jsonl): the initial code (each record's `completion`) against the canonical solutions,
as NET, NMU and NTMU (ratios of sums), three ways:

a. harness: the paper's procedure as its shell script runs it. Each program (the prelude, the code,
   `solution = Solution()`, the first 100 lines of the hidden tests) is a file in a temporary folder, run as
   `timeout 10 mprof run --interval 0.001 --output f.dat f.py`; ET, MU and TMU come from the .dat's
   `MEM <MiB> <timestamp>` lines (last timestamp minus first, the largest, the trapezoid area). mprof is
   memory_profiler's command line, run as a tool. Unlike the harness, the exit status is printed.
b. paper: `soap eval --offline --metrics paper --iterations 1`, round 0 (the sandboxed reimplementation).
c. exact: `soap eval --offline --metrics exact --iterations 1`, round 0 (warm, in-process, the heap).

    python benchmarks/eval_metrics.py [--rounds N]

The ratios are computed by one function for all three (pytest_soap/eval/metrics.py's table). Each round runs
a, b and c once, in that order, so that a slow spell of the machine shows as rounds that disagree; nothing
here asserts on the figures. Time: about 5 minutes a round (b and c run the offline loop).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pytest_soap.eval import paper
from pytest_soap.eval.dataset import load, program
from pytest_soap.eval.metrics import table
from pytest_soap.eval.run import ProblemResult, ProblemStatus
from pytest_soap.eval.score import Score

from common import pkg_version

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "examples" / "eval" / "problems.jsonl"
COLUMNS = ("net", "nmu", "ntmu")


def harness_run(text: str, mprof: str, work: Path) -> tuple[Score, int]:
    """One program as the harness runs it; its figures, and the exit status the harness never read."""
    (work / "f.py").write_text(text, encoding="utf-8")
    dat = work / "f.dat"
    dat.unlink(missing_ok=True)
    done = subprocess.run(["timeout", "10", mprof, "run", "--interval", "0.001", "--output", dat.name, "f.py"],
                          cwd=work, capture_output=True, text=True)
    samples = paper.read_samples(dat.read_text(encoding="utf-8")) if dat.exists() else []
    if not samples:
        return Score(False, "no samples"), done.returncode
    found = paper.figures(samples)
    return Score(True, "", found.et_s, found.mu_mb, found.tmu_mbs), done.returncode


def harness(mprof: str) -> tuple[list[ProblemResult], list[str]]:
    results, notes = [], []
    with tempfile.TemporaryDirectory(prefix="soap-harness-") as tmp:
        for problem in load(DATASET):
            tests = paper.first_lines(problem.hidden_tests)
            canonical, code_c = harness_run(program(problem.canonical, tests), mprof, Path(tmp))
            initial, code_i = harness_run(program(problem.completion or "", tests), mprof, Path(tmp))
            if code_c or code_i:
                notes.append(f"problem {problem.idx}: exit status {code_c} (canonical), {code_i} (initial)")
            results.append(ProblemResult(problem.idx, problem.name, ProblemStatus.OPTIMISED, canonical=canonical,
                                         rounds=[initial]))
    return results, notes


def soap_eval(metrics: str) -> list[ProblemResult]:
    with tempfile.TemporaryDirectory(prefix=f"soap-eval-{metrics}-") as tmp:
        done = subprocess.run([sys.executable, "-m", "pytest_soap.cli", "eval", "--offline", "--metrics", metrics,
                               "--iterations", "1", "--out", tmp], capture_output=True, text=True, cwd=tmp)
        if done.returncode != 0:
            raise RuntimeError(f"soap eval --metrics {metrics} failed: {done.stderr.strip()[-500:]}")
        saved = json.loads((Path(tmp) / "eval.json").read_text(encoding="utf-8"))
    results = []
    for p in saved["problems"]:
        canonical = Score(**p["canonical"]) if p["canonical"] else None
        results.append(ProblemResult(p["idx"], p["name"], ProblemStatus(p["status"]), p["reason"], canonical,
                                     [Score(**s) for s in p["rounds"][:1]]))
    return results


def canonical_means(results: list[ProblemResult]) -> list[float]:
    """The canonical solutions' mean ET, MU and TMU over the problems measured (the ratios' denominators)."""
    kept = [r.canonical for r in results if r.canonical and r.canonical.passed and r.rounds and r.rounds[0].passed]
    return [sum(getattr(s, name) for s in kept) / len(kept) for name in ("time_s", "peak_mb", "tmu_mbs")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    opts = parser.parse_args()
    mprof = shutil.which("mprof") or str(Path(sys.executable).with_name("mprof"))
    if not Path(mprof).exists() or shutil.which("timeout") is None:
        print("needs memory_profiler's mprof (pip install memory_profiler) and coreutils' timeout", file=sys.stderr)
        return 2
    print(f"Python {platform.python_version()}, memory_profiler {pkg_version('memory_profiler')}, "
          f"psutil {pkg_version('psutil')}, {platform.machine()}; {DATASET.relative_to(ROOT)}, round 0 "
          "(initial code) against the canonical solutions")
    print("\n| round | way | problems | NET | NMU | NTMU | canonical ET (s) | canonical MU (MiB) | "
          "canonical TMU (MiB·s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    nearness, notes = [], []
    for number in range(1, opts.rounds + 1):
        ways = {}
        ways["a. harness (mprof)"], round_notes = harness(mprof)
        ways["b. --metrics paper"] = soap_eval("paper")
        ways["c. --metrics exact"] = soap_eval("exact")
        notes += [f"round {number}, {note}" for note in round_notes]
        rows = {}
        for name, results in ways.items():
            rows[name] = row = table(results)[0]
            et, mu, tmu = canonical_means(results)
            print(f"| {number} | {name} | {row.measured} | {row.net:.2f} | {row.nmu:.2f} | {row.ntmu:.2f} | {et:.4f} | "
                  f"{mu:.2f} | {tmu:.4f} |", flush=True)
        a, b = rows["a. harness (mprof)"], rows["b. --metrics paper"]
        nearness.append(f"round {number}: " + ", ".join(f"{c.upper()} {getattr(b, c) / getattr(a, c):.2f}"
                                                         for c in COLUMNS))
    print("\nb over a (1.00: the reimplementation reads what the harness reads): " + "; ".join(nearness))
    print("harness exit statuses: " + ("; ".join(notes) if notes else "all 0"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

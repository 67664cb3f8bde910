"""What the sandbox's wall costs on real test suites: the same tests in the same sandbox, run plainly and
behind the wall (the audit hook, and the network namespace where the system allows one), alternating.

The projects are real_loop.py's (released sdists with a speed fix reverted; benchmarks/real_cases/README.md
says where each comes from): sqlparse's whole suite, and networkx's selection. Each side runs RUNS times,
alternating; the ratio is of the medians of the whole pytest process's wall time, start-up included.

    python benchmarks/wall.py [--runs N]

Ratios are from one run; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pytest_soap.soap.sandbox import Sandbox, network_namespace, run_limited

from real_loop import CASES, ensure_needs, make_repo

SUITES = {"sqlparse-imt": ["tests"], "networkx-is-reachable": None}  # None: the case's own selection


def timed(run) -> float:
    started = time.perf_counter()
    finished = run()
    if finished.returncode != 0 or finished.refused:
        raise RuntimeError(f"the run failed: {finished.refused or finished.output[-500:]}")
    return time.perf_counter() - started


def measure(case, runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="soap-wall-bench-") as work:
        repo = make_repo(case, Path(work))
        tests = SUITES[case.key] or list(case.tests)
        cmd = [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", "-x"]
        with Sandbox(repo) as box:
            box.run(cmd, box.path, 600, 4096)  # the original's run: what the wall will allow
            plain, walled = [], []
            for _ in range(runs):
                plain.append(timed(lambda: run_limited(cmd, box.path, box.env(), box.scratch_file("plain", ".txt"),
                                                       600, 4096)))
                walled.append(timed(lambda: box.run(cmd, box.path, 600, 4096)))
            return {"case": case.key, "tests": " ".join(tests), "plain": statistics.median(plain),
                    "walled": statistics.median(walled), "allowed": sorted(box.capabilities),
                    "containment": box.containment()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    prefix, why_not = network_namespace()
    print(f"network namespace: {'yes (' + ' '.join(prefix) + ')' if prefix else 'no: ' + why_not}")
    print(f"{'suite':<24}{'tests':<40}{'plain':>9}{'walled':>9}{'ratio':>8}")
    rows = []
    for case in (c for c in CASES if c.key in SUITES):
        ensure_needs(case)
        row = measure(case, opts.runs)
        rows.append(row)
        print(f"{row['case']:<24}{row['tests'][:39]:<40}{row['plain']:>8.2f}s{row['walled']:>8.2f}s"
              f"{row['walled'] / row['plain']:>7.2f}x")
    for row in rows:
        print(f"\n{row['case']}: {row['containment']}\n  what the original's tests did, allowed to candidates: "
              f"{', '.join(row['allowed']) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

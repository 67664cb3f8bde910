"""Does `pytest --soap --soap-against REF` catch planted regressions, and only them?

    python benchmarks/accuracy.py [--nulls 10] [--no-load] [--saved-baseline] [--keep DIR]

Generates a small git project in a temporary directory: commit A, and commit B (HEAD) with planted
regressions of known factors (time 1.1x to 10x, peak memory 1.2x and 3x) beside unchanged tests of
several lengths and one whose time is random by design. Then, with one CPU core kept busy by another
process (as on a shared CI runner):

1. the gate at HEAD against A: which planted regressions it caught, with ratio, interval and p-value,
   and any unchanged test it flagged (a false alarm);
2. --nulls gates at HEAD against HEAD itself: the code is the same on both sides, so every regression
   flagged is a false alarm;
3. the cost: each gate's wall time over a plain pytest run of the same project just before it.

Before the load starts, every planted function is timed directly in-process, commit A's code against
commit B's, so that a miss can be told apart from a plant that did not take.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from accuracy_project import BODY, ORDER, PLANTED, Plant, generate, load_function  # next to this file
from common import pkg_version, run_pytest, why  # next to this file

TARGETS = {"time_s": 1.15, "peak_mb": 1.1}  # the smallest factors the gate must catch (stretch: time 1.1x)
COST_TARGET = 3.0  # the gate's wall time over a plain run, at most
LABELS = {"time_s": "time", "peak_mb": "peak", "tmu_mbs": "TMU", "cpu_s": "cpu"}


class Gate:
    """The gate at HEAD against a ref, run as a user would: its JSON report and its wall time."""

    def __init__(self, repo, tmp: Path, saved_baseline: bool, keep: Path | None):
        self.repo, self.tmp, self.saved_baseline, self.keep = repo, tmp, saved_baseline, keep
        self.project = Path(repo.working_tree_dir)
        self.branch = repo.active_branch.name  # HEAD's branch, to come back to after a save at the ref
        self.runs = 0

    def __call__(self, ref: str, label: str) -> tuple[dict | None, float]:
        self.runs += 1
        report = self.tmp / f"report-{self.runs}.json"
        if self.saved_baseline:
            baseline = self.tmp / f"baseline-{self.repo.commit(ref).hexsha[:12]}.json"
            if not baseline.exists():  # one save per ref; its cost is not the gate's
                self.repo.git.checkout("--quiet", ref)
                try:
                    _, proc = run_pytest(["--soap", "--soap-save", f"--soap-baseline={baseline}"], self.project)
                finally:
                    self.repo.git.checkout("--quiet", self.branch)
                if proc.returncode != 0:
                    print(f"{label}: saving the baseline at {ref} failed ({why(proc)})")
                    return None, 0.0
            args = ["--soap", f"--soap-baseline={baseline}", f"--soap-json={report}"]
        else:
            args = ["--soap", f"--soap-against={ref}", f"--soap-json={report}"]
        seconds, proc = run_pytest(args, self.project)
        # Exit 1: a regression was flagged (or a test failed: the report says which). 0: nothing flagged.
        if proc.returncode not in (0, 1) or not report.exists():
            if proc.returncode == 4 and "--soap-against" in proc.stderr:
                print(f"{label}: this pytest-soap ({pkg_version('pytest-soap')}) has no --soap-against yet "
                      f"({why(proc)})")
            else:
                print(f"{label}: the gate did not run ({why(proc)})")
            return None, seconds
        if self.keep:
            self.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(report, self.keep / f"{label.replace('null run ', 'null-')}.json")
        return json.loads(report.read_text()), seconds


def direct_ratios(repo, sha_a: str, plants: list[Plant], rounds: int = 11) -> dict[str, float]:
    """Each planted function of commit B over commit A's, called in this process: for time plants, the
    median ratio of `rounds` back-to-back pairs of calls (a slow spell of the machine hits both calls of a
    pair alike); for memory plants, tracemalloc's exact peak."""
    ratios = {}
    project = str(repo.working_tree_dir)
    sys.path.insert(0, project)  # planted._work (the shared loop) is the same in both commits
    try:
        for plant in plants:
            old, new = load_function(repo, sha_a, plant.name), load_function(repo, "HEAD", plant.name)
            if plant.metric == "peak_mb":
                peaks = []
                for fn in (old, new):
                    tracemalloc.start()
                    fn()
                    peaks.append(tracemalloc.get_traced_memory()[1])
                    tracemalloc.stop()
                ratios[plant.name] = peaks[1] / peaks[0]
            else:
                pairs = []
                for n in range(rounds):
                    seconds = {}
                    for fn in ((old, new) if n % 2 else (new, old)):  # alternate which goes first
                        start = time.perf_counter()
                        fn()
                        seconds[fn] = time.perf_counter() - start
                    pairs.append(seconds[new] / seconds[old])
                ratios[plant.name] = statistics.median(pairs)
    finally:
        sys.path.remove(project)
    return ratios


def fmt_metric(m: dict | None) -> tuple[str, str, str]:
    """ratio, interval and p-value of one metric of the JSON report, '-' where absent."""
    if not m:
        return "-", "-", "-"
    ratio = f"{m['ratio']:.2f}x" if m.get("ratio") is not None else "-"
    interval = m.get("interval")
    interval = f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval and None not in interval else "-"
    p = f"{m['p_value']:.3g}" if m.get("p_value") is not None else "-"
    return ratio, interval, p


def flagged(test: dict) -> str:
    """'time 1.12x (p=0.004), TMU 1.3x' for a regressed test."""
    parts = []
    for name in test.get("regressed_metrics") or []:
        ratio, _, p = fmt_metric(test.get("metrics", {}).get(name))
        parts.append(f"{LABELS.get(name, name)} {ratio} (p={p})")
    return ", ".join(parts)


def planted_table(report: dict, direct: dict[str, float]) -> int:
    """Prints the planted regressions the gate caught or missed, and the unchanged tests it flagged;
    returns how many targets were missed (planted regressions above the target factors not caught)."""
    tests = {t["nodeid"]: t for t in report["tests"]}
    print(f"{'planted':<12} {'factor':>6} {'direct':>7} {'ratio':>7} {'interval':>14} {'p':>7} {'runs':>4}  caught")
    missed = 0
    for plant in PLANTED:
        test = tests.get(plant.nodeid)
        if test is None:
            print(f"{plant.name:<12} {plant.factor:5.2g}x  not in the report")
            missed += plant.factor >= TARGETS[plant.metric]
            continue
        metric = test.get("metrics", {}).get(plant.metric)
        ratio, interval, p = fmt_metric(metric)
        caught = plant.metric in (test.get("regressed_metrics") or [])
        target = plant.factor >= TARGETS[plant.metric]
        missed += target and not caught
        note = "yes" if caught else ("NO (target)" if target else "no (stretch)")
        others = [LABELS.get(m, m) for m in test.get("regressed_metrics") or [] if m != plant.metric]
        if others:
            note += f"; also {', '.join(others)}"
        if test["verdict"] not in ("regressed", "unchanged", "improved"):
            note += f"; verdict {test['verdict']}"
        runs = metric.get("runs", "-") if metric else "-"
        print(f"{plant.name:<12} {plant.factor:5.2g}x "
              f"{direct.get(plant.name, float('nan')):6.2f}x {ratio:>7} {interval:>14} {p:>7} {runs:>4}  {note}")
    planted = {p.nodeid for p in PLANTED}
    alarms = [t for t in report["tests"] if t["nodeid"] not in planted and t["verdict"] == "regressed"]
    print(f"unchanged tests flagged (false alarms): {len(alarms)}")
    for t in alarms:
        print(f"  {t['nodeid']} ({(t.get('baseline') or {}).get('time_s', 0) * 1000:.1f} ms): {flagged(t)}")
    lengths = ", ".join(f"{t['nodeid'].split('::test_unchanged_')[-1]} {t['time_s'] * 1000:.1f} ms"
                        for t in report["tests"] if "test_unchanged_" in t["nodeid"] and t.get("time_s") is not None)
    print(f"unchanged tests as measured at HEAD: {lengths}")
    return missed


def attribution_table(report: dict) -> tuple[int, int]:
    """For each caught planted regression, is the first function the report blames the changed run() of
    its planted module (and not spin(), the unchanged helper where the time is spent)? Returns (right, caught)."""
    firsts = {}
    for entry in report.get("functions", []):
        for nodeid in entry["tests"]:
            firsts.setdefault(nodeid, entry)
    right = caught = 0
    for plant in PLANTED:
        test = next((t for t in report["tests"] if t["nodeid"] == plant.nodeid), None)
        if not test or test["verdict"] != "regressed":
            continue
        caught += 1
        first = firsts.get(plant.nodeid)
        named = f"{first['file']}::{first['qualname']}" if first else "nothing"
        ok = named == f"planted/{plant.name}.py::run"
        right += ok
        if not ok:
            print(f"  attribution: {plant.name} first blamed {named}, not planted/{plant.name}.py::run")
    print(f"attribution: the changed function came first for {right} of {caught} caught regressions")
    return right, caught


def start_load() -> subprocess.Popen:
    """Another process keeping one core busy for the whole measurement, as on a shared runner."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nulls", type=int, default=10, help="gate runs of HEAD against itself (default 10)")
    parser.add_argument("--no-load", action="store_true", help="do not keep a core busy during the measurements")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy every gate's JSON report into DIR (planted.json, null-1.json, ...)")
    parser.add_argument("--saved-baseline", action="store_true",
                        help="gate with a baseline saved at the ref (--soap-save, then --soap) instead of "
                             "--soap-against: the older gate, for comparison")
    opts = parser.parse_args()
    # A SIGTERM must run the finally blocks too, or the CPU burner would outlive this script.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    # Git variables from a calling hook or shell would point GitPython and the worktree at another repository.
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        os.environ.pop(var, None)

    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}, pytest {pkg_version('pytest')}, "
          f"pytest-soap {pkg_version('pytest-soap')}")
    print(f"load: {'off' if opts.no_load else 'on (one core kept busy by another process)'}; "
          f"gate: {'saved baseline' if opts.saved_baseline else '--soap-against'}; {opts.nulls} null runs\n")

    with tempfile.TemporaryDirectory(prefix="soap-accuracy-") as tmp_name:
        tmp = Path(tmp_name)
        repo, sha_a = generate(tmp / "project")
        project = Path(repo.working_tree_dir)
        print(f"project: {len(ORDER) + len(BODY)} tests ({len(PLANTED)} planted regressions, "
              f"{len(ORDER) + len(BODY) - len(PLANTED)} unchanged), commit A {sha_a[:10]}, HEAD (B) {repo.head.commit.hexsha[:10]}")
        # Timed before the load starts: this checks the plants, not the gate.
        direct = direct_ratios(repo, sha_a, PLANTED)
        print("direct ratios, B over A in-process: "
              + ", ".join(f"{p.name} {direct[p.name]:.2f}x" for p in PLANTED) + "\n", flush=True)

        gate = Gate(repo, tmp, opts.saved_baseline, opts.keep)

        def paired(ref: str, label: str) -> tuple[dict | None, float, float]:
            """A plain run, then the gate: the report, the gate's seconds and its cost over the plain run
            just before it (paired, so that a slow spell of the machine hits both alike)."""
            plain_s, _ = run_pytest([], project)
            report, gate_s = gate(ref, label)
            return report, gate_s, gate_s / plain_s

        load = None if opts.no_load else start_load()
        try:
            # Also a warm-up: the first run of a fresh project compiles it and fills the OS caches.
            _, proc = run_pytest([], project)
            if proc.returncode != 0:
                print(f"plain pytest failed on the generated project ({why(proc)})")
                return 1

            print(f"1. planted: the gate at HEAD against A ({sha_a[:10]})")
            report, gate_s, cost = paired(sha_a, "planted")
            if report is None:  # the reason is printed; the null runs would only repeat it
                return 1
            missed = planted_table(report, direct)
            attributed, caught = attribution_table(report)

            print(f"\n2. nulls: the gate at HEAD against HEAD, {opts.nulls} runs")
            null_counts, null_costs = [], []
            for n in range(1, opts.nulls + 1):
                null, seconds, null_cost = paired("HEAD", f"null run {n}")
                if null is None:
                    break
                null_counts.append(len(null["regressions"]))
                null_costs.append(null_cost)
                verdicts = Counter(t["verdict"] for t in null["tests"])
                # Suspects: tests the first pass sent to extra rounds (more than one run of some metric).
                suspects = sum(max((m.get("runs") or 1 for m in t.get("metrics", {}).values()), default=1) > 1
                               for t in null["tests"])
                print(f"null run {n}: {len(null['regressions'])} flagged ({seconds:.1f} s, {null_cost:.2f}x plain, "
                      f"{suspects} suspects re-run; {', '.join(f'{v} {c}' for v, c in verdicts.most_common())})",
                      flush=True)
                for t in null["tests"]:
                    if t["verdict"] == "regressed":
                        print(f"  {t['nodeid']}: {flagged(t)}")
            if null_counts:
                print(f"false alarms over {len(null_counts)} null runs: {sum(null_counts)} (target 0)")
        finally:
            if load is not None:
                load.kill()
                load.wait()

    print(f"\n3. cost: the planted gate took {gate_s:.2f} s, {cost:.2f}x the plain run before it "
          f"(target <= {COST_TARGET:g}x)", end="")
    stages = (report.get("against") or {}).get("seconds") or {}
    if stages:
        planted_share = sum(t.get("time_s") or 0 for t in report["tests"] if t["nodeid"] in {p.nodeid for p in PLANTED})
        planted_share /= sum(t.get("time_s") or 0 for t in report["tests"]) or 1
        print(f"\n   of which: the ref's worktree {stages.get('worktree', 0):.2f} s, its first pass "
              f"{stages.get('base', 0):.2f} s (waited for after the head's: {stages.get('waited', 0):.2f} s), "
              f"rechecks {stages.get('rechecks', 0):.2f} s for {report['against'].get('suspects')} suspects, "
              f"rounds {stages.get('rounds', 0):.2f} s ({report['against'].get('rounds')} of them), attribution's "
              f"profiles {stages.get('profiles', 0):.2f} s; the planted tests are {planted_share:.0%} "
              f"of the suite's test time at HEAD", end="")
    if null_costs:
        print(f"; null gates {statistics.median(null_costs):.2f}x plain (median; "
              f"{min(null_costs):.2f}x to {max(null_costs):.2f}x)", end="")
    print()
    if opts.saved_baseline:
        print("   (saved-baseline mode: the gate's time leaves out the --soap-save run at the ref)")

    print(f"\nsummary: {'all targets caught' if not missed else f'{missed} target regressions MISSED'}; "
          f"{sum(null_counts)} false alarms in {len(null_counts)} null runs; "
          f"cost {cost:.2f}x plain; attribution right for {attributed} of {caught} caught")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the finally blocks have already stopped the CPU burner and removed the project
        print("\ninterrupted")
        sys.exit(130)

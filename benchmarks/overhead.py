"""What pytest-soap costs on a real third-party suite: networkx's own tests.

    python benchmarks/overhead.py [--rounds 3] [--pyargs networkx.algorithms.flow ...]

Runs the suite in interleaved rounds (plain, time-only, gate, memray, plain, ...) so that a slow
spell of the machine hits every configuration alike, and reports each configuration's median wall
time and its ratio to plain pytest. The gate runs against a baseline saved from the same, unchanged
code, so every test it flags as regressed is a false alarm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

import git
import networkx

from common import pkg_version, run_pytest, why  # next to this file

DEFAULT_SUITE = ["networkx.algorithms.shortest_paths", "networkx.algorithms.flow"]
TARGETS = {"time-only": 1.05, "gate": 1.3}  # the ratios to plain pytest the plugin aims for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="how many times each configuration runs (default 3)")
    parser.add_argument("--pyargs", nargs="+", default=DEFAULT_SUITE, metavar="MODULE",
                        help=f"the test packages to run (default: {' '.join(DEFAULT_SUITE)})")
    opts = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, {platform.machine()}")
    print(f"python {platform.python_version()}, networkx {pkg_version('networkx')}, "
          f"pytest {pkg_version('pytest')}, pytest-soap {pkg_version('pytest-soap')}, "
          f"pytest-memray {pkg_version('pytest-memray')}")
    print(f"suite: --pyargs {' '.join(opts.pyargs)}; {opts.rounds} rounds\n")

    with tempfile.TemporaryDirectory(prefix="soap-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        # An empty working directory: no ini file, conftest or .soap folder can reach the runs.
        cwd = tmp / "cwd"
        cwd.mkdir()
        suite = ["--pyargs", *opts.pyargs]
        baseline = str(tmp / "baseline.json")

        # The gate needs a baseline from the same code. Saving it is a one-off cost, shown on its own.
        save_s, proc = run_pytest([*suite, "--soap", "--soap-save", "--soap-baseline", baseline], cwd)
        if proc.returncode != 0:
            print(f"saving the baseline failed ({why(proc)}); the gate is skipped")

        # --soap-against needs a git repository: a copy of networkx, committed, its tests run by path.
        repo_dir = tmp / "nx"
        shutil.copytree(Path(networkx.__file__).parent, repo_dir / "networkx",
                        ignore=shutil.ignore_patterns("__pycache__"))
        repo = git.Repo.init(repo_dir)
        repo.git.add("--all")
        repo.index.commit("networkx", author=git.Actor("bench", "bench@example.com"))
        by_path = [str(Path("networkx", *module.split(".")[1:])) for module in opts.pyargs]

        configs = {
            "plain": suite,
            "time-only": [*suite, "--soap", "--soap-memory", "off", "--soap-json", str(tmp / "time-only-{n}.json")],
            # The time-and-memory gate; {n} becomes the round, so each run leaves its own JSON report.
            "gate": [*suite, "--soap", "--soap-baseline", baseline, "--soap-json", str(tmp / "gate-{n}.json")],
            "memray": [*suite, "--memray"],
            # The side-by-side gate, HEAD against HEAD: the same code on both sides.
            "against": [*by_path, "--soap", "--soap-against", "HEAD", "--soap-json", str(tmp / "against-{n}.json")],
        }
        cwds = {"against": repo_dir}
        times: dict[str, list[float]] = {name: [] for name in configs}
        skipped: dict[str, str] = {}
        if proc.returncode != 0:
            skipped["gate"] = "no baseline"

        for n in range(1, opts.rounds + 1):
            for name, args in configs.items():
                if name in skipped:
                    continue
                seconds, proc = run_pytest([a.replace("{n}", str(n)) for a in args], cwds.get(name, cwd))
                # Exit 1 means tests failed, or (for the gate) that it flagged a regression: a run that
                # still counts. Anything else (2 usage error, 4 unknown option, ...) means it did not run.
                ok = proc.returncode == 0 or (proc.returncode == 1 and name != "plain")
                if not ok:
                    skipped[name] = why(proc)
                    print(f"{name}: skipped, {skipped[name]}")
                    continue
                if proc.returncode == 1 and name not in ("gate", "against"):
                    print(f"{name} (round {n}): tests failed, {why(proc)}")
                times[name].append(seconds)
                print(f"round {n}: {name:<9} {seconds:6.2f} s  (exit {proc.returncode})", flush=True)

        if not times["plain"]:
            print("plain pytest did not pass on this suite; no ratios to report")
            return 1
        plain = statistics.median(times["plain"])
        print(f"\n{'configuration':<28} {'median s':>8} {'x plain':>8}  target")
        for name, runs in times.items():
            label = {"plain": "plain pytest", "time-only": "--soap --soap-memory off",
                     "gate": "--soap gate (time + memory)", "memray": "--memray (pytest-memray)",
                     "against": "--soap-against HEAD"}[name]
            if name in skipped:
                print(f"{label:<28} {'skipped':>8}")
                continue
            median = statistics.median(runs)
            target = f"<= {TARGETS[name]:.2f}x" if name in TARGETS else ""
            print(f"{label:<28} {median:8.2f} {median / plain:7.2f}x  {target}")
        print(f"{'(saving the baseline, once)':<28} {save_s:8.2f} {save_s / plain:7.2f}x")

        # Does sampling memory inflate the times it reports? Per test, the median time over the gate
        # runs (time and memory) against the median over the time-only runs, interleaved with them in
        # the same rounds; tests under 1 ms are noise.
        def per_test_times(config: str) -> dict[str, float]:
            seen: dict[str, list[float]] = {}
            for n in range(1, len(times[config]) + 1):
                for t in json.loads((tmp / f"{config}-{n}.json").read_text())["tests"]:
                    if t["time_s"] is not None:
                        seen.setdefault(t["nodeid"], []).append(t["time_s"])
            return {k: statistics.median(v) for k, v in seen.items()}

        if not {"gate", "time-only"} & set(skipped):
            with_memory, time_only = per_test_times("gate"), per_test_times("time-only")
            ratios = [with_memory[k] / v for k, v in time_only.items() if k in with_memory and v >= 0.001]
            if ratios:
                print(f"reported test times with memory sampling / without: median {statistics.median(ratios):.3f}x "
                      f"over {len(ratios)} tests of 1 ms or more")

        # False alarms: the code did not change between the baseline and the gate runs.
        for config in ("gate", "against"):
            if config in skipped:
                continue
            false_alarms, flagged = 0, {}
            for n in range(1, len(times[config]) + 1):
                report = json.loads((tmp / f"{config}-{n}.json").read_text())
                verdicts = Counter(t["verdict"] for t in report["tests"])
                # Judged: compared with its baseline figure (not below the noise floor, not new or skipped).
                judged = sum(verdicts[v] for v in ("regressed", "improved", "unchanged"))
                false_alarms += len(report["regressions"])
                print(f"{config} run {n}: {len(report['regressions'])} flagged; judged {judged} of "
                      f"{len(report['tests'])} tests ({', '.join(f'{v} {c}' for v, c in verdicts.most_common())})")
                for t in report["tests"]:
                    if t["verdict"] == "regressed":
                        flagged.setdefault(t["nodeid"], []).append((n, t))
            print(f"false alarms over {len(times[config])} {config} runs: {false_alarms} (target 0)")
            for nodeid, hits in flagged.items():
                for n, t in hits:
                    # ratio is None when the baseline figure was 0
                    metrics = ", ".join(f"{k} x{v['ratio'] or float('inf'):.2f} (p={v['p_value']:.3g}, {v['runs']} runs)"
                                        for k, v in t["metrics"].items() if v["verdict"] == "regressed")
                    print(f"  run {n}: {nodeid}: {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

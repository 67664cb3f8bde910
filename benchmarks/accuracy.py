"""Does `pytest --soap --soap-against REF` catch regressions, and only them; and is duet measurement
(--soap-sides duet: the ref's warm process runs each test at the same moment as the head's session, on the
other core) more exact than sequential sides (the head's tests, then the ref's)? Issue 15's questions.

    python benchmarks/accuracy.py [--sides duet|sequential|both] [--load idle|busy|both] [--runs 5]
                                  [--nulls 20] [--real-nulls N] [--project planted|real|both] [--keep DIR]

The projects, each in a temporary directory:

- planted (benchmarks/accuracy_project.py): a generated git project, commit A and commit B (HEAD), that differ
  only in the planted modules: time regressions of 1.1x, 1.15x, 1.2x, 1.5x, 2x and 10x, peak memory 1.1x and
  3x, beside unchanged tests of fixed lengths, one of random length and one that starts a subprocess. Before
  any gate runs, each planted function is timed in this process, B against A ("direct"), so that a miss can be
  told apart from a plant that did not take.
- real (benchmarks/real_loop.py's sqlparse-imt case): sqlparse 0.6.1 with its `imt` speed fix reverted at
  HEAD, the fix tagged `fixed`; a slowdown of about 1.2x on the key test, over the case's selection of tests.

For each load (idle; busy: one core kept busy by another process, as on a shared CI runner) and each sides mode,
interleaved so that a slow spell of the machine hits every configuration alike:

- --runs planted gates: the gate at HEAD against the regressed commit's parent (A, or `fixed`);
- --nulls null gates: the gate at HEAD against HEAD. The code is the same on both sides, so every test it
  flags is a false alarm;
- before every gate, a plain pytest run of the same tests: the gate's cost is its wall time over that run's.

How to read the tables (one column or row per load and sides mode):

a. detection: for each planted regression, "k/N · r": caught in k of N planted gates, r the median ratio the
   gate read (head over ref, the metric's own); "u unconfirmed" when the budget could not settle a suspect.
   Targets: time 1.15x and memory 1.1x must be caught every time; 1.1x is the stretch.
b. false alarms: null gates with any test flagged, and which tests (xN: in N gates); suspects (tests the first
   pass sent to rechecks), unconfirmed and other verdicts than unchanged and ungated; and, in the planted gates,
   other tests flagged than the planted ones (in the real project those may be real: the revert slows more
   than the key test).
c. cost: gate seconds over the plain run's just before it (target at most 3x), median and range, planted and
   null gates apart; then the median seconds of each stage the report times (the ref's worktree, its first
   pass `base`, the head's wait for it, rechecks, rounds, attribution's profiles).
d. spread of the first pass in the nulls: the key evidence for duet against sequential. For every test whose
   runs take at least 1 ms, the paired ratio of its first runs, head over ref (samples_s[0] over
   baseline_samples_s[0]): the median absolute deviation of the ratios (of their logs, written in %), the 90th
   and 99th percentiles of |ratio - 1| in %, and the share of tests slower than 1.05x (a suspect at half the
   gate's 10% line) and than 1.10x (at the line). Nulls measure noise only: the narrower, the better.

Failures do not stop the benchmark: a gate that did not run prints one line saying why, and counts as not run.
Ratios and times are from the runs made; nothing here asserts on them. Time: one planted gate and one null gate
cost about 2 plain runs and a gate each, per load and sides mode; see the last lines of a run.
"""

from __future__ import annotations

import argparse
import json
import math
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
from dataclasses import dataclass, field
from pathlib import Path

from accuracy_project import BODY, ORDER, PLANTED, Plant, generate, load_function  # next to this file
from common import pkg_version, run_pytest, why  # next to this file
from real_loop import CASES, ensure_needs, make_repo  # next to this file: stdlib imports only

TARGETS = {"time_s": 1.15, "peak_mb": 1.1}  # the smallest factors the gate must catch (stretch: time 1.1x)
COST_TARGET = 3.0  # the gate's wall time over a plain run, at most
FLOOR_S = 0.001  # the spread table leaves out tests faster than this (the gate does not gate them either)
GATE_TIMEOUT_S = 1800  # one pytest run at most; past it, it is killed and counts as a gate that did not run
REAL_CASE, REAL_NULLS = "sqlparse-imt", 10
STAGES = ("worktree", "base", "waited", "rechecks", "rounds", "profiles")
LABELS = {"time_s": "time", "peak_mb": "peak", "tmu_mbs": "TMU", "cpu_s": "cpu"}
QUIET = {"unchanged", "ungated"}  # verdicts not worth a word in a null gate


@dataclass(frozen=True)
class Target:
    """A test the planted gates should flag: by which metric, and by how much, when that is known."""

    label: str
    nodeid: str
    metric: str
    factor: float | None  # None: a real fix, known only roughly
    direct: float | None = None  # B over A, timed in-process


@dataclass
class Project:
    name: str  # planted or real
    path: Path
    ref: str  # the planted gates' ref: the regressed HEAD's parent
    selection: list[str]  # the tests each run selects (empty: the project's testpaths)
    targets: list[Target]
    nulls: int  # null gates per load and sides mode


@dataclass
class GateRun:
    report: dict | None  # None: the gate did not run
    gate_s: float
    plain_s: float

    @property
    def cost(self) -> float:
        return self.gate_s / self.plain_s if self.plain_s else math.nan


@dataclass
class Cell:
    """The gates of one load and sides mode."""

    planted: list[GateRun] = field(default_factory=list)
    nulls: list[GateRun] = field(default_factory=list)

    def reports(self, kind: str) -> list[dict]:
        return [g.report for g in getattr(self, kind) if g.report is not None]


class GateUnusable(Exception):
    """The gate refused its options (pytest's usage error): every further gate would only repeat it."""


# --- measuring --------------------------------------------------------------------------------------------


def start_load() -> subprocess.Popen:
    """Another process keeping one core busy for the whole measurement, as on a shared runner."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def stop(load: subprocess.Popen | None) -> None:
    if load is not None:
        load.kill()
        load.wait()


def gate(project: Project, ref: str, sides: str, label: str, keep: Path | None) -> GateRun:
    """A plain run of the project's tests, then the gate at HEAD against `ref` (paired, so that a slow spell
    of the machine hits both alike)."""
    plain_s, plain = run_pytest(project.selection, project.path, GATE_TIMEOUT_S)
    if plain.returncode != 0:
        print(f"{label}: the plain run before the gate failed ({why(plain)}); its cost is not comparable")
    report = project.path.parent / f"{label}.json"
    report.unlink(missing_ok=True)
    args = [*project.selection, "--soap", f"--soap-against={ref}", f"--soap-sides={sides}", f"--soap-json={report}"]
    gate_s, proc = run_pytest(args, project.path, GATE_TIMEOUT_S)
    # Exit 1: a regression was flagged (or a test failed: the report says which). 0: nothing flagged.
    if proc.returncode not in (0, 1) or not report.exists():
        print(f"{label}: the gate did not run ({why(proc)})", flush=True)
        if proc.returncode == 4:
            raise GateUnusable(f"pytest-soap {pkg_version('pytest-soap')} refused the gate's options ({why(proc)})")
        return GateRun(None, gate_s, plain_s)
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(report, keep / report.name)
    data = json.loads(report.read_text())
    ran = (data.get("against") or {}).get("sides")
    print(f"  {label}: {gate_s:.1f} s, {gate_s / plain_s:.2f}x plain, sides {ran}, "
          f"flagged {len(data.get('regressions') or [])}", file=sys.stderr, flush=True)
    return GateRun(data, gate_s, plain_s)


def measure(project: Project, loads: list[str], sides: list[str], runs: int, keep: Path | None) -> dict:
    """Every gate of the project, by (load, sides). Within a load the modes and the two kinds of gate take
    turns, so that a slow spell of the machine hits them alike."""
    cells = {(load, mode): Cell() for load in loads for mode in sides}
    for load in loads:
        burner = start_load() if load == "busy" else None
        try:
            for i in range(max(runs, project.nulls)):
                for kind, ref, count in (("planted", project.ref, runs), ("nulls", "HEAD", project.nulls)):
                    for mode in sides if i < count else ():
                        label = f"{project.name}-{load}-{mode}-{kind}-{i + 1}"
                        getattr(cells[load, mode], kind).append(gate(project, ref, mode, label, keep))
        except GateUnusable as stopped:
            print(f"{project.name}: stopped measuring: {stopped}")
            break
        finally:
            stop(burner)
    return cells


def warm_up(project: Project) -> bool:
    """The first run of a fresh project compiles it and fills the OS's caches; it must pass."""
    _, proc = run_pytest(project.selection, project.path, GATE_TIMEOUT_S)
    if proc.returncode != 0:
        print(f"{project.name}: plain pytest failed on the project ({why(proc)}); not measured")
    return proc.returncode == 0


# --- the projects -----------------------------------------------------------------------------------------


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
            ratios[plant.name] = peak_ratio(old, new) if plant.metric == "peak_mb" else time_ratio(old, new, rounds)
    finally:
        sys.path.remove(project)
    return ratios


def peak_ratio(old, new) -> float:
    peaks = []
    for fn in (old, new):
        tracemalloc.start()
        fn()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return peaks[1] / peaks[0]


def time_ratio(old, new, rounds: int) -> float:
    pairs = []
    for n in range(rounds):
        seconds = {}
        for fn in ((old, new) if n % 2 else (new, old)):  # alternate which goes first
            start = time.perf_counter()
            fn()
            seconds[fn] = time.perf_counter() - start
        pairs.append(seconds[new] / seconds[old])
    return statistics.median(pairs)


def planted_project(tmp: Path, nulls: int) -> Project:
    repo, sha_a = generate(tmp / "planted" / "project")
    print(f"planted project: {len(ORDER) + len(BODY)} tests ({len(PLANTED)} planted regressions, "
          f"{len(ORDER) + len(BODY) - len(PLANTED)} unchanged), commit A {sha_a[:10]}, "
          f"HEAD (B) {repo.head.commit.hexsha[:10]}")
    direct = direct_ratios(repo, sha_a, PLANTED)  # before any load: this checks the plants, not the gate
    targets = [Target(p.name, p.nodeid, p.metric, p.factor, direct[p.name]) for p in PLANTED]
    return Project("planted", Path(repo.working_tree_dir), sha_a, [], targets, nulls)


def real_project(tmp: Path, nulls: int) -> Project | None:
    case = next(c for c in CASES if c.key == REAL_CASE)
    try:
        ensure_needs(case)
        path = make_repo(case, tmp / "real")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        print(f"real project: could not be made ({' '.join(str(error).split())[:300]}); not measured")
        return None
    print(f"real project: {case.project} {case.version} with {case.commit[:9]} reverted at HEAD ({case.url}); "
          f"selection {' '.join(case.tests)}")
    target = Target(f"{case.key}: {case.key_test.split('::')[-1]}", case.key_test, "time_s", None)
    return Project("real", path, "fixed", list(case.tests), [target], nulls)


# --- reading the reports ----------------------------------------------------------------------------------


def test_of(report: dict, nodeid: str) -> dict:
    return next((t for t in report.get("tests", []) if t["nodeid"] == nodeid), {})


def short(nodeid: str) -> str:
    return nodeid.split("::")[-1]


def suspects(report: dict) -> int:
    """Tests the first pass sent to rechecks: the report's count, else those with more than one run of a metric."""
    counted = (report.get("against") or {}).get("suspects")
    if counted is not None:
        return counted
    return sum(max((m.get("runs") or 1 for m in (t.get("metrics") or {}).values()), default=1) > 1
               for t in report.get("tests", []))


def unconfirmed(test: dict) -> bool:
    return test.get("verdict") == "unconfirmed" or any(
        m.get("verdict") == "unconfirmed" for m in (test.get("metrics") or {}).values())


def first_pass_ratios(report: dict) -> list[float] | None:
    """Head over ref of each test's first runs, for tests at or above the floor; None without samples."""
    ratios, seen = [], False
    for test in report.get("tests", []):
        head, ref = test.get("samples_s"), test.get("baseline_samples_s")
        if not head or not ref:
            continue
        seen = True
        if None in (head[0], ref[0]) or min(head[0], ref[0]) <= 0:
            continue
        if statistics.median([s for s in head + ref if s is not None]) >= FLOOR_S:
            ratios.append(head[0] / ref[0])
    return ratios if seen else None


# --- the tables -------------------------------------------------------------------------------------------


def md_table(headers: list[str], rows: list[list]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print()


def x(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def spread(values: list[float], unit: str = "x", digits: int = 2) -> str:
    """'median (min to max)', '-' for none."""
    if not values:
        return "-"
    fmt = lambda v: f"{v:.{digits}f}{unit}"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))} to {fmt(max(values))})"


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def tally(names: Counter) -> str:
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in names.most_common()) or "-"


def detection_cell(target: Target, reports: list[dict]) -> str:
    if not reports:
        return "-"
    caught, ratios, unsettled = 0, [], 0
    for report in reports:
        test = test_of(report, target.nodeid)
        caught += target.metric in (test.get("regressed_metrics") or [])
        unsettled += unconfirmed(test)
        ratio = ((test.get("metrics") or {}).get(target.metric) or {}).get("ratio")
        if ratio is not None:
            ratios.append(ratio)
    text = f"{caught}/{len(reports)}" + (f" · {statistics.median(ratios):.2f}x" if ratios else "")
    return text + (f" ({unsettled} unconfirmed)" if unsettled else "")


def detection_table(project: Project, cells: dict) -> None:
    print(f"### a. detection ({project.name}): caught in k of N planted gates · the median ratio the gate read\n")
    headers = ["planted", "metric", "factor", "direct", *(f"{load} {mode}" for load, mode in cells)]
    rows = []
    for t in project.targets:
        factor = "about 1.2x" if t.factor is None else f"{t.factor:g}x"
        if t.factor is not None and t.factor < TARGETS[t.metric]:
            factor += " (stretch)"
        rows.append([t.label, LABELS[t.metric], factor, x(t.direct),
                     *(detection_cell(t, cell.reports("planted")) for cell in cells.values())])
    md_table(headers, rows)


def alarms_row(project: Project, cell: Cell) -> list:
    nulls = cell.reports("nulls")
    flagged = Counter(short(n) for r in nulls for n in r.get("regressions") or [])
    verdicts = Counter(str(t.get("verdict")) for r in nulls for t in r.get("tests", [])
                       if str(t.get("verdict")) not in QUIET | {"regressed"})
    counts = [suspects(r) for r in nulls]
    unsettled = sum(unconfirmed(t) for r in nulls for t in r.get("tests", []))
    planted = {t.nodeid for t in project.targets}
    others = Counter(short(n) for r in cell.reports("planted") for n in r.get("regressions") or [] if n not in planted)
    return [f"{len(nulls)}/{len(cell.nulls)}", sum(bool(r.get("regressions")) for r in nulls), tally(flagged),
            f"{sum(counts)} ({statistics.median(counts):g} a gate)" if counts else "-", unsettled, tally(verdicts),
            tally(others)]


def alarms_table(project: Project, cells: dict) -> None:
    print(f"### b. false alarms ({project.name}): null gates (HEAD against HEAD)\n")
    headers = ["load", "sides", "null gates run", "gates with a false alarm", "tests flagged", "suspects",
               "unconfirmed", "other verdicts", "planted gates: other tests flagged"]
    md_table(headers, [[load, mode, *alarms_row(project, cell)] for (load, mode), cell in cells.items()])
    if project.name == "real":
        print("(in the real project's planted gates, other tests than the key test may be slowed by the revert too)\n")


def sides_ran(cell: Cell) -> str:
    ran = Counter(str((r.get("against") or {}).get("sides")) for r in cell.reports("planted") + cell.reports("nulls"))
    return ", ".join(f"{mode} {n}" for mode, n in ran.most_common()) or "-"


def cost_table(project: Project, cells: dict) -> None:
    print(f"### c. cost ({project.name}): the gate's wall time over the plain run just before it "
          f"(target at most {COST_TARGET:g}x)\n")
    headers = ["load", "sides", "planted gates", "planted gate s", "null gates", "null gate s", "plain run s",
               "sides ran"]
    rows = []
    for (load, mode), cell in cells.items():
        ran = [g for g in cell.planted + cell.nulls if g.report is not None]
        rows.append([load, mode, spread([g.cost for g in cell.planted if g.report]),
                     spread([g.gate_s for g in cell.planted if g.report], " s", 1),
                     spread([g.cost for g in cell.nulls if g.report]),
                     spread([g.gate_s for g in cell.nulls if g.report], " s", 1),
                     spread([g.plain_s for g in ran], " s", 1), sides_ran(cell)])
    md_table(headers, rows)
    print(f"stages ({project.name}), median seconds:\n")
    rows = []
    for (load, mode), cell in cells.items():
        for kind in ("planted", "nulls"):
            reports = cell.reports(kind)
            stages = [(r.get("against") or {}).get("seconds") or {} for r in reports]
            rows.append([load, mode, kind, len(reports), *(stage_median(stages, s) for s in STAGES)])
    md_table(["load", "sides", "gates", "n", *STAGES], rows)


def stage_median(stages: list[dict], name: str) -> str:
    values = [s[name] for s in stages if isinstance(s.get(name), (int, float))]
    return f"{statistics.median(values):.2f}" if values else "-"


def spread_row(cell: Cell) -> list:
    reports = cell.reports("nulls")
    per_gate = [first_pass_ratios(r) for r in reports]
    ratios = [r for gate_ratios in per_gate if gate_ratios for r in gate_ratios]
    if not ratios:
        why_not = "no null gate ran" if not reports else (
            "no samples_s in the reports" if all(g is None for g in per_gate) else "no test at or above 1 ms")
        return [len(reports), 0, why_not, "-", "-", "-", "-"]
    logs = [math.log(r) for r in ratios]
    centre = statistics.median(logs)
    mad = statistics.median(abs(v - centre) for v in logs)
    off = [abs(r - 1) * 100 for r in ratios]
    return [len(reports), len(ratios), f"{math.expm1(mad) * 100:.1f}%", f"{percentile(off, 0.9):.1f}%",
            f"{percentile(off, 0.99):.1f}%", f"{sum(r > 1.05 for r in ratios) / len(ratios):.1%}",
            f"{sum(r > 1.10 for r in ratios) / len(ratios):.1%}"]


def spread_table(project: Project, cells: dict) -> None:
    print(f"### d. spread of the first pass in the null gates ({project.name}): head/ref of each test's first "
          "runs, tests at or above 1 ms\n")
    headers = ["load", "sides", "null gates", "pairs", "median abs deviation", "p90 abs(ratio-1)",
               "p99 abs(ratio-1)", "slower than 1.05x", "slower than 1.10x"]
    md_table(headers, [[load, mode, *spread_row(cell)] for (load, mode), cell in cells.items()])


def timing_line(project: Project, cells: dict, seconds: float) -> None:
    gates = [g for cell in cells.values() for g in cell.planted + cell.nulls]
    each = [g.gate_s + g.plain_s for g in gates]
    print(f"{project.name}: {len(gates)} gates ({sum(g.report is None for g in gates)} did not run) in "
          f"{seconds:.0f} s; a gate with its plain run took {spread(each, ' s', 1)}\n")


def tables(project: Project, cells: dict, seconds: float) -> None:
    print(f"## {project.name} project\n")
    if not any(cell.reports("planted") or cell.reports("nulls") for cell in cells.values()):
        print(f"no gate ran on the {project.name} project: no tables (the lines above say why)\n")
        return
    detection_table(project, cells)
    alarms_table(project, cells)
    cost_table(project, cells)
    spread_table(project, cells)
    timing_line(project, cells, seconds)


# --- main -------------------------------------------------------------------------------------------------


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    both = lambda *modes: [*modes, "both"]
    parser.add_argument("--sides", choices=both("duet", "sequential"), default="both", help="default both")
    parser.add_argument("--load", choices=both("idle", "busy"), default="both",
                        help="busy: one core kept busy by another process (default both)")
    parser.add_argument("--no-load", dest="load", action="store_const", const="idle", help="the same as --load idle")
    parser.add_argument("--runs", type=int, default=5, help="planted gates per load and sides mode (default 5)")
    parser.add_argument("--nulls", type=int, default=20,
                        help="null gates (HEAD against HEAD) per load and sides mode (default 20)")
    parser.add_argument("--real-nulls", type=int, metavar="N",
                        help=f"null gates on the real project (default: --nulls, at most {REAL_NULLS})")
    parser.add_argument("--project", choices=both("planted", "real"), default="planted", help="default planted")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="copy every gate's JSON report into DIR")
    opts = parser.parse_args()
    pick = lambda value, modes: list(modes) if value == "both" else [value]
    opts.sides, opts.load = pick(opts.sides, ("duet", "sequential")), pick(opts.load, ("idle", "busy"))
    opts.project = pick(opts.project, ("planted", "real"))
    if opts.real_nulls is None:
        opts.real_nulls = min(opts.nulls, REAL_NULLS)
    return opts


def header(opts: argparse.Namespace) -> None:
    soap = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                          text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}; python {platform.python_version()}, "
          f"pytest {pkg_version('pytest')}, pytest-soap {pkg_version('pytest-soap')} (git {soap or '?'})")
    print(f"loads: {', '.join(opts.load)}; sides: {', '.join(opts.sides)}; per load and sides mode: {opts.runs} "
          f"planted gates, {opts.nulls} null gates ({opts.real_nulls} on the real project)\n")


def run_project(name: str, tmp: Path, opts: argparse.Namespace) -> None:
    started = time.perf_counter()
    project = planted_project(tmp, opts.nulls) if name == "planted" else real_project(tmp, opts.real_nulls)
    if project is None or not warm_up(project):
        return
    if project.name == "planted":
        print("direct ratios, B over A in-process: "
              + ", ".join(f"{t.label} {t.direct:.2f}x" for t in project.targets))
    print(flush=True)
    cells = measure(project, opts.load, opts.sides, opts.runs, opts.keep)
    tables(project, cells, time.perf_counter() - started)


def main() -> int:
    opts = options()
    # A SIGTERM must run the finally blocks too, or the CPU burner would outlive this script.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    # Git variables from a calling hook or shell would point GitPython and the worktree at another repository.
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        os.environ.pop(var, None)
    header(opts)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="soap-accuracy-") as tmp:
        for name in opts.project:
            run_project(name, Path(tmp), opts)
    print(f"total: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the finally blocks have already stopped the CPU burner and removed the projects
        print("\ninterrupted")
        sys.exit(130)

"""`pytest --soap --soap-against REF`, on real git repositories (GitPython) and real pytest sessions."""

import json
import random
import site
import subprocess
import sys

import git
import pytest

from pytest_soap.against import RECHECK_MARGIN, CpuClock, _add_runs
from pytest_soap.compare import Thresholds, judge_paired
from pytest_soap.records import Measurement, Sample
from pytest_soap.sides import side_arguments
from pytest_soap.stats import mann_whitney_greater, ratio_interval
from pytest_soap.suspects import WARM_UP_RUNS

from projects import INI, commit, git_project, write  # tests/projects.py

WORK = """
    import time

    def slowed():
        time.sleep(0.02 * {slow})

    def steady():
        time.sleep(0.01)

    def hungry():
        return b"x" * ({mem_mb} * 2**20)
"""

TESTS = """
    from pkg import work

    def test_slowed():
        work.slowed()

    def test_steady():
        work.steady()

    def test_hungry():
        assert work.hungry()
"""


@pytest.fixture(params=["duet", "sequential"])
def project(pytester, request):
    """A repository with a base commit; each test changes it and commits (or not) as it needs. Each test
    runs with both ways of running the sides (its ini file says which), never left to how idle the machine is."""
    root = pytester.path
    (root / ".gitignore").write_text("report.json\n")
    repo = git_project(root, WORK.format(slow=1, mem_mb=10), TESTS, INI + f'soap_sides = "{request.param}"\n')
    pytester.repo = repo
    return pytester


def report(pytester):
    return json.loads((pytester.path / "report.json").read_text())


def verdicts(pytester):
    return {t["nodeid"].split("::")[-1]: t["verdict"] for t in report(pytester)["tests"]}


def no_worktree_left(pytester):
    return len(pytester.repo.git.worktree("list").splitlines()) == 1


def test_planted_regressions_are_caught_with_ratio_and_interval(project):
    write(project.path / "pkg" / "work.py", WORK.format(slow=10, mem_mb=30))
    commit(project.repo, "slower and hungrier")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    test = "Wilcoxon signed-rank" if "duet" in (project.path / "pyproject.toml").read_text() else "Mann-Whitney U"
    result.stdout.fnmatch_lines(["against HEAD~1 (*)", "REGRESSED (2):", f"*time *×*[[]*–*[]]*{test} p=*"])
    data = report(project)
    assert data["against"]["ref"] == "HEAD~1" and data["against"]["rounds"] >= 1
    tests = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    slowed, hungry = tests["test_slowed"], tests["test_hungry"]
    assert slowed["verdict"] == "regressed" and slowed["regressed_metrics"] == ["time_s"]
    low, high = slowed["metrics"]["time_s"]["interval"]
    assert 5 < low <= slowed["metrics"]["time_s"]["ratio"] <= high < 15
    assert slowed["baseline"]["time_s"] < slowed["time_s"]  # "baseline" holds the ref's figures
    assert "peak_mb" in hungry["regressed_metrics"]
    assert 2.5 < hungry["metrics"]["peak_mb"]["ratio"] < 3.5
    assert tests["test_steady"]["verdict"] in ("unchanged", "improved")
    assert no_worktree_left(project)


def test_ref_equal_to_head_is_a_null_comparison(project):
    result = project.runpytest("--soap", "--soap-against", "HEAD", "--soap-json", "report.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["against HEAD (*); the same commit as HEAD: a null comparison"])
    assert report(project)["regressions"] == []
    assert set(verdicts(project).values()) <= {"unchanged", "improved", "ungated"}


def test_a_dirty_tree_is_compared_as_it_is_and_said_so(project):
    write(project.path / "pkg" / "work.py", WORK.format(slow=10, mem_mb=10))  # not committed
    result = project.runpytest("--soap", "--soap-against", "HEAD", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*the same commit as HEAD*but the tree has changes*"])
    assert report(project)["regressions"] == ["tests/test_work.py::test_slowed"]


def test_the_worktree_code_wins_over_an_editable_install_of_the_working_tree(project, monkeypatch):
    """An editable install puts the working tree on sys.path through a .pth file; the ref's side must still
    import the ref's code. Each side's test records which pkg/work.py it imported."""
    tests = TESTS + """
    def test_where():
        import pathlib, os
        pathlib.Path(os.environ["WHERE_LOG"]).open("a").write(work.__file__ + "\\n")
    """
    write(project.path / "tests" / "test_work.py", tests)
    commit(project.repo, "log where pkg comes from")
    write(project.path / "pkg" / "work.py", WORK.format(slow=10, mem_mb=10))
    commit(project.repo, "slower")
    # What `pip install -e` leaves behind: a .pth in site-packages naming the working tree.
    pth = __import__("pathlib").Path(site.getsitepackages()[0]) / "soap_test_editable.pth"
    pth.write_text(str(project.path) + "\n")
    log = project.path.parent / "where.log"
    monkeypatch.setenv("WHERE_LOG", str(log))
    try:
        result = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    finally:
        pth.unlink()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    imported = set(log.read_text().splitlines())
    assert str(project.path / "pkg" / "work.py") in imported  # the head side
    ref_side = [p for p in imported if "soap-ref-" in p]
    assert ref_side and all(p.endswith("/tree/pkg/work.py") for p in ref_side)  # the ref's side, from its worktree
    assert report(project)["regressions"] == ["tests/test_work.py::test_slowed"]


CACHE_CHECK = """
    import importlib.util, os, pathlib, struct
    import pkg

    def test_cache():
        # Is there, as this side's test runs, an up-to-date timestamp .pyc of each of pkg's modules?
        for source in sorted(pathlib.Path(pkg.__file__).parent.glob("*.py")):
            stat = source.stat()
            header = importlib.util.MAGIC_NUMBER + struct.pack("<LLL", 0, int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size)
            pyc = pathlib.Path(importlib.util.cache_from_source(str(source)))
            with open(os.environ["CACHE_LOG"], "a") as log:
                log.write(f"{source} {pyc.exists() and pyc.read_bytes()[:16] == header}\\n")
"""


def test_both_sides_have_an_up_to_date_bytecode_cache_before_their_tests_run(project, monkeypatch):
    """A fresh worktree has no bytecode cache, nor has a fresh clone: the first imports compile, and under
    PYTHONDONTWRITEBYTECODE every process's do. Against HEAD, a test running `python -m pkg.cli --help` read
    0.25x (improved, p=0.004) in 6 null comparisons of 6 that way: the ref's processes compiled the package,
    the head's read its cache. Each side's test here logs which of pkg's modules, imported or not, have one.
    (The ref's unchanged modules get the head's pycs: see warm_bytecode.)"""
    write(project.path / "pkg" / "cli.py", "import argparse\n")
    write(project.path / "tests" / "test_cache.py", CACHE_CHECK)
    (project.path / ".gitignore").write_text("report.json\npkg/generated.py\n")
    commit(project.repo, "a cli, and a check of the bytecode cache")
    write(project.path / "pkg" / "untracked.py", "X = 1\n")  # part of the working tree as it is
    # The ref's unchanged modules get the head's pycs; this one, changed in the working tree, its own.
    with open(project.path / "pkg" / "work.py", "a") as work:
        work.write("# changed since HEAD\n")
    write(project.path / "pkg" / "generated.py", "X = 1\n")  # ignored: nobody's code
    # Nothing else writes a cache: neither side's processes, and no earlier run.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    assert not list(project.path.rglob("__pycache__"))
    log = project.path.parent / "cache.log"
    monkeypatch.setenv("CACHE_LOG", str(log))
    result = project.runpytest("--soap", "--soap-against", "HEAD", "-k", "test_cache")
    assert result.ret == 0, result.stdout.str()
    cached = dict(line.rsplit(" ", 1) for line in log.read_text().splitlines())
    ref_side = {path.rsplit("/", 1)[1]: fresh for path, fresh in cached.items() if "soap-ref-" in path}
    head_side = {path.rsplit("/", 1)[1]: fresh for path, fresh in cached.items() if "soap-ref-" not in path}
    assert ref_side == {"__init__.py": "True", "cli.py": "True", "work.py": "True"}
    assert head_side == {"__init__.py": "True", "cli.py": "True", "generated.py": "False", "untracked.py": "True",
                         "work.py": "True"}


def test_tests_on_one_side_only_are_new_or_removed(project):
    write(project.path / "tests" / "test_gone.py", "def test_gone():\n    pass\n")
    commit(project.repo, "a test that will go")
    (project.path / "tests" / "test_gone.py").unlink()
    write(project.path / "tests" / "test_new.py", "def test_new():\n    pass\n")
    commit(project.repo, "a new test instead")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    assert result.ret == 0, result.stdout.str()
    found = verdicts(project)
    assert found["test_new"] == "new" and found["test_gone"] == "removed"


def test_a_test_failing_on_the_ref_is_shown_not_judged(project):
    write(project.path / "tests" / "test_fixed.py", "def test_fixed():\n    assert False\n")
    commit(project.repo, "a broken test")
    write(project.path / "tests" / "test_fixed.py", "import time\ndef test_fixed():\n    time.sleep(0.05)\n")
    commit(project.repo, "fixed, and slower")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    assert result.ret == 0, result.stdout.str()
    assert verdicts(project)["test_fixed"] == "failed on ref"


def test_a_test_flaky_in_outcome_gets_no_verdict(project):
    write(project.path / "tests" / "test_flaky.py", """
        import pathlib, time
        def test_flaky():
            runs = pathlib.Path(__file__).with_name("runs.txt")
            count = int(runs.read_text()) + 1 if runs.exists() else 1
            runs.write_text(str(count))
            time.sleep(0.05)
            # Fails once on the head's side, in a confirming round (the ref's side runs from its worktree).
            assert count != 3 or "soap-ref-" in __file__
    """)
    (project.path / ".gitignore").write_text("report.json\nruns.txt\n")
    commit(project.repo, "flaky")
    # The ref's side is fast, so the head's first run is a suspect and gets rounds.
    write(project.path / "tests" / "test_flaky.py",
          (project.path / "tests" / "test_flaky.py").read_text().replace("0.05", "0.2"))
    commit(project.repo, "slower")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    assert verdicts(project)["test_flaky"] == "flaky", result.stdout.str()
    assert "tests/test_flaky.py::test_flaky" not in report(project)["regressions"]


def test_ref_whose_tests_do_not_collect_is_one_clear_line(project):
    write(project.path / "tests" / "test_work.py", "import does_not_exist\n")
    commit(project.repo, "broken")
    write(project.path / "tests" / "test_work.py", TESTS)
    commit(project.repo, "mended")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1")
    result.stdout.fnmatch_lines(["not compared: the tests at HEAD~1 did not run (pytest exited 2: *does_not_exist*)"])
    assert result.ret == 0  # the gate could not judge; the tests themselves passed
    assert no_worktree_left(project)


@pytest.mark.parametrize("args, message", [
    (["--soap-against", "no-such-branch"], "ERROR: pytest-soap: unknown git ref 'no-such-branch': *"),
    (["--soap-against", "HEAD", "--soap-save"], "ERROR: pytest-soap: --soap-save and --soap-against do not mix*"),
])
def test_bad_refs_are_usage_errors_before_any_test_runs(project, args, message):
    result = project.runpytest("--soap", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "passed" not in result.stdout.str()


def test_outside_a_git_repository(pytester):
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--soap", "--soap-against", "main")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-soap: --soap-against needs a git repository, and * is not in one"])


def test_a_shallow_clone_without_the_ref_says_how_to_fetch_it(project, tmp_path):
    for n in range(3):
        write(project.path / "pkg" / "more.py", f"N = {n}\n")
        commit(project.repo, f"commit {n}")
    old = project.repo.commit("HEAD~2").hexsha
    clone = tmp_path / "shallow"
    git.Repo.clone_from(f"file://{project.path}", clone, depth=1)
    result = project.run(sys.executable, "-m", "pytest", "--soap", f"--soap-against={old}", str(clone / "tests"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-soap: '{old}' is not in this shallow clone: *fetch-depth: 0*"])


def test_side_arguments_drop_what_belongs_to_the_controlling_session():
    args = ["-x", "--soap", "--soap-against", "main", "--soap-json=r.json", "tests", "--soap-baseline", "b.json",
            "-k", "fast", "--soap-memory=off", "--soap-save", "--soap-prior", "p.json"]
    assert side_arguments(args) == ["-x", "--soap", "tests", "-k", "fast", "--soap-memory=off"]
    assert side_arguments(args, drop=("tests",)) == ["-x", "--soap", "-k", "fast", "--soap-memory=off"]


# ---- the statistics, on synthetic samples ------------------------------------------------------------

def paired(head_rounds, base_rounds):
    """Measurements whose runs come from several processes: [[first pass], [round 1 runs], ...]."""
    def build(rounds):
        m = Measurement("t.py::test", samples=[Sample(v, v) for r in rounds for v in r])
        m.rounds = [len(r) for r in rounds[1:]]
        return m
    return build(head_rounds), build(base_rounds)


@pytest.mark.parametrize("other_busy, own_busy, idle", [
    (0.0, 1.0, 2.0),  # the session starting up on one core, the other idle: both are free for the sides
    (1.0, 1.0, 1.0),  # another job busy on the other core
    (1.0, 0.0, 1.0),  # the same while the session slept
    (0.0, 0.0, 2.0),
])
def test_idle_cores_count_the_sessions_own_start_up_as_idle(other_busy, own_busy, idle):
    """--soap-sides auto reads the machine's idle time over the session's own start-up, with no sleep: its
    own CPU time then is what the sides will use, not another job's. Two cores at 100 ticks a second, 0.3 s."""
    ticks = 0.3 * 100
    before = CpuClock(idle_ticks=1000, total_ticks=5000, own_s=2.0, at=0.0)
    after = CpuClock(idle_ticks=int(1000 + ticks * (2 - other_busy - own_busy)), total_ticks=int(5000 + 2 * ticks),
                     own_s=2.0 + 0.3 * own_busy, at=0.3)
    assert after.idle_since(before, cores=2, tick_s=0.01) == pytest.approx(idle)


def test_mann_whitney_is_exact_on_small_samples():
    assert mann_whitney_greater([2, 3, 4, 5, 6], [0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(1 / 252)
    assert mann_whitney_greater([1, 2, 3], [1, 2, 3]) > 0.5
    assert mann_whitney_greater([0.1, 0.2], [5, 6]) == 1.0


def test_bootstrap_interval_brackets_the_ratio_and_is_reproducible():
    head, base = [2.0, 2.1, 1.9, 2.05, 2.0], [1.0, 1.02, 0.98, 1.01, 1.0]
    low, high = ratio_interval(head, base)
    assert low < 2.0 < high and (low, high) == ratio_interval(head, base)


def test_a_clear_regression_across_three_process_pairs_is_regressed():
    head, base = paired([[0.030], [0.031, 0.030, 0.030], [0.029, 0.031, 0.030]],
                        [[0.020], [0.020, 0.021, 0.020], [0.019, 0.020, 0.020]])
    v = judge_paired(head, base, Thresholds())
    assert v.verdict == "regressed"
    assert v.metrics["time_s"].ratio == pytest.approx(1.5)
    assert v.metrics["time_s"].p_value <= 0.01
    assert v.metrics["time_s"].runs == 6  # the rounds' runs: the first pass picked the suspect, it does not vote


def test_one_slow_process_is_not_a_regression():
    # The head's first process was slow (a busy machine, an unlucky memory layout); its later ones were not.
    head, base = paired([[0.040], [0.021, 0.020, 0.020], [0.020, 0.021, 0.020]],
                        [[0.020], [0.020, 0.021, 0.020], [0.019, 0.020, 0.020]])
    assert judge_paired(head, base, Thresholds()).verdict != "regressed"
    # Every run slower, but one pair of processes disagrees: still not enough.
    head, base = paired([[0.030], [0.031, 0.030, 0.031], [0.020, 0.0205, 0.020]],
                        [[0.020], [0.020, 0.020, 0.020], [0.020, 0.020, 0.020]])
    v = judge_paired(head, base, Thresholds())
    assert v.verdict != "regressed" and "disagree" in v.metrics["time_s"].reason


def test_a_small_effect_is_significant_but_under_the_threshold():
    head, base = paired([[0.0210], [0.0211, 0.0210], [0.0212, 0.0211]], [[0.020], [0.0200, 0.0201], [0.0199, 0.020]])
    assert judge_paired(head, base, Thresholds()).verdict == "unchanged"  # 5% is real, but under 10%


def test_close_to_the_line_two_agreeing_process_pairs_are_not_enough():
    # 12% slower, p = 1/252, both pairs agree: the shape of a null run's false alarm. It waits for a third pair,
    # and if the rounds end first it is unconfirmed: shown as such, never "unchanged".
    head, base = paired([[0.0224], [0.0224] * 5], [[0.020], [0.020] * 5])
    v = judge_paired(head, base, Thresholds())
    assert v.verdict == "unconfirmed" and v.pending and "third pair" in v.metrics["time_s"].reason
    head, base = paired([[0.0224], [0.0224] * 5, [0.0225] * 3], [[0.020], [0.020] * 5, [0.020] * 3])
    assert judge_paired(head, base, Thresholds()).verdict == "regressed"
    # Twice the threshold or more is past what processes drift by: two pairs do.
    head, base = paired([[0.025], [0.025] * 5], [[0.020], [0.020] * 5])
    v = judge_paired(head, base, Thresholds())
    assert v.verdict == "regressed" and not v.pending
    # Peak memory does not drift with a process's speed: two pairs do.
    head.samples = [Sample(s.time_s, s.cpu_s, peak_mb=22.4) for s in head.samples]
    base.samples = [Sample(s.time_s, s.cpu_s, peak_mb=20.0) for s in base.samples]
    assert judge_paired(head, base, Thresholds()).metrics["peak_mb"].verdict == "regressed"
    # Near the line one pair reads under it: 15% slower, a first pass at 9%. It agrees (past half the line),
    # and the pooled runs decide.
    head, base = paired([[0.0218], [0.0231, 0.0229, 0.0230, 0.0232], [0.0230, 0.0229, 0.0231]],
                        [[0.020], [0.020, 0.0199, 0.0201, 0.020], [0.020, 0.0201, 0.0199]])
    assert judge_paired(head, base, Thresholds()).verdict == "regressed"
    # Runs that scatter 2x (a test of random length) read 1.99x, p < 0.01, on two pairs of a null comparison:
    # the interval reaches down to 1.2x, under twice the threshold, so it takes a third pair.
    head, base = paired([[0.029, 0.017, 0.017], [0.021, 0.029, 0.028, 0.029, 0.027]],
                        [[0.012, 0.014, 0.026], [0.024, 0.010, 0.018, 0.013, 0.014]])
    v = judge_paired(head, base, Thresholds())
    assert v.metrics["time_s"].p_value <= 0.01 and v.metrics["time_s"].interval[0] < 1.21
    assert v.verdict == "unconfirmed" and "third pair" in v.metrics["time_s"].reason
    # The rounds ran out with the pairs at odds (the base's round process slow): 1.2x in the first pass,
    # 0.87x in the round. Settled, that is unchanged; left unsettled by the budget, it is unconfirmed.
    head, base = paired([[0.035, 0.0357, 0.0363], [0.0349, 0.0339, 0.0346, 0.0347, 0.0342]],
                        [[0.029, 0.030, 0.0301], [0.0401, 0.0386, 0.0396, 0.0404, 0.0297]])
    assert judge_paired(head, base, Thresholds()).verdict == "unchanged"
    v = judge_paired(head, base, Thresholds(), unsettled=True)
    assert v.verdict == "unconfirmed" and "1.19x, 0.87x" in v.metrics["time_s"].reason
    # Unsettled, but no pair ever past the line: unchanged.
    head, base = paired([[0.0205], [0.0203] * 3], [[0.020], [0.020] * 3])
    assert judge_paired(head, base, Thresholds(), unsettled=True).verdict == "unchanged"
    # sqlparse's real 1.19x with sequential sides: each fresh process's first run is cold, 15% slower on both
    # sides. Pooled as they are, p = 0.025 over four agreeing pairs; a round's warm-up run is not kept.
    first_pass = ([26.1, 22.9, 22.0], [22.9, 18.5, 19.5])
    rounds = [([24.6, 21.2, 21.2, 21.3], [22.9, 18.2, 18.1, 18.2]), ([25.6, 21.9, 21.9, 21.8], [22.7, 18.4, 19.5, 18.3]),
              ([25.2, 21.5, 21.5, 21.4], [22.3, 18.3, 18.3, 18.4])]
    # As it ran: three runs a round, all kept. Now: one more run a round, the cold one not kept.
    for warm_ups, verdict in ((0, "unconfirmed"), (WARM_UP_RUNS, "regressed")):
        head, base = paired([first_pass[0]], [first_pass[1]])
        for head_runs, base_runs in rounds:
            runs = 3 + warm_ups
            _add_runs(head, Measurement("t.py::test", samples=[Sample(v, v) for v in head_runs[:runs]]), warm_ups=warm_ups)
            _add_runs(base, Measurement("t.py::test", samples=[Sample(v, v) for v in base_runs[:runs]]), warm_ups=warm_ups)
        assert judge_paired(head, base, Thresholds()).verdict == verdict, warm_ups
    # Pairs that disagree are not waiting for one more.
    head, base = paired([[0.0205], [0.0224] * 5], [[0.020], [0.020] * 5])
    assert not judge_paired(head, base, Thresholds()).pending


MIRRORED = [  # (head's runs, base's runs) by process, as `paired` takes them
    # 1.5x slower across three process pairs.
    ([[0.030], [0.031, 0.030, 0.030], [0.029, 0.031, 0.030]], [[0.020], [0.020, 0.021, 0.020], [0.019, 0.020, 0.020]]),
    # A single lucky pair: the first processes (and their rechecks) 5x apart, no fresh round.
    ([[0.020, 0.021, 0.020]], [[0.004, 0.004, 0.0041]]),
    # One slow first process, rounds alike.
    ([[0.040], [0.021, 0.020, 0.020], [0.020, 0.021, 0.020]], [[0.020], [0.020, 0.021, 0.020], [0.019, 0.020, 0.020]]),
    # 12% on two agreeing pairs: waits for a third; then has it.
    ([[0.0224], [0.0224] * 5], [[0.020], [0.020] * 5]),
    ([[0.0224], [0.0224] * 5, [0.0225] * 3], [[0.020], [0.020] * 5, [0.020] * 3]),
    # Every run slower, but one process pair disagrees.
    ([[0.030], [0.031, 0.030, 0.031], [0.020, 0.0205, 0.020]], [[0.020], [0.020] * 3, [0.020] * 3]),
    # 15% slower, one pair reading 9% (under the line, past half of it), the pooled runs significant.
    ([[0.0218], [0.0231, 0.0229, 0.0230, 0.0232], [0.0230, 0.0229, 0.0231]],
     [[0.020], [0.020, 0.0199, 0.0201, 0.020], [0.020, 0.0201, 0.0199]]),
    # Runs that scatter 2x, read 2x slower on two pairs: the interval reaches under twice the threshold.
    ([[0.029, 0.017, 0.017], [0.021, 0.029, 0.028, 0.029, 0.027]], [[0.012, 0.014, 0.026], [0.024, 0.010, 0.018, 0.013, 0.014]]),
    # The first pass far apart, the round's median past the line, its runs too few for p <= 0.01.
    ([[0.060], [0.030, 0.031]], [[0.020], [0.020, 0.021]]),
]


@pytest.mark.parametrize("head_rounds, base_rounds", MIRRORED)
def test_an_improvement_takes_the_evidence_a_regression_does_with_the_sides_swapped(head_rounds, base_rounds):
    """Swapping the sides turns each regression into an improvement and leaves every other verdict, and
    the evidence, as they were: a test cannot be called faster on less than it would be called slower."""
    slower = judge_paired(*paired(head_rounds, base_rounds), Thresholds())
    faster = judge_paired(*paired(base_rounds, head_rounds), Thresholds())
    # An improvement short of evidence is unchanged: only a regression is worth an "unconfirmed" to the gate.
    mirror = {"regressed": "improved", "improved": "regressed", "unconfirmed": "unchanged"}
    assert faster.verdict == mirror.get(slower.verdict, slower.verdict)
    assert faster.metrics["time_s"].ratio == pytest.approx(1 / slower.metrics["time_s"].ratio)
    assert (faster.metrics["time_s"].p_value, faster.pending) == (slower.metrics["time_s"].p_value, slower.pending)
    assert faster.metrics["time_s"].reason == slower.metrics["time_s"].reason


def test_a_single_lucky_process_pair_is_no_improvement():
    # The ref's first process ran the test at five times the head's time, its rechecks too; no fresh round.
    head, base = paired([[0.004, 0.004, 0.0041]], [[0.020, 0.021, 0.020]])
    v = judge_paired(head, base, Thresholds()).metrics["time_s"]
    assert v.verdict == "unchanged" and "1 process pairs" in v.reason
    # Fresh process pairs that agree, with runs enough for p <= 0.01: the evidence a regression needs.
    head, base = paired([[0.004, 0.004, 0.0041], [0.004] * 5], [[0.020, 0.021, 0.020], [0.020] * 5])
    v = judge_paired(head, base, Thresholds()).metrics["time_s"]
    assert v.verdict == "improved" and v.p_value == pytest.approx(1 / 252)


def test_suspects_are_picked_on_ratios_corrected_for_the_processes_drift():
    from pytest_soap.against import ROUND_BUDGET
    from pytest_soap.suspects import RoundCost, affordable_suspects, process_drift

    def sides(head_times):
        base = {f"t::{i}": Measurement(f"t::{i}", samples=[Sample(0.010, 0.010)]) for i in range(len(head_times))}
        head = {n: Measurement(n, samples=[Sample(t, t)]) for n, t in zip(base, head_times)}
        return head, base

    # The head's process ran 4% slower on every test; one test is 20% slower than that.
    head, base = sides([0.0104] * 19 + [0.0125])
    assert process_drift(head, base, list(head), Thresholds()) == pytest.approx(1.04)
    assert affordable_suspects(head, base, Thresholds(), RoundCost(head, base, pass_s=10.0), ROUND_BUDGET * 10.0) == {"t::19": 3}
    # A change that slows every test by 20% is no drift: every test is past its line.
    head, base = sides([0.012] * 20)
    assert process_drift(head, base, list(head), Thresholds()) == 1.0
    assert len(affordable_suspects(head, base, Thresholds(), RoundCost(head, base, pass_s=10.0), ROUND_BUDGET * 10.0)) == 20
    # Nor is one that slows most tests by 8.5%, past half the line, as sqlparse's real 1.2x did: its test, read at
    # 1.08x by one unlucky first pass, stays a suspect instead of reading 1.0x once corrected.
    head, base = sides([0.01085] * 19 + [0.0108])
    assert process_drift(head, base, list(head), Thresholds()) == 1.0
    assert "t::19" in affordable_suspects(head, base, Thresholds(), RoundCost(head, base, pass_s=10.0), ROUND_BUDGET * 10.0,
                                          runs=2, start_ups=False)
    # Too few tests to tell the processes from the code: no correction.
    head, base = sides([0.0104] * 5)
    assert process_drift(head, base, list(head), Thresholds()) == 1.0


def test_a_second_round_only_for_a_test_still_past_its_line_and_undecided():
    from pytest_soap.compare import paired_undecided

    # The first pass read 7% slower; the round put it back inside the line: settled, no second round.
    head, base = paired([[0.0214], [0.0201, 0.0200, 0.0202]], [[0.020], [0.0200, 0.0201, 0.0199]])
    assert not paired_undecided(head, base, Thresholds(), rounds=1, max_rounds=2)
    # 30% slower in the round, but from too few runs to be significant: one more round.
    head, base = paired([[0.026], [0.026, 0.027]], [[0.020], [0.020, 0.021]])
    assert paired_undecided(head, base, Thresholds(), rounds=1, max_rounds=2)
    # ...unless the rounds are spent.
    assert not paired_undecided(head, base, Thresholds(), rounds=2, max_rounds=2)
    # Time regressed (p = 1/252); peak memory is past its line, but the test's verdict is already made.
    head, base = paired([[0.030], [0.030] * 5], [[0.020], [0.020] * 5])
    head.samples = [Sample(s.time_s, s.cpu_s, peak_mb=30.0 + i % 2 * 10) for i, s in enumerate(head.samples)]
    base.samples = [Sample(s.time_s, s.cpu_s, peak_mb=20.0 + i % 2 * 10) for i, s in enumerate(base.samples)]
    assert judge_paired(head, base, Thresholds()).metrics["time_s"].verdict == "regressed"
    assert judge_paired(head, base, Thresholds()).metrics["peak_mb"].verdict != "regressed"
    assert not paired_undecided(head, base, Thresholds(), rounds=1, max_rounds=2)


def test_under_xdist_both_sides_run_distributed(project):
    pytest.importorskip("xdist")
    write(project.path / "pkg" / "work.py", WORK.format(slow=10, mem_mb=10))
    commit(project.repo, "slower")
    result = project.runpytest("-n", "2", "--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert report(project)["regressions"] == ["tests/test_work.py::test_slowed"]
    assert no_worktree_left(project)


def test_ctrl_c_while_the_ref_is_measured_removes_the_worktree(project, tmp_path):
    import os
    import signal
    import subprocess
    import time

    started = tmp_path / "ref-side-started"
    write(project.path / "tests" / "test_wait.py", f"""
        import pathlib, time
        def test_wait():
            if "soap-ref-" in __file__:   # only on the ref's side, in its worktree
                pathlib.Path({str(started)!r}).write_text(__file__)
                time.sleep(60)
    """)
    commit(project.repo, "a test that waits on the ref's side")
    # SIGINT as a terminal's process has it: a suite run as a background job inherits it ignored, and then
    # Ctrl-C reaches nothing (two fresh-clone runs started with `&` timed out here that way).
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--soap", "--soap-against", "HEAD", "-p", "no:cacheprovider"],
                            cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), "the ref's side never started"
        worktree_file = __import__("pathlib").Path(started.read_text())
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert no_worktree_left(project)
    assert not worktree_file.exists() and not worktree_file.parents[2].exists()  # .../soap-ref-*/tree/tests/


def test_tests_near_the_line_get_runs_only_within_their_budget_start_ups_included():
    from pytest_soap.suspects import RoundCost, affordable_suspects

    def m(nodeid, t):
        return Measurement(nodeid, samples=[Sample(t, t)])

    base = {"t::long": m("t::long", 1.00), "t::short": m("t::short", 0.010), "t::far": m("t::far", 0.010),
            "t::same": m("t::same", 0.100), "t::faster": m("t::faster", 0.010), "t::much_faster": m("t::much_faster", 0.010)}
    head = {"t::long": m("t::long", 1.07), "t::short": m("t::short", 0.0107), "t::far": m("t::far", 0.020),
            "t::same": m("t::same", 0.100), "t::faster": m("t::faster", 0.0093), "t::much_faster": m("t::much_faster", 0.005)}
    # The base pass took 1.2 s, its tests 1.14 s: a round's two processes start up in 0.06 s each. Past
    # the whole line: always. 7% off, short: affordable within 0.5 s. 7% off, 1 s long: three runs a side
    # would cost 6 s. Unchanged: never. 7% faster: inside the line, and the gate needs no improvement
    # confirmed. Twice as fast: past the line the other way, affordable.
    # Twice the threshold away, two process pairs can decide: five runs a side in the first round. Nearer,
    # it takes a third pair anyway: three runs now, three more in the second round.
    cost = RoundCost(head, base, pass_s=1.2)
    assert affordable_suspects(head, base, Thresholds(), cost, 0.5) == {"t::far": 5, "t::short": 3, "t::much_faster": 5}
    # Rechecks: as many runs each as asked, and no process to start.
    assert affordable_suspects(head, base, Thresholds(), cost, 0.5, runs=2, start_ups=False) == {
        "t::far": 2, "t::short": 2, "t::much_faster": 2}
    # A test 3% slower, under half the line, is a suspect for the rechecks' quarter of it (RECHECK_MARGIN):
    # a real regression's one unlucky pair gets a second look.
    base["t::near"], head["t::near"] = m("t::near", 0.010), m("t::near", 0.0103)
    assert "t::near" not in affordable_suspects(head, base, Thresholds(), cost, 0.5, runs=2, start_ups=False)
    assert affordable_suspects(head, base, Thresholds(), cost, 0.5, runs=2, start_ups=False, margin=RECHECK_MARGIN) == {
        "t::far": 2, "t::short": 2, "t::much_faster": 2, "t::near": 2}
    del head["t::near"], base["t::near"]
    # With nothing past the line, the round's start-ups count: in a project that takes 2 s to start, they
    # alone spend the budget. With a test past the line, the round happens anyway and the short one joins it.
    del head["t::far"], base["t::far"], head["t::much_faster"], base["t::much_faster"]
    assert affordable_suspects(head, base, Thresholds(), RoundCost(head, base, pass_s=3.0), 0.5) == {}
    assert affordable_suspects(head, base, Thresholds(), RoundCost(head, base, pass_s=1.2), 0.5) == {"t::short": 3}


def test_a_warm_side_runs_tests_again_when_asked_and_one_that_dies_is_one_clear_line(project, tmp_path):
    from pytest_soap.sides import Side

    write(project.path / "tests" / "test_dies.py", """
        import os, pathlib
        def test_dies_when_run_again():
            marker = pathlib.Path(__file__).with_name("ran")
            if marker.exists():
                os._exit(3)
            marker.write_text("once")

        def test_gets_fresh_function_fixtures(tmp_path):
            assert not list(tmp_path.iterdir())
            (tmp_path / "used").write_text("")
    """)
    run = Side.head(project.path, project.path).start([], tmp_path, warm=True)
    try:
        first, problem = run.finish()
        assert problem is None and len(first) == 5 and all(len(m.samples) == 1 for m in first.values())
        # Asked for more runs of two tests: those runs, each with its function fixtures set up afresh,
        # and nothing of the others.
        again, problem = run.rerun({"tests/test_work.py::test_steady": 2, "tests/test_dies.py::test_gets_fresh_function_fixtures": 3})
        assert problem is None and sorted(again) == ["tests/test_dies.py::test_gets_fresh_function_fixtures",
                                                     "tests/test_work.py::test_steady"]
        assert [(len(m.samples), m.outcome) for m in again.values()] == [(2, "passed"), (3, "passed")]
        assert run.proc.poll() is None
        # A test that ends its process: no answer, and what pytest said instead.
        again, problem = run.rerun({"tests/test_dies.py::test_dies_when_run_again": 1})
        assert again == {} and problem.startswith("pytest exited 3"), problem
    finally:
        run.close()
    assert run.proc.returncode is not None


def test_a_recheck_asked_of_a_warm_side_already_closed_says_why_instead_of_crashing(tmp_path):
    from pytest_soap.sides import SideRun

    (tmp_path / "base-1.out").write_text("E   RuntimeError: its session broke\n")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run = SideRun(proc, tmp_path / "base-1.json", 0.0)  # no pipes, as close() leaves a warm side
    assert run.rerun({"t.py::test": 2}) == ({}, "pytest exited 0: RuntimeError: its session broke")


def shared_noise_rounds(effect: float, seed: int, rounds: int = 2, runs: int = 7):
    """Synthetic duet runs: each pair of runs shares the machine's moment (a factor from 0.7 to 1.6, a busy
    neighbour coming and going), plus 1% of its own; the head is `effect` times the base."""
    rng = random.Random(seed)
    head, base = [], []
    for size in [1] + [runs] * rounds:
        moments = [rng.uniform(0.7, 1.6) for _ in range(size)]
        base.append([0.020 * m * rng.gauss(1, 0.01) for m in moments])
        head.append([0.020 * effect * m * rng.gauss(1, 0.01) for m in moments])
    return head, base


def test_in_a_duet_shared_noise_cancels_in_the_pairs_and_a_regression_stands_out():
    """The same runs, judged as a duet (paired) and as sequential sides (unpaired): noise that hits both runs
    of a pair hides a 1.15x regression from Mann-Whitney U and not from the paired test."""
    caught = {True: 0, False: 0}
    for seed in range(20):
        head, base = paired(*shared_noise_rounds(1.15, seed))
        for duet in (True, False):
            caught[duet] += judge_paired(head, base, Thresholds(), duet).verdict == "regressed"
    assert caught[True] == 20 and caught[False] <= 2, caught
    head, base = paired(*shared_noise_rounds(1.15, 0))
    v = judge_paired(head, base, Thresholds(), duet=True).metrics["time_s"]
    assert v.test == "Wilcoxon signed-rank" and v.p_value == pytest.approx(2**-14)  # all 14 pairs slower
    assert 1.13 < v.ratio < 1.17 and 1.12 < v.interval[0] <= v.interval[1] < 1.18


def test_in_a_duet_shared_noise_is_no_regression():
    for seed in range(50):
        head, base = paired(*shared_noise_rounds(1.0, seed))
        assert judge_paired(head, base, Thresholds(), duet=True).verdict in ("unchanged", "improved"), seed


def test_runs_that_do_not_pair_up_are_judged_unpaired():
    head, base = paired([[0.030], [0.030] * 5, [0.030] * 5], [[0.020], [0.020] * 5, [0.020] * 4])
    assert judge_paired(head, base, Thresholds(), duet=True).metrics["time_s"].test == "Mann-Whitney U"


def test_a_suspect_the_rounds_could_not_settle_is_unconfirmed_and_fails_only_with_strict(project):
    """A 15% slowdown (sleeps, so the load cannot move it) needs a third process pair; with the rounds cut
    to one by the project's conftest (for pending ones too), the rounds end first."""
    write(project.path / "tests" / "test_near.py", """
        import time
        def test_near():
            time.sleep(0.1)
    """)
    write(project.path / "conftest.py", "import pytest_soap.against as a\na.MAX_ROUNDS = a.MAX_PENDING_ROUNDS = 1\n")
    commit(project.repo, "a test near the line")
    write(project.path / "tests" / "test_near.py", (project.path / "tests" / "test_near.py").read_text()
          .replace("0.1)", "0.115)"))
    commit(project.repo, "15% slower")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", "report.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["unconfirmed: past the line, but the rounds ran out*(1):",
                                 "  tests/test_near.py::test_near", "*time*1.1?×*p=*process pairs*", "*1 unconfirmed*"])
    assert report(project)["unconfirmed"] == ["tests/test_near.py::test_near"] and report(project)["regressions"] == []
    strict = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["pytest-soap: 1 test unconfirmed (--soap-strict): tests/test_near.py::test_near (time 1.1?×)"])

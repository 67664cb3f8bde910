"""`--soap-sides`: in a duet the ref's process runs each test at the same moment as the head's session.

Real git repositories and real pytest sessions. Each side's tests log when their calls ran; the tests here
judge by overlap of 150 ms calls (duet: they overlap; sequential: they never do), far beyond any noise."""

import json
from pathlib import Path

import pytest

from projects import commit, git_project, write  # tests/projects.py

WORK = """
    import time

    def nap():
        time.sleep(0.15)
"""

# Each test's call appends "side nodeid start end" to a log outside both trees.
TESTS = """
    import os, pathlib, time
    import pytest
    from pkg import work

    LOG = pathlib.Path({log!r})
    SIDE = "ref" if "soap-ref-" in __file__ else "head"

    def timed(name):
        start = time.time()
        work.nap()
        with LOG.open("a") as log:
            log.write(f"{{SIDE}} {{name}} {{start}} {{time.time()}} {{os.getpid()}}\\n")

    @pytest.fixture(scope="module")
    def shared():
        with LOG.with_suffix(".setups").open("a") as log:
            log.write(SIDE + "\\n")

    def test_one(shared):
        timed("one")

    def test_two(shared):
        timed("two")

    def test_three(shared):
        timed("three")
"""


@pytest.fixture
def project(pytester, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "calls.log"
    root = pytester.path
    (root / ".gitignore").write_text("report.json\n")
    pytester.repo = git_project(root, WORK, TESTS.format(log=str(log)))
    pytester.log = log
    return pytester


def first_calls(log: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """Each side's first call of each test: (start, end)."""
    calls: dict[tuple[str, str], tuple[float, float]] = {}
    for line in log.read_text().splitlines():
        side, name, start, end, _ = line.split()
        calls.setdefault((side, name), (float(start), float(end)))
    return calls


def all_calls(log: Path) -> dict[str, list[tuple[float, float, str]]]:
    """Every call of each side: (start, end, process id)."""
    calls: dict[str, list[tuple[float, float, str]]] = {"head": [], "ref": []}
    for line in log.read_text().splitlines():
        side, _, start, end, pid = line.split()
        calls[side].append((float(start), float(end), pid))
    return calls


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


@pytest.mark.parametrize("sides", ["duet", "sequential"])
def test_in_a_duet_each_test_runs_on_both_sides_at_once_and_only_then(project, sides):
    result = project.runpytest("--soap", "--soap-against", "HEAD", f"--soap-sides={sides}", "--soap-json", "report.json")
    assert result.ret == 0, result.stdout.str()
    calls = first_calls(project.log)
    for name in ("one", "two", "three"):
        shared = overlap(calls["head", name], calls["ref", name])
        if sides == "duet":
            assert shared > 0.1, (name, calls)  # of a 150 ms call: they ran together
        else:
            assert shared == 0.0, (name, calls)
    report = json.loads((project.path / "report.json").read_text())
    assert report["against"]["sides"] == sides
    result.stdout.fnmatch_lines([f"*sides: {sides}*"])
    # The ref's process keeps the module's fixture from one test to the next, as pytest's own loop does.
    setups = (project.log.with_suffix(".setups")).read_text().split()
    assert setups.count("ref") == setups.count("head") == 1


@pytest.mark.parametrize("sides", ["duet", "sequential"])
def test_a_planted_regression_is_caught_in_either_mode(project, sides):
    write(project.path / "pkg" / "work.py", WORK.replace("0.15", "0.6"))
    commit(project.repo, "slower")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1", f"--soap-sides={sides}", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    report = json.loads((project.path / "report.json").read_text())
    assert len(report["regressions"]) == 3
    assert all(3 < t["metrics"]["time_s"]["ratio"] < 5 for t in report["tests"])
    # The rounds ran in fresh processes; in a duet each of their calls on the ref ran inside one of the head's.
    # (The first pass's processes also profile the regressed tests for attribution, each on its own.)
    calls = all_calls(project.log)
    first_pass = calls["ref"][0][2]
    rounds = [call for call in calls["ref"] if call[2] != first_pass]
    assert report["against"]["rounds"] >= 1 and len(rounds) >= 3
    for ref_call in rounds:
        shared = max(overlap(ref_call[:2], head_call[:2]) for head_call in calls["head"])
        assert shared > 0.1 if sides == "duet" else shared == 0.0, (ref_call, calls)


def test_a_ref_that_dies_in_a_duet_is_one_line_and_the_head_finishes(project):
    write(project.path / "tests" / "test_dies.py", """
        import os
        def test_dies():
            if "soap-ref-" in __file__:
                os._exit(3)
    """)
    commit(project.repo, "a test that kills the ref's process")
    result = project.runpytest("--soap", "--soap-against", "HEAD", "--soap-sides=duet")
    result.stdout.fnmatch_lines(["not compared: the tests at HEAD did not run (pytest exited 3*)"])
    result.assert_outcomes(passed=4)


def test_a_test_whose_setup_fails_on_one_side_does_not_stall_the_duet(project):
    write(project.path / "tests" / "test_setup.py", """
        import pytest
        @pytest.fixture
        def only_on_ref():
            if "soap-ref-" not in __file__:
                raise RuntimeError("no fixture here")
        def test_head_setup_fails(only_on_ref):
            pass
        @pytest.fixture
        def only_on_head():
            if "soap-ref-" in __file__:
                raise RuntimeError("no fixture there")
        def test_ref_setup_fails(only_on_head):
            pass
    """)
    commit(project.repo, "fixtures that fail on one side")
    result = project.runpytest("--soap", "--soap-against", "HEAD", "--soap-sides=duet", "--soap-json", "report.json")
    result.assert_outcomes(passed=4, errors=1)
    verdicts = {t["nodeid"].split("::")[-1]: t["verdict"]
                for t in json.loads((project.path / "report.json").read_text())["tests"]}
    assert verdicts["test_head_setup_fails"] == "error"
    assert verdicts["test_ref_setup_fails"] == "error on ref"
    assert {verdicts[n] for n in ("test_one", "test_two", "test_three")} <= {"unchanged", "improved"}


def test_a_duet_runs_the_selection_the_user_asked_for(project):
    """-k chooses the tests on both sides: the ref's process must not run the others as "removed"."""
    result = project.runpytest("--soap", "--soap-against", "HEAD", "--soap-sides=duet", "-k", "one or two",
                               "--soap-json", "report.json")
    assert result.ret == 0, result.stdout.str()
    tests = json.loads((project.path / "report.json").read_text())["tests"]
    assert sorted(t["nodeid"].split("::")[-1] for t in tests) == ["test_one", "test_two"]
    assert "three" not in project.log.read_text()

"""Every --soap-* option does what it says however it is written: with a space or '=', with or without --soap."""

import json
import subprocess
import sys

import git
import pytest

from pytest_soap.config import OPTIONS
from pytest_soap.report.markdown import render

from projects import INI, commit, package_project, write  # tests/projects.py

WORK = """
    import time

    def slowed():
        time.sleep(0.002 * {slow})
"""

TESTS = """
    from pkg import work

    def test_slowed():
        work.slowed()

    def test_other():
        assert sum(range(1000)) == 499500
"""


@pytest.fixture
def project(pytester):
    """A package imported through the ini file's pythonpath, so a lost ini file cannot go unnoticed."""
    package_project(pytester.path, WORK.format(slow=1), TESTS)
    return pytester


@pytest.fixture
def elsewhere(project):
    """A folder outside the project with no ini file above it: pytest would root the session there."""
    folder = project.path.parent / f"{project.path.name}-shared"
    folder.mkdir()
    return folder


def slow_down(project, factor=30):
    write(project.path / "pkg" / "work.py", WORK.format(slow=factor))


def node_ids(baseline):
    return sorted(json.loads(baseline.read_text())["tests"])


def test_a_baseline_path_written_with_a_space_keeps_the_rootdir_and_the_ini_file(project, elsewhere):
    baseline = elsewhere / "b.json"
    for _ in range(2):  # the second time the file exists, and pytest would take it for a test path
        result = project.runpytest("--soap", "--soap-save", "--soap-baseline", str(baseline))
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines([f"rootdir: {project.path}"])
    assert node_ids(baseline) == ["tests/test_work.py::test_other", "tests/test_work.py::test_slowed"]

    slow_down(project)
    result = project.runpytest("--soap", "--soap-baseline", str(baseline))
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["pytest-soap: 1 test regressed: tests/test_work.py::test_slowed (time *×)"])


def test_a_report_path_written_with_a_space_keeps_the_rootdir(project, elsewhere):
    report = elsewhere / "report.json"
    report.write_text("{}")
    assert project.runpytest("--soap", "--soap-save").ret == 0
    result = project.runpytest("--soap", "--soap-json", str(report))
    assert result.ret == 0, result.stdout.str()
    data = json.loads(report.read_text())
    assert {t["nodeid"] for t in data["tests"]} == {"tests/test_work.py::test_other", "tests/test_work.py::test_slowed"}
    assert {t["verdict"] for t in data["tests"]} <= {"unchanged", "improved", "ungated"}


def test_with_soap_against_a_path_written_with_a_space_keeps_the_rootdir(project, elsewhere):
    repo = git.Repo.init(project.path)
    commit(repo, "base")
    slow_down(project)
    commit(repo, "slower")
    report = elsewhere / "report.json"
    report.write_text("{}")
    result = project.runpytest("--soap", "--soap-against", "HEAD~1", "--soap-json", str(report))
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert json.loads(report.read_text())["regressions"] == ["tests/test_work.py::test_slowed"]


def move_the_tests(project):
    """Every node id changes."""
    (project.path / "tests").rename(project.path / "checks")
    write(project.path / "pyproject.toml", INI.replace('"tests"', '"checks"'))


def test_a_baseline_that_names_none_of_the_run_s_tests_fails_loudly(project):
    assert project.runpytest("--soap", "--soap-save").ret == 0
    move_the_tests(project)
    result = project.runpytest("--soap", "--soap-json", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    line = next(line for line in result.stdout.lines if line.startswith("pytest-soap: only"))
    assert line.startswith("pytest-soap: only 0 of this run's 2 tests are in the baseline .soap/baseline.json "
                           "(2 tests), so they were not compared")
    assert "'checks/test_work.py::test_" in line and "'tests/test_work.py::test_" in line
    assert line.endswith("or re-save the baseline with --soap-save")
    # The report says so too, for the action's summary and comment: not "no performance regression".
    data = json.loads((project.path / "report.json").read_text())
    assert data["mismatch"] == line and data["regressions"] == []
    assert "\n:x: **not compared**: only 0 of this run's 2 tests" in render(data)


def test_with_soap_against_a_ref_whose_tests_all_moved_fails_loudly(project):
    commit(git.Repo.init(project.path), "base")
    move_the_tests(project)
    result = project.runpytest("--soap", "--soap-against", "HEAD")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["pytest-soap: only 0 of this run's 2 tests are in the run of HEAD (2 tests), so they "
                                 "were not compared: *; if the tests moved, there is nothing on HEAD to compare them with"])


def test_a_subset_of_the_baseline_s_tests_is_an_ordinary_run(project):
    write(project.path / "tests" / "test_more.py", "def test_a(): pass\ndef test_b(): pass\ndef test_c(): pass\n")
    assert project.runpytest("--soap", "--soap-save").ret == 0
    result = project.runpytest("--soap", "tests/test_work.py")  # 2 of the baseline's 5
    assert result.ret == 0, result.stdout.str()
    assert "pytest-soap: only" not in result.stdout.str()


# A value for each option that takes one; each must switch the gate on by itself.
VALUES = {"--soap-baseline": ".soap/other.json", "--soap-threshold": "25", "--soap-memory-threshold": "25",
          "--soap-json": "report.json", "--soap-memory": "off", "--soap-min-time": "1", "--soap-min-memory": "1",
          "--soap-rounds": "5", "--soap-slowest": "3", "--soap-model": "some-model", "--soap-iterations": "1",
          "--soap-sides": "sequential", "--soap-provider": "openai", "--soap-base-url": "http://127.0.0.1:9/v1",
          "--soap-prior": "prior.json"}  # read with --soap-optimize only


@pytest.mark.parametrize("flag", [opt.flag for opt in OPTIONS[1:] if opt.flag != "--soap-against"])
def test_every_option_implies_soap(project, flag, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    args = [flag] + ([VALUES[flag]] if flag in VALUES else [])
    result = project.runpytest(*args)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*2 tests: *"])  # the gate's summary line: the tests were measured
    if flag == "--soap-save":
        assert node_ids(project.path / ".soap" / "baseline.json") == ["tests/test_work.py::test_other",
                                                                    "tests/test_work.py::test_slowed"]
    if flag == "--soap-json":
        assert len(json.loads((project.path / "report.json").read_text())["tests"]) == 2


def test_soap_against_alone_runs_the_gate(project):
    commit(git.Repo.init(project.path), "base")
    slow_down(project)
    result = project.runpytest("--soap-against", "HEAD")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["pytest-soap: 1 test regressed: tests/test_work.py::test_slowed (time *×)"])


def test_ini_keys_alone_do_not_switch_the_gate_on(project):
    write(project.path / "pyproject.toml", INI + 'soap_threshold = "25"\nsoap_json = "report.json"\n')
    result = project.runpytest()
    assert result.ret == 0
    assert "pytest-soap" not in result.stdout.str() and not (project.path / "report.json").exists()


def test_the_ini_file_s_addopts_still_apply_when_a_path_is_written_with_a_space(project, elsewhere):
    write(project.path / "pyproject.toml", INI + 'addopts = "-k slowed"\n')
    baseline = elsewhere / "b.json"
    for _ in range(2):
        result = project.runpytest("--soap", "--soap-save", "--soap-baseline", str(baseline))
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines(["*1 passed, 1 deselected*"])
    assert node_ids(baseline) == ["tests/test_work.py::test_slowed"]


def test_when_a_wrong_ini_file_s_addopts_already_applied_it_stops_in_one_line(pytester):
    # The baseline's folder lies under another ini file with addopts: pytest has applied those before any plugin
    # loads, and they cannot be taken back, so the run stops and says how to write the option instead.
    write(pytester.path / "pytest.ini", "[pytest]\naddopts = -p no:doctest\n")
    package_project(pytester.path / "proj", WORK.format(slow=1), TESTS)
    (pytester.path / "shared").mkdir()
    (pytester.path / "shared" / "b.json").write_text("{}")
    run = subprocess.run([sys.executable, "-m", "pytest", "--soap", "--soap-baseline", "../shared/b.json"],
                         cwd=pytester.path / "proj", capture_output=True, text=True)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
    assert errors[0].endswith("write the option with '=', e.g. --soap-baseline=PATH")

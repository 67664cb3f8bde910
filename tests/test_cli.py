"""The `soap` command's own contract: a closed pipe, `merge -o`, `--version`, and a bad `optimize` target,
each fed to the real command line."""

import importlib.metadata
import json
import os
import subprocess
import sys

import git
import pytest

import pytest_soap
from pytest_soap import cli
from pytest_soap.report.markdown import render
from pytest_soap.soap.candidate import CandidateError, function_source
from pytest_soap.soap.loopback import MessagesServer


def soap(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_soap.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


def one_line(run: subprocess.CompletedProcess, command: str) -> str:
    """The single line on standard error, which names the command; nothing on standard output."""
    assert run.stdout == "" and "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"soap {command}: "), run.stderr
    return lines[0]


def a_report(names: list[str], nodeid_length: int = 40) -> dict:
    """A minimal valid JSON report (the keys merge.load_report checks, and what the Markdown shows) whose
    tests all regressed in time."""
    tests = [{"nodeid": f"tests/test_x.py::test_{name}".ljust(nodeid_length, "x"), "outcome": "passed",
              "time_s": 0.02, "cpu_s": 0.02, "peak_mb": 1.0, "tmu_mbs": 0.01,
              "baseline": {"time_s": 0.01, "cpu_s": 0.01, "peak_mb": 1.0, "tmu_mbs": 0.01},
              "verdict": "regressed", "regressed_metrics": ["time_s"],
              "metrics": {"time_s": {"verdict": "regressed", "ratio": 2.0}}} for name in names]
    return {"schema": 1, "tests": tests, "regressions": [t["nodeid"] for t in tests], "functions": [],
            "optimizations": [], "patch": None}


# a. A closed pipe ends quietly.

@pytest.fixture
def big_report(tmp_path):
    """A report whose Markdown is far bigger than a pipe's buffer (64 KiB) and many lines long."""
    report = a_report([str(i) for i in range(50)], nodeid_length=10_000)
    text = render(report)
    assert len(text.encode()) > 4 * 65536 and len(text.splitlines()) > 50
    path = tmp_path / "big.json"
    path.write_text(json.dumps(report))
    return path


def test_soap_report_into_a_pipe_closed_after_one_line_ends_quietly(big_report):
    # `soap report big.json | head -1`, with soap's own exit status in view.
    proc = subprocess.Popen([sys.executable, "-m", "pytest_soap.cli", "report", str(big_report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"<!-- pytest-soap -->\n"
    proc.stdout.close()  # soap is still writing: the rest cannot fit in the pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0 and stderr == ""


def test_soap_report_to_a_reader_gone_before_it_writes_ends_quietly(tmp_path):
    # `soap report small.json | true`: the text fits Python's buffer, so the broken pipe shows only when it
    # is flushed, which must not be at the interpreter's exit ("Exception ignored ...").
    small = tmp_path / "small.json"
    small.write_text(json.dumps(a_report(["a"])))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        run = subprocess.run([sys.executable, "-m", "pytest_soap.cli", "report", str(small)], stdout=write_end,
                             stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert run.returncode == 0 and run.stderr == ""


def test_another_broken_pipe_is_not_taken_for_a_closed_stdout(monkeypatch, capsys):
    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a subprocess that went away

    monkeypatch.setattr(cli, "report_command", broken)
    with pytest.raises(BrokenPipeError):
        cli.main(["report", "r.json"])


def test_soap_report_names_itself_for_a_bad_file(tmp_path):
    assert "missing.json: no such file" in one_line(soap("report", str(tmp_path / "missing.json")), "report")


# b. soap merge -o OUT SHARD...

@pytest.fixture
def shards(tmp_path):
    paths = [tmp_path / "s1.json", tmp_path / "s2.json"]
    for path, names in zip(paths, (["a", "b"], ["c"])):
        path.write_text(json.dumps(a_report(names)))
    return paths


def test_soap_merge_without_an_output_is_refused_and_no_shard_is_touched(shards):
    before = [p.read_bytes() for p in shards]
    run = soap("merge", *map(str, shards))  # the old form: it overwrote s1.json
    assert run.returncode == 2
    assert one_line(run, "merge").startswith("soap merge: the following arguments are required: -o/--output")
    assert [p.read_bytes() for p in shards] == before


@pytest.mark.parametrize("args", [[], ["bogus"], ["report"], ["optimize", "a.py::f", "--iterations", "many"]])
def test_a_command_line_argparse_refuses_is_one_line_and_exit_2(args):
    run = soap(*args)
    assert run.returncode == 2 and run.stdout == "" and len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith("soap") and "--help)" in run.stderr


def test_soap_merge_refuses_an_output_that_is_one_of_its_shards(shards, tmp_path):
    before = [p.read_bytes() for p in shards]
    (tmp_path / "sub").mkdir()
    for output in ("s1.json", "sub/../s2.json"):
        run = soap("merge", "-o", output, "s1.json", "s2.json", cwd=tmp_path)
        assert run.returncode == 2
        assert one_line(run, "merge") == (f"soap merge: {output} is both the output and one of the reports to merge: "
                                          "it would be overwritten")
    assert [p.read_bytes() for p in shards] == before


def test_soap_merge_writes_the_output_it_is_given(shards, tmp_path):
    run = soap("merge", "--output", "merged.json", "s1.json", "s2.json", cwd=tmp_path)
    assert run.returncode == 0 and run.stderr == ""
    assert run.stdout == "soap merge: 2 reports, 3 tests, 3 regressed: merged.json\n"
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert [t["nodeid"][:20] for t in merged["tests"]] == [f"tests/test_x.py::test_{n}"[:20] for n in "abc"]
    assert merged["shards"] == 2


def test_soap_merge_names_itself_when_the_output_cannot_be_written(shards, tmp_path):
    (tmp_path / "dir.json").mkdir()
    line = one_line(soap("merge", "-o", "dir.json", "s1.json", "s2.json", cwd=tmp_path), "merge")
    assert line.startswith("soap merge: cannot write dir.json: ")


# c. soap --version

def test_soap_version_names_the_program_and_the_installed_version():
    run = soap("--version")
    assert run.returncode == 0 and run.stderr == ""
    assert run.stdout == f"soap (pytest-soap) {importlib.metadata.version('pytest-soap')}\n"


def test_the_version_falls_back_to_the_package_when_not_installed(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert cli.version() == pytest_soap.__version__


# d. soap optimize: the target is checked first, from the source alone

MODULE = '''\
import functools


def top(x):
    def inner(y):
        return y * 2
    return inner(x)


class Cart:
    class Line:
        def cost(self):
            return 1

    def total(self):
        return 1

    @property
    def size(self):
        return 0

    @functools.cached_property
    def cached(self):
        return 0

    @staticmethod
    def make():
        return Cart()


async def fetch():
    return 1


if True:
    def hidden():
        return 1
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text(MODULE)
    (tmp_path / "pkg" / "broken.py").write_text("def f(:\n    pass\n")
    git.Repo.init(tmp_path)
    return tmp_path


BAD_TARGETS = [
    ("pkg/mod.py::nosuch", "pkg/mod.py defines no nosuch"),
    ("pkg/mod.py::Cart.nosuch", "pkg/mod.py defines no Cart.nosuch"),
    ("pkg/mod.py::total", "pkg/mod.py defines no total (did you mean Cart.total?)"),
    ("pkg/mod.py::hidden", "pkg/mod.py defines no hidden where soap optimize can reach it (a hidden inside a "
                           "function or an if, try or with block)"),
    ("pkg/mod.py::top.inner", "pkg/mod.py::top.inner is nested in the function top; soap optimize revises whole "
                              "top-level functions and methods: name pkg/mod.py::top"),
    ("pkg/mod.py::Cart.Line.cost", "pkg/mod.py::Cart.Line.cost is a method of the nested class Cart.Line; soap "
                                   "optimize revises a top-level function or a method of a top-level class"),
    ("pkg/mod.py::Cart", "pkg/mod.py::Cart is a class; name one of its methods, e.g. Cart.total"),
    ("pkg/broken.py::f", "pkg/broken.py does not parse: line 1: invalid syntax"),
    ("pkg/nowhere.py::f", "'pkg/nowhere.py::f' is not PATH::QUALNAME: there is no file pkg/nowhere.py"),
    ("pkg/mod.py", "'pkg/mod.py' is not PATH::QUALNAME (e.g. pkg/calc.py::Cart.total)"),
    ("pkg/mod.py::top.<locals>.inner", "'pkg/mod.py::top.<locals>.inner' is not PATH::QUALNAME (e.g. "
                                       "pkg/calc.py::Cart.total)"),
]


@pytest.mark.parametrize("target, message", BAD_TARGETS)
def test_a_bad_optimize_target_is_one_line_and_exit_2_before_the_key(project, monkeypatch, capsys, target, message):
    monkeypatch.chdir(project)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # the key is checked after the target
    assert cli.main(["optimize", target]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"soap optimize: {message}\n"


def test_a_bad_optimize_target_with_a_key_asks_no_model(project):
    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-test"}
    with MessagesServer([]) as server:
        env["ANTHROPIC_BASE_URL"] = server.url
        run = soap("optimize", "pkg/mod.py::nosuch", cwd=project, env=env)
    assert run.returncode == 2 and one_line(run, "optimize") == "soap optimize: pkg/mod.py defines no nosuch"
    assert server.requests == []


def test_a_file_outside_the_repository_is_a_bad_target(project, tmp_path_factory, monkeypatch, capsys):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "mod.py"
    elsewhere.write_text(MODULE)
    monkeypatch.chdir(project)
    assert cli.main(["optimize", f"{elsewhere}::top"]) == 2
    assert capsys.readouterr().err == f"soap optimize: '{elsewhere}::top' is not PATH::QUALNAME: {elsewhere} is " \
                                      f"outside the repository {project.resolve()}\n"


@pytest.mark.parametrize("qualname", ["top", "Cart.total", "Cart.make", "fetch", "Cart.size", "Cart.cached"])
def test_the_check_accepts_what_the_loop_revises(project, qualname):
    assert cli.check_target(f"{project}/pkg/mod.py::{qualname}", project) == ("pkg/mod.py", qualname)
    assert function_source(MODULE, qualname)  # the loop's own locator finds it


@pytest.mark.parametrize("qualname", ["top.inner", "Cart.Line.cost", "hidden"])
def test_what_the_check_refuses_the_loop_could_not_revise(qualname):
    with pytest.raises(CandidateError):
        function_source(MODULE, qualname)


def test_without_a_key_a_good_target_still_says_the_key_is_missing(project):
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")}
    run = soap("optimize", "pkg/mod.py::Cart.total", cwd=project, env=env)
    assert run.returncode == 1 and one_line(run, "optimize").startswith(
        "soap optimize: optimisation skipped: ANTHROPIC_API_KEY is not set")


"""The sandbox candidates run in, and the differential check (record the original's calls, replay them
into a candidate). Real git repositories, real pytest processes."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import git
import pytest

from pytest_soap.soap.record import MAX_CALLS
from pytest_soap.soap.replay import same
from pytest_soap.soap.sandbox import (
    MIN_MEMORY_MB, RunResult, Sandbox, SandboxError, race_calls, record_calls, replay_calls, run_pytest, scrubbed_env,
    timeout_for,
)

LIMIT_S = 120.0  # generous: these runs take a second; only the timeout test wants a short one
PKG = {"pkg/__init__.py": "", "pkg/calc.py": "def total(xs):\n    return sum(xs)\n"}


def make_repo(root: Path, files: dict[str, str]) -> git.Repo:
    repo = git.Repo.init(root)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "test@example.com")
    write(root, files)
    repo.git.add("-A")
    repo.git.commit("-m", "initial")
    return repo


def write(root: Path, files: dict[str, str]) -> None:
    for relpath, text in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(text)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}


def worktrees(repo: git.Repo) -> list[str]:
    return [line for line in repo.git.worktree("list", "--porcelain").splitlines() if line.startswith("worktree ")]


# --- the sandbox ----------------------------------------------------------------------------------------------


def test_the_sandbox_sees_the_tree_as_it_is_and_leaves_it_untouched(tmp_path):
    repo = make_repo(tmp_path, {"pkg/__init__.py": "", "pkg/calc.py": "X = 1\n", "kept.py": "K = 1\n",
                                "gone.py": "G = 1\n", "staged.py": "S = 1\n", ".gitignore": "*.log\n"})
    write(tmp_path, {"pkg/calc.py": "X = 2\n", "staged.py": "S = 2\n", "new.py": "N = 1\n", "sub/new2.py": "N = 2\n",
                     "debug.log": "ignored\n"})
    repo.git.add("staged.py")
    (tmp_path / "gone.py").unlink()
    status, head = repo.git.status("--porcelain"), repo.head.commit.hexsha
    index, files = (tmp_path / ".git" / "index").read_bytes(), snapshot(tmp_path)

    with Sandbox(tmp_path) as sandbox:
        assert sandbox.path != tmp_path and sandbox.path.is_dir()
        assert sandbox.read("pkg/calc.py") == "X = 2\n"  # an unstaged edit
        assert sandbox.read("staged.py") == "S = 2\n"  # a staged one
        assert sandbox.read("new.py") == "N = 1\n" and sandbox.read("sub/new2.py") == "N = 2\n"  # untracked
        assert sandbox.read("kept.py") == "K = 1\n"
        assert not (sandbox.path / "gone.py").exists()
        assert not (sandbox.path / "debug.log").exists()
        sandbox.write("pkg/calc.py", "X = 3\n")
        assert (tmp_path / "pkg/calc.py").read_text() == "X = 2\n"
        assert len(worktrees(repo)) == 2
        tree = sandbox.path

    assert not tree.exists() and len(worktrees(repo)) == 1
    assert (tmp_path / ".git" / "index").read_bytes() == index
    assert snapshot(tmp_path) == files
    assert repo.git.status("--porcelain") == status
    assert repo.head.commit.hexsha == head and repo.git.stash("list") == ""


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_worktree_is_removed_when_the_work_inside_is_interrupted(tmp_path, error):
    repo = make_repo(tmp_path, {"a.py": "A = 1\n"})
    with pytest.raises(error):
        with Sandbox(tmp_path) as sandbox:
            tree = sandbox.path
            raise error("stop")
    assert not tree.exists() and not tree.parent.exists()
    assert len(worktrees(repo)) == 1


def test_a_folder_outside_git_or_a_repository_without_commits_is_one_line(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(SandboxError, match="not in one") as plain:
        Sandbox(tmp_path / "plain").__enter__()
    git.Repo.init(tmp_path / "empty")
    with pytest.raises(SandboxError, match="no commit yet") as empty:
        Sandbox(tmp_path / "empty").__enter__()
    assert "\n" not in str(plain.value) + str(empty.value)


def test_files_outside_the_tree_are_refused(tmp_path):
    make_repo(tmp_path, {"a.py": "A = 1\n"})
    with Sandbox(tmp_path) as sandbox:
        with pytest.raises(SandboxError, match="outside the sandbox"):
            sandbox.write("../escaped.py", "E = 1\n")
        assert not (sandbox.path.parent / "escaped.py").exists()


def test_a_sandbox_that_is_not_open_runs_nothing(tmp_path):
    make_repo(tmp_path, {**PKG, "tests/test_calc.py": "def test_total():\n    pass\n"})
    sandbox = Sandbox(tmp_path)
    with pytest.raises(SandboxError, match="not open"):
        run_pytest(sandbox, ["tests"], LIMIT_S, 0)
    with Sandbox(tmp_path) as sandbox:
        pass
    with pytest.raises(SandboxError, match="not open"):
        sandbox.read("tests/test_calc.py")


def test_the_environment_loses_its_secrets_and_puts_the_tree_first(tmp_path):
    (tmp_path / "src").mkdir()
    env = {"ANTHROPIC_API_KEY": "k", "GITHUB_TOKEN": "t", "db_secret": "s", "AWS_SECRET_ACCESS_KEY": "a",
           "KEYBOARD": "kept", "PATH": "/bin", "PYTHONPATH": "/elsewhere"}
    clean = scrubbed_env(env, tmp_path)
    assert set(clean) == {"KEYBOARD", "PATH", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"}
    assert clean["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), str(tmp_path / "src"), "/elsewhere"]
    assert clean["PYTHONDONTWRITEBYTECODE"] == "1"


def test_timeout_floor_and_scale():
    assert timeout_for(0.1) == 10.0
    assert timeout_for(5.0) == 50.0


# --- running tests in it --------------------------------------------------------------------------------------

def test_a_candidate_sees_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("SOAP_TEST_API_KEY", "sk-do-not-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-do-not-leak")
    monkeypatch.setenv("SOAP_TEST_PLAIN", "visible")
    make_repo(tmp_path, {**PKG, "tests/test_env.py": (
        "import os\n"
        "def test_env():\n"
        "    assert 'SOAP_TEST_API_KEY' not in os.environ and 'GITHUB_TOKEN' not in os.environ\n"
        "    assert os.environ['SOAP_TEST_PLAIN'] == 'visible'\n")})
    with Sandbox(tmp_path) as sandbox:
        result = run_pytest(sandbox, ["tests"], LIMIT_S, 0)
    assert (result.status, result.reason) == ("passed", "")
    assert result.outcomes == {"tests/test_env.py::test_env": "passed"}


def test_failing_tests_are_named_with_their_error(tmp_path):
    make_repo(tmp_path, {**PKG, "tests/test_calc.py": (
        "import pytest\n"
        "from pkg.calc import total\n"
        "class TestTotal:\n"
        "    def test_empty(self):\n"
        "        assert total([]) == 0\n"
        "    @pytest.mark.parametrize('xs', [[1, 2], [4]])\n"
        "    def test_some(self, xs):\n"
        "        assert total(xs) == 3\n"
        "def test_skipped():\n"
        "    pytest.skip('later')\n")})
    with Sandbox(tmp_path) as sandbox:
        result = run_pytest(sandbox, ["tests"], LIMIT_S, 0)
    assert result.status == "failed"
    assert result.reason == "tests/test_calc.py::TestTotal::test_some[xs1] failed: assert 4 == 3"
    assert result.outcomes == {"tests/test_calc.py::TestTotal::test_empty": "passed",
                               "tests/test_calc.py::TestTotal::test_some[xs0]": "passed",
                               "tests/test_calc.py::TestTotal::test_some[xs1]": "failed",
                               "tests/test_calc.py::test_skipped": "skipped"}


def test_a_candidate_that_does_not_import_fails_naming_the_file(tmp_path):
    make_repo(tmp_path, {**PKG, "tests/test_calc.py": "from pkg.calc import total\ndef test_total():\n    assert total([1]) == 1\n"})
    with Sandbox(tmp_path) as sandbox:
        sandbox.write("pkg/calc.py", "def total(xs:\n")
        result = run_pytest(sandbox, ["tests"], LIMIT_S, 0)
    assert result.status == "failed"
    assert result.reason.startswith("tests/test_calc.py errored: ") and "SyntaxError" in result.reason


def test_a_selection_without_tests_is_an_error(tmp_path):
    make_repo(tmp_path, {**PKG, "tests/test_calc.py": "def test_total():\n    pass\n"})
    with Sandbox(tmp_path) as sandbox:
        result = run_pytest(sandbox, ["tests", "-k", "nothing_matches"], LIMIT_S, 0)
    assert result.status == "error" and result.reason.startswith("no tests ran")


def test_an_endless_candidate_times_out_and_its_children_die_with_it(tmp_path):
    pid_file = tmp_path.parent / f"{tmp_path.name}-child.pid"
    make_repo(tmp_path, {**PKG, "tests/test_loop.py": (
        "import subprocess, sys\n"
        "def test_loop():\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "    while True:\n"
        "        pass\n")})
    with Sandbox(tmp_path) as sandbox:
        result = run_pytest(sandbox, ["tests"], 3.0, 0)
    assert result.status == "timeout" and result.reason.startswith("timed out after 3.0 s")
    child = int(pid_file.read_text())
    assert_gone(child)


def assert_gone(pid: int) -> None:
    """Killed: gone, or a zombie until whoever inherited it reaps it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state == "Z":
            return
        time.sleep(0.05)
    pytest.fail(f"process {pid} outlived the sandbox's timeout")


def test_a_memory_hog_hits_the_limit(tmp_path):
    make_repo(tmp_path, {**PKG, "tests/test_hog.py": "def test_hog():\n    block = bytearray(4 * 1024 ** 3)\n    assert block\n"})
    with Sandbox(tmp_path) as sandbox:
        result = run_pytest(sandbox, ["tests"], LIMIT_S, 1)
    assert (result.status, result.reason) == ("memory", f"exceeded the {MIN_MEMORY_MB} MiB memory limit")


# --- the differential check -------------------------------------------------------------------------------

TOP3 = "def top3(xs):\n    return sorted(xs, reverse=True)[:3]\n"
WEAK_TOP3_TESTS = (  # they only check the length, and import the function both ways
    "import pkg.calc\n"
    "from pkg.calc import top3\n"
    "def test_length():\n"
    "    assert len(top3([5, 1, 4, 2, 3])) == 3\n"
    "def test_short_input():\n"
    "    assert len(pkg.calc.top3([7])) == 1\n")


def differential(root: Path, files: dict[str, str], qualname: str, candidate: str, target: str = "pkg/calc.py"):
    """Record the original's calls, put the candidate in its place, check that the tests still pass (the
    point: they are too weak to see the difference) and replay."""
    make_repo(root, files)
    with Sandbox(root) as sandbox:
        records = record_calls(sandbox, target, qualname, ["tests"], LIMIT_S, 0)
        assert isinstance(records, Path), records
        sandbox.write(target, candidate)
        tests = run_pytest(sandbox, ["tests"], LIMIT_S, 0)
        assert tests.status == "passed", tests.reason
        return replay_calls(sandbox, records, target, qualname, LIMIT_S, 0)


def test_a_wrong_candidate_that_weak_tests_pass_is_caught(tmp_path):
    result = differential(tmp_path, {**PKG, "pkg/calc.py": TOP3, "tests/test_calc.py": WEAK_TOP3_TESTS},
                          "top3", "def top3(xs):\n    return xs[:3]\n")
    assert result.status == "different"
    assert result.reason == "call 1 of 2, top3([5, 1, 4, 2, 3]): returned [5, 1, 4] where the original returned [5, 4, 3]"


def test_a_correct_candidate_written_differently_is_the_same(tmp_path):
    result = differential(tmp_path, {**PKG, "pkg/calc.py": TOP3, "tests/test_calc.py": WEAK_TOP3_TESTS},
                          "top3", "import heapq\n\ndef top3(xs):\n    return heapq.nlargest(3, xs)\n")
    assert (result.status, result.reason, result.checked, result.skipped) == ("same", "", 2, 0)


def test_a_candidate_that_mutates_its_argument_is_caught(tmp_path):
    result = differential(tmp_path, {**PKG, "pkg/calc.py": TOP3, "tests/test_calc.py": WEAK_TOP3_TESTS},
                          "top3", "def top3(xs):\n    xs.sort(reverse=True)\n    return xs[:3]\n")
    assert result.status == "different"
    assert result.reason.endswith("left argument 0 as [5, 4, 3, 2, 1] where the original left [5, 1, 4, 2, 3]")


MEAN = "def mean(xs):\n    if not xs:\n        raise ValueError('mean of nothing')\n    return sum(xs) / len(xs)\n"
WEAK_MEAN_TESTS = (
    "import pytest\n"
    "from pkg.calc import mean\n"
    "def test_mean():\n"
    "    assert mean([0.1] * 10) == pytest.approx(0.1)\n"
    "def test_empty():\n"
    "    with pytest.raises(Exception):\n"
    "        mean([])\n")


def test_a_different_exception_type_is_caught(tmp_path):
    result = differential(tmp_path, {**PKG, "pkg/calc.py": MEAN, "tests/test_calc.py": WEAK_MEAN_TESTS},
                          "mean", "def mean(xs):\n    return sum(xs) / len(xs)\n")
    assert result.status == "different"
    assert result.reason == ("call 2 of 2, mean([]): raised ZeroDivisionError: division by zero "
                             "where the original raised ValueError: mean of nothing")


def test_floats_within_a_tolerance_are_the_same(tmp_path):
    assert sum([0.1] * 10) / 10 != math.fsum([0.1] * 10) / 10  # the candidate's result is not bit-identical
    candidate = ("import math\n\ndef mean(xs):\n    if not xs:\n        raise ValueError('empty')\n"
                 "    return math.fsum(xs) / len(xs)\n")
    result = differential(tmp_path, {**PKG, "pkg/calc.py": MEAN, "tests/test_calc.py": WEAK_MEAN_TESTS},
                          "mean", candidate)
    assert (result.status, result.checked) == ("same", 2)


def test_calls_with_unpicklable_arguments_are_skipped(tmp_path):
    files = {**PKG, "pkg/calc.py": "def apply(f, x):\n    return f(x)\n", "tests/test_calc.py": (
        "from pkg.calc import apply\n"
        "def test_apply():\n"
        "    assert apply(lambda v: v + 1, 1) == 2\n"
        "    assert apply(abs, -3) == 3\n")}
    result = differential(tmp_path, files, "apply", "def apply(f, x):\n    y = f(x)\n    return y\n")
    assert (result.status, result.checked, result.skipped) == ("same", 1, 1)


ACCOUNT = (
    "from dataclasses import dataclass, field\n"
    "@dataclass\n"
    "class Account:\n"
    "    balance: int = 0\n"
    "    history: list = field(default_factory=list)\n"
    "    def deposit(self, amount):\n"
    "        self.history.append(amount)\n"
    "        self.balance += amount\n"
    "        return self.balance\n")


def test_a_method_that_leaves_self_different_is_caught(tmp_path):
    files = {**PKG, "pkg/calc.py": ACCOUNT, "tests/test_calc.py": (
        "from pkg.calc import Account\n"
        "def test_deposit():\n"
        "    assert Account().deposit(5) == 5\n")}
    candidate = ACCOUNT.replace("        self.history.append(amount)\n", "")
    result = differential(tmp_path, files, "Account.deposit", candidate)
    assert result.status == "different"
    assert result.reason == ("call 1 of 1, Account.deposit(Account(balance=0, history=[]), 5): left self as "
                             "Account(balance=5, history=[]) where the original left Account(balance=5, history=[5])")


FIB = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
FAST_FIB = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"


def test_a_recursive_target_records_only_its_outermost_calls(tmp_path):
    files = {**PKG, "pkg/calc.py": FIB, "tests/test_calc.py": "from pkg.calc import fib\ndef test_fib():\n    assert fib(10) == 55\n"}
    result = differential(tmp_path, files, "fib", FAST_FIB)
    assert (result.status, result.checked, result.skipped) == ("same", 1, 0)  # fib(10), not its 176 inner calls


def test_recording_stops_at_its_cap(tmp_path):
    files = {**PKG, "pkg/calc.py": FIB, "tests/test_calc.py": (
        "from pkg.calc import fib\n"
        "def test_many():\n"
        f"    assert all(fib(1) == 1 for _ in range({MAX_CALLS} + 50))\n")}
    result = differential(tmp_path, files, "fib", FAST_FIB)
    assert (result.status, result.checked) == ("same", MAX_CALLS)


def test_a_call_that_depends_on_its_test_is_skipped_not_a_difference(tmp_path):
    files = {**PKG, "pkg/calc.py": "SCALE = 1\n\ndef scaled(x):\n    return x * SCALE\n", "tests/test_calc.py": (
        "import pkg.calc\n"
        "def test_plain():\n"
        "    assert pkg.calc.scaled(2) == 2\n"
        "def test_configured(monkeypatch):\n"
        "    monkeypatch.setattr(pkg.calc, 'SCALE', 3)\n"
        "    assert pkg.calc.scaled(2) == 6\n")}
    result = differential(tmp_path, files, "scaled", "SCALE = 1\n\ndef scaled(x):\n    return SCALE * x\n")
    assert (result.status, result.checked, result.skipped) == ("same", 1, 1)


def test_a_src_layout_is_recorded_and_replayed(tmp_path):
    files = {"src/pkg/__init__.py": "", "src/pkg/calc.py": TOP3, "tests/test_calc.py": WEAK_TOP3_TESTS}
    result = differential(tmp_path, files, "top3", "def top3(xs):\n    return xs[:3]\n", target="src/pkg/calc.py")
    assert result.status == "different" and "where the original returned [5, 4, 3]" in result.reason


def test_tests_that_never_call_the_target_record_nothing_and_say_so(tmp_path):
    files = {**PKG, "pkg/calc.py": TOP3 + "def other():\n    return 1\n",
             "tests/test_calc.py": "from pkg.calc import other\ndef test_other():\n    assert other() == 1\n"}
    make_repo(tmp_path, files)
    with Sandbox(tmp_path) as sandbox:
        result = record_calls(sandbox, "pkg/calc.py", "top3", ["tests"], LIMIT_S, 0)
    assert result.status == "error" and "made no call of top3" in result.reason


def test_an_in_memory_file_argument_is_recorded_by_its_content_and_how_far_it_was_read(tmp_path):
    reader = "def first_line(stream):\n    return stream.readline()\n"
    tests = ("import io\nfrom pkg.calc import first_line\n"
             "def test_first_line():\n    assert first_line(io.StringIO('a\\nb\\n')).startswith('a')\n")
    files = {**PKG, "pkg/calc.py": reader, "tests/test_calc.py": tests}
    same = differential(tmp_path / "same", files, "first_line", reader)
    assert (same.status, same.checked) == ("same", 1)
    # Reads it all and returns the same first line: the tests pass, the stream's position tells.
    greedy = "def first_line(stream):\n    return stream.read().splitlines(keepends=True)[0]\n"
    assert differential(tmp_path / "greedy", files, "first_line", greedy).status == "different"


def test_a_target_that_does_not_exist_is_one_line(tmp_path):
    make_repo(tmp_path, {**PKG, "tests/test_calc.py": "from pkg.calc import total\ndef test_total():\n    assert total([1]) == 1\n"})
    with Sandbox(tmp_path) as sandbox:
        result = record_calls(sandbox, "pkg/calc.py", "nope", ["tests"], LIMIT_S, 0)
    assert isinstance(result, RunResult) and result.status == "error"
    assert "pkg.calc defines no function nope" in result.reason and "\n" not in result.reason


@pytest.mark.parametrize("candidate, reason", [
    ("def total(xs:\n", "could not import pkg.calc: SyntaxError"),
    ("def sum_all(xs):\n    return sum(xs)\n", "pkg.calc defines no function total"),
])
def test_a_candidate_without_the_target_is_an_error_not_a_crash(tmp_path, candidate, reason):
    make_repo(tmp_path, {**PKG, "tests/test_calc.py": "from pkg.calc import total\ndef test_total():\n    assert total([1]) == 1\n"})
    with Sandbox(tmp_path) as sandbox:
        records = record_calls(sandbox, "pkg/calc.py", "total", ["tests"], LIMIT_S, 0)
        assert isinstance(records, Path), records
        sandbox.write("pkg/calc.py", candidate)
        result = replay_calls(sandbox, records, "pkg/calc.py", "total", LIMIT_S, 0)
    assert result.status == "error" and result.reason.startswith(reason) and "\n" not in result.reason


def test_a_race_checks_the_candidate_then_times_both_versions_on_the_recorded_calls(tmp_path):
    make_repo(tmp_path, {**PKG, "pkg/calc.py": TOP3, "tests/test_calc.py": WEAK_TOP3_TESTS})
    candidate = "import heapq\n\ndef top3(xs):\n    return heapq.nlargest(3, xs)\n"
    with Sandbox(tmp_path) as sandbox:
        records = record_calls(sandbox, "pkg/calc.py", "top3", ["tests"], LIMIT_S, 0)
        assert isinstance(records, Path), records
        sandbox.write("pkg/calc.py", candidate)
        race = race_calls(sandbox, records, "pkg/calc.py", "top3", TOP3, LIMIT_S, 0)
        broken = race_calls(sandbox, records, "pkg/calc.py", "top3", "def top3(xs:\n", LIMIT_S, 0)
        assert sandbox.read("pkg/calc.py") == candidate  # the candidate stays in the tree
        sandbox.write("pkg/calc.py", "def top3(xs):\n    return xs[:3]\n")
        wrong = race_calls(sandbox, records, "pkg/calc.py", "top3", TOP3, LIMIT_S, 0)
    assert race["error"] is None and race["mismatch"] is None and race["calls"] == race["checked"] == 2
    assert len(race["time_s"]["champion"]) == len(race["time_s"]["challenger"]) > 0
    assert broken["error"].startswith("the best version's module does not load: SyntaxError")
    assert wrong["mismatch"].startswith("call 1 of 2, top3([5, 1, 4, 2, 3]): returned [5, 1, 4]")


# --- comparing results ---------------------------------------------------------------------------------------


class Opaque:
    """A class that leaves == to identity: compared by its pickle."""

    def __init__(self, value):
        self.value = value


def test_same_compares_values_as_results():
    assert same([1, (2.0, {"a": {0.1 + 0.2}})], [1, (2.0, {"a": {0.3}})])  # floats close, even inside a set
    assert not same([0.3], [0.3001])
    assert same(float("nan"), float("nan")) and not same(float("nan"), 0.0)
    assert not same(3, 3.0) and not same(True, 1) and not same([1], (1,))
    assert not same({"a": 1}, {"a": 1, "b": 2}) and not same({1, 2}, {1, 3})
    assert same(Opaque([1, 2]), Opaque([1, 2])) and not same(Opaque([1, 2]), Opaque([2, 1]))
    looped = [1]
    looped.append(looped)
    assert not same(looped, [1, [1, 2]])

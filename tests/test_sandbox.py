"""The sandbox candidates run in. Real git repositories, real pytest processes. The check and the race that
run in it are in test_verify.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import git
import pytest

from pytest_soap.soap.sandbox import MIN_MEMORY_MB, Sandbox, SandboxError, run_pytest, scrubbed_env

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

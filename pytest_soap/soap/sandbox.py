"""Where candidates run: never in the user's tree, never with their secrets, never without limits.

A Sandbox is a detached git worktree of HEAD with the user's uncommitted state laid over it, in a
temporary folder that goes away on every way out. Everything that runs there runs in a fresh process,
in its own session (so a timeout kills the whole group, grandchildren included), under a memory rlimit,
with an environment scrubbed of every *_KEY, *_TOKEN and *_SECRET, its temporary files inside the sandbox's folder.

Behind the wall (wall.py): an audit hook, first in each process, records what the first run (the original's
tests) does of the kinds it watches (network, writes outside the sandbox's folder, programs started, signals,
native code, environment variables), and stops every later run at the first thing of a kind the original did
not do. Those later runs also get a network namespace with no interface up, where the system allows one and the
original's tests use no network (`network_namespace`).

The check and the race run here too: `verify` runs the covering tests once with the candidate in the tree,
checking its calls against the original's where they happen, then races it on the regressed tests (verify.py).
"""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..records import Outcome, TextEnum
from ..worktree import temporary_worktree

if TYPE_CHECKING:
    import git

# RLIMIT_AS caps virtual memory, not the heap: a plain pytest process maps about 70 MiB, one that imports a
# numerical stack several hundred (each thread reserves an 8 MiB stack and glibc a 64 MiB malloc arena).
# A limit below this floor would fail the original's own tests, so a smaller request is raised to it:
# 2 GiB leaves over 1 GiB above what such a process needs before its test allocates anything.
MIN_MEMORY_MB = 2048
# Environment variables whose names end so are secrets: a candidate never sees them.
SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET")
# How much of a process's output is kept to explain what went wrong.
OUTPUT_TAIL = 20_000
WALL = Path(__file__).with_name("wall.py")  # run by path: see there


class SandboxError(Exception):
    """A sandbox that cannot be made; the message is one line for the user."""


class Sandbox:
    """The user's tree as it is (HEAD plus uncommitted edits and untracked files, less deleted ones), in a
    temporary git worktree. The user's tree, index, HEAD and stash are only read.

    `.path` is the tree; `.scratch` is a private folder beside it (outside the tree, removed with it) for
    the files the sandbox's runs leave to their caller (reports, records)."""

    def __init__(self, root: Path, capabilities: dict[str, str] | None = None):
        self.root = Path(root)
        # What the original's tests did of the kinds the wall watches (key -> the first such thing, in words);
        # None until the first run, which records it: that run must be the original's.
        self.capabilities = capabilities
        self._folder: Path | None = None  # the temporary folder, while the sandbox is open
        self._cleanup = ExitStack()  # removes the folder and its worktree
        self._repo: git.Repo | None = None
        self._files = 0

    @property
    def path(self) -> Path:
        return self._open() / "tree"

    @property
    def scratch(self) -> Path:
        return self._open() / "scratch"

    def _open(self) -> Path:
        # Never a default such as ".": a run in an unopened sandbox would run in the user's tree.
        if self._folder is None:
            raise SandboxError("the sandbox is not open: use it in a `with` statement")
        return self._folder

    def __enter__(self) -> Sandbox:
        import git  # here: the processes that run in a sandbox never need it

        try:
            repo = git.Repo(self.root, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise SandboxError(f"the sandbox needs a git repository, and {self.root} is not in one") from None
        if repo.working_tree_dir is None:
            raise SandboxError(f"{self.root} is a bare git repository: there is no tree to copy")
        if not repo.head.is_valid():
            raise SandboxError(f"the git repository at {repo.working_tree_dir} has no commit yet: the sandbox starts from HEAD")
        self._repo = repo
        self.root = Path(repo.working_tree_dir)
        try:
            self._folder = self._cleanup.enter_context(temporary_worktree(self.root, "HEAD", "soap-sandbox-")).parent
            self.scratch.mkdir()
            (self._folder / "tmp").mkdir()
            self._overlay(repo)
        except BaseException as exc:  # Ctrl-C included: nothing is left behind
            self._remove()
            if isinstance(exc, git.CommandError):
                raise SandboxError(f"git could not make the sandbox's worktree: {_last_line(str(exc.stderr))}") from None
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._remove()

    def _overlay(self, repo: git.Repo) -> None:
        """Lay the user's uncommitted state over the worktree: every path that differs from HEAD (staged or
        not) and every untracked file that is not ignored is copied as it is on disk, or deleted if gone."""
        changed = repo.git.diff("HEAD", "--name-only", "--no-renames", "--ignore-submodules", "-z")
        untracked = repo.git.ls_files("--others", "--exclude-standard", "-z")
        for relpath in filter(None, (changed + "\0" + untracked).split("\0")):
            source, copy = self.root / relpath, self.path / relpath
            if source.is_dir() and not source.is_symlink():
                continue  # a nested repository or submodule: not part of this tree's files
            if copy.is_symlink() or copy.is_file():
                copy.unlink()
            if source.is_symlink() or source.is_file():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy, follow_symlinks=False)

    def _remove(self) -> None:
        self._folder = None
        self._cleanup.close()

    def _inside(self, relpath: str) -> Path:
        path = (self.path / relpath).resolve()
        if not path.is_relative_to(self.path.resolve()):
            raise SandboxError(f"{relpath!r} is outside the sandbox's tree")
        return path

    def write(self, relpath: str, text: str) -> None:
        """Replace (or create) a file of the sandbox's tree; relpath is relative to the repository root."""
        path = self._inside(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def read(self, relpath: str) -> str:
        return self._inside(relpath).read_text(encoding="utf-8")

    def scratch_file(self, stem: str, suffix: str) -> Path:
        """A fresh file name in the scratch folder, so runs in one sandbox never read each other's files."""
        self._files += 1
        return self.scratch / f"{stem}-{self._files}{suffix}"

    def env(self) -> dict[str, str]:
        """The environment its processes get: no secrets, the tree first on the path, temporary files inside the
        sandbox's folder (where writing is no escape)."""
        return {**scrubbed_env(os.environ, self.path), "TMPDIR": str(self._open() / "tmp")}

    def _network_prefix(self) -> tuple[str, ...]:
        if self.capabilities is None or "network" in self.capabilities:
            return ()  # the original's run, or a project whose tests use the network: the hook alone watches it
        return network_namespace()[0]

    def containment(self) -> str:
        """How the runs after the first are contained, in one line for the report."""
        if self.capabilities is None:
            return "not yet known: the original's tests have not run"
        hook = "an audit hook stops anything of a kind the original's tests do not do"
        if "network" in self.capabilities:
            return f"{hook}; the network stays, as the original's tests use it ({self.capabilities['network']})"
        prefix, why_not = network_namespace()
        if prefix:
            return f"{hook}; no network at all (a network namespace without interfaces)"
        return f"{hook}, network use included; no network namespace here ({why_not})"

    def run(self, cmd: Sequence[str], cwd: Path, timeout_s: float, memory_mb: int) -> Finished:
        """`cmd` (`python -m MODULE ...`) in a fresh process behind the wall, under the limits, in the sandbox's
        environment. The first run records what it does; each later one is stopped at the first thing of a kind
        the first did not do, and `refused` says what."""
        log = self.scratch_file("wall", ".jsonl")
        walled = behind_wall(cmd, self._open(), log, self.capabilities, self._network_prefix())
        finished = run_limited(walled, cwd, self.env(), self.scratch_file("output", ".txt"), timeout_s, memory_mb)
        seen = read_wall_log(log)
        if self.capabilities is None:
            self.capabilities = {record["key"]: record["detail"] for record in seen}
        else:
            finished.refused = refusal(seen)
        return finished


def behind_wall(cmd: Sequence[str], home: Path, log: Path, allowed: Collection[str] | None,
                network_prefix: Sequence[str] = (), until_closed: bool = False) -> list[str]:
    """`cmd` (`python -m MODULE ...`) as run behind the wall (wall.py), with `home` the folder it may write in
    and `log` where the wall writes: recording what it does when `allowed` is None (`until_closed`: until it
    raises "soap.wall.close"), else stopped at the first thing whose key is not allowed. `network_prefix`
    (network_namespace's) takes its network away."""
    mode = ["--record"] if allowed is None else [arg for key in allowed for arg in ("--allow", key)]
    mode += ["--until-closed"] * until_closed
    return [*network_prefix, cmd[0], str(WALL), "--home", str(home), "--log", str(log), *mode, "--", *cmd[1:]]


def refusal(seen: list[dict], rule: str = "the original does not") -> str | None:
    """What the wall stopped a run at, one line, from its log's records; None when it stopped nothing."""
    refused = next((record for record in seen if record.get("refused")), None)
    return f"it {refused['detail']}, which {rule}" if refused else None


def read_wall_log(path: Path) -> list[dict]:
    """The wall's records (one JSON line each, written whole); none when the process never got to write."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill: the lines around it still count
    return records


@functools.cache
def network_namespace() -> tuple[tuple[str, ...], str]:
    """The command prefix that runs a program in a network namespace of its own (no interface up, so no network,
    loopback included), and ""; or () and why this system allows none. Root gets one directly; anyone else
    through an unprivileged user namespace, keeping their own user id (util-linux 2.38 or later)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return (), "the unshare command (util-linux) is not installed"
    prefix = (unshare, "--net") if os.geteuid() == 0 else (unshare, "--user", "--map-current-user", "--net")
    try:
        probe = subprocess.run([*prefix, sys.executable, "-c", ""], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return (), f"{' '.join(prefix[1:])} did not run: {e}"
    if probe.returncode != 0:
        return (), f"unshare {' '.join(prefix[1:])} failed: {_last_line(probe.stderr) or f'exit code {probe.returncode}'}"
    return prefix, ""


def scrubbed_env(env: Mapping[str, str], tree: Path) -> dict[str, str]:
    """`env` without secrets, with the sandbox's sources first on PYTHONPATH: before an editable install of
    the user's project, which would otherwise import the user's tree instead of the sandbox's copy."""
    clean = {name: value for name, value in env.items() if not name.upper().endswith(SECRET_SUFFIXES)}
    paths = [str(tree)] + [str(tree / "src")] * (tree / "src").is_dir()
    inherited = clean.get("PYTHONPATH")
    clean["PYTHONPATH"] = os.pathsep.join(paths + ([inherited] if inherited else []))
    clean["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ left in the tree to diff or to go stale
    return clean


def memory_limit_mb(memory_mb: int) -> int:
    """The limit a run gets for a requested `memory_mb`: never below MIN_MEMORY_MB (see there)."""
    return max(int(memory_mb), MIN_MEMORY_MB)


class RunStatus(TextEnum):
    """How a sandboxed pytest run ended (RunResult.status)."""

    PASSED = "passed"
    FAILED = "failed"  # a test failed or errored
    REFUSED = "refused"  # the wall stopped it
    TIMEOUT = "timeout"
    MEMORY = "memory"  # over the memory limit
    ERROR = "error"  # pytest itself failed: no tests collected, a crash, killed by a signal


@dataclass
class RunResult:
    status: RunStatus
    reason: str  # one line, "" when passed
    outcomes: dict[str, Outcome]  # node id (as pytest reports it) -> passed | failed | error | skipped
    seconds: float


@dataclass
class Finished:
    """A sandboxed process that ended, or was ended."""

    returncode: int  # negative: killed by that signal
    timed_out: bool
    output: str  # the tail of its stdout and stderr
    seconds: float
    refused: str | None = None  # what the wall stopped it at, one line

    def out_of_memory(self) -> bool:
        # A MemoryError ends most runs over the limit; SIGKILL that we did not send is the kernel's OOM killer.
        return self.returncode == -signal.SIGKILL or _mentions_memory_error(self.output)


def _mentions_memory_error(text: str) -> bool:
    return re.search(r"^(E\s+)?MemoryError\b", text, re.MULTILINE) is not None


def limit_memory(limit_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty: everything in it has exited


def run_limited(cmd: list[str], cwd: Path, env: Mapping[str, str], log: Path, timeout_s: float,
                memory_mb: int, watch: Callable[[subprocess.Popen[bytes]], None] | None = None,
                keep_stdout: bool = True) -> Finished:
    """Run `cmd` as the leader of a session of its own, under the memory limit, its output to `log` (a file,
    which a leftover grandchild cannot block as it can a pipe); on every way out the whole group is killed.

    `watch(proc)`, when given, runs while the process does (a sampler, say); a timer ends the process at
    `timeout_s` whatever `watch` is doing. Without `keep_stdout` only stderr goes to `log`, stdout nowhere."""
    started = time.perf_counter()
    ended = threading.Event()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=out if keep_stdout else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if keep_stdout else out, start_new_session=True,
            preexec_fn=lambda: limit_memory(memory_limit_mb(memory_mb) * 1024 * 1024),
        )

        def end() -> None:
            ended.set()
            kill_group(proc.pid)

        timer = threading.Timer(timeout_s, end)
        timer.start()
        try:
            if watch is not None:
                watch(proc)
            proc.wait()
        finally:
            # On every way out, Ctrl-C included, and after a normal exit too: nothing the run started outlives it.
            timer.cancel()
            kill_group(proc.pid)
            proc.wait()
    timed_out = ended.is_set() and proc.returncode == -signal.SIGKILL  # not one that exited as the timer fired
    output = log.read_text(encoding="utf-8", errors="replace")[-OUTPUT_TAIL:]
    return Finished(proc.returncode, timed_out, output, time.perf_counter() - started)


def _timeout_reason(timeout_s: float) -> str:
    return f"timed out after {timeout_s:.1f} s"  # the caller knows what the limit was scaled from, and says so


def _memory_reason(memory_mb: int) -> str:
    return f"exceeded the {memory_limit_mb(memory_mb)} MiB memory limit"


def crash_reason(finished: Finished, what: str) -> str:
    if finished.returncode < 0:
        try:
            return f"{what} was killed by {signal.Signals(-finished.returncode).name}"
        except ValueError:
            return f"{what} was killed by signal {-finished.returncode}"
    lines = [line.strip() for line in finished.output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    detail = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"{what} exited with code {finished.returncode}: {detail}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_pytest(sandbox: Sandbox, nodeids: Sequence[str], timeout_s: float, memory_mb: int,
               extra_args: Sequence[str] = (), rootdir_rel: str = "") -> RunResult:
    """Run tests in the sandbox: `python -m pytest <nodeids>` in a fresh, limited, scrubbed process, from
    the tree's `rootdir_rel` folder (node ids are relative to it). Timeout and memory are the run's status;
    otherwise a test that failed or errored makes it "failed", naming the first one."""
    junit = sandbox.scratch_file("junit", ".xml")
    cmd = [sys.executable, "-m", "pytest", *nodeids, "-p", "no:cacheprovider", "-q",
           f"--junitxml={junit}", "-o", "junit_family=xunit1", *extra_args]  # xunit1: each case names its file
    finished = sandbox.run(cmd, sandbox.path / rootdir_rel, timeout_s, memory_mb)
    cases = _read_junit(junit)
    outcomes = {case.nodeid: case.outcome for case in cases}
    problems = [case for case in cases if case.outcome in (Outcome.FAILED, Outcome.ERROR)]

    def result(status: RunStatus, reason: str) -> RunResult:
        return RunResult(status, reason, outcomes, finished.seconds)

    if finished.refused:
        return result(RunStatus.REFUSED, finished.refused)
    if finished.timed_out:
        return result(RunStatus.TIMEOUT, _timeout_reason(timeout_s))
    if finished.returncode == -signal.SIGKILL or any(_mentions_memory_error(case.text) for case in problems) \
            or (not cases and finished.out_of_memory()):
        return result(RunStatus.MEMORY, _memory_reason(memory_mb))
    if finished.returncode == 0:
        return result(RunStatus.PASSED, "")
    if problems:
        first = problems[0]
        return result(RunStatus.FAILED,
                      f"{first.nodeid} {'failed' if first.outcome == Outcome.FAILED else 'errored'}: {first.error}")
    if finished.returncode == 5:
        return result(RunStatus.ERROR, "no tests ran: pytest collected none of " + (", ".join(nodeids) or "the default selection"))
    return result(RunStatus.ERROR, crash_reason(finished, "pytest"))


@dataclass
class _Case:
    nodeid: str
    outcome: Outcome  # passed | failed | error | skipped
    error: str  # one line, for failures and errors
    text: str  # the message and the report, to look for a MemoryError


# A test reported twice counts as the worse of its two outcomes.
_WORSE = {Outcome.PASSED: 0, Outcome.SKIPPED: 1, Outcome.ERROR: 2, Outcome.FAILED: 3}


def _read_junit(path: Path) -> list[_Case]:
    """The test cases of a junit XML report (xunit1), one per node id: a test that failed and then errored
    in teardown is reported twice, and counts as failed."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []  # the run never got to write it
    cases: dict[str, _Case] = {}
    for element in root.iter("testcase"):
        case = _case(element)
        if case.nodeid not in cases or _WORSE[case.outcome] > _WORSE[cases[case.nodeid].outcome]:
            cases[case.nodeid] = case
    return list(cases.values())


def _case(element: ET.Element) -> _Case:
    outcome, error, text = Outcome.PASSED, "", ""
    for tag, name in (("failure", Outcome.FAILED), ("error", Outcome.ERROR), ("skipped", Outcome.SKIPPED)):
        child = element.find(tag)
        if child is not None:
            message, body = child.get("message") or "", child.text or ""
            outcome, error, text = name, _one_line_error(message, body), message + "\n" + body
            break
    return _Case(_nodeid(element), outcome, error, text)


def _one_line_error(message: str, body: str) -> str:
    if message and message != "collection failure":
        return message.splitlines()[0].strip()
    raised = [line[1:].strip() for line in body.splitlines() if line.startswith("E ")]
    return raised[-1] if raised else (message or "no message")


def _nodeid(element: ET.Element) -> str:
    """pytest's node id back from a junit case: `file` is the node id's path, `classname` the same path
    dotted (without ".py") followed by the classes, `name` the function with its parameters."""
    file, classname, name = element.get("file", ""), element.get("classname", ""), element.get("name", "")
    if not classname:  # a collection error: the case is the file
        return file or name
    module = re.sub(r"\.py$", "", file).replace("/", ".")
    if not file or not (classname == module or classname.startswith(module + ".")):
        return f"{classname}::{name}"  # the test is defined in another file than it runs from: best effort
    classes = classname[len(module) + 1:].split(".") if classname != module else []
    return "::".join([file, *filter(None, classes), name])


# --- the check and the race (verify.py) -----------------------------------------------------------------------


@dataclass
class Verified:
    """One run of the covering tests with the candidate in the tree, checked against the original where its
    calls happen, then raced against the best on the regressed tests (verify.py)."""

    run: RunResult
    functions: dict[str, dict]  # per function the check wrapped: calls, checked, uncopyable, too_big, unreproducible
    mismatch: str | None  # the first difference from the original, one line
    race: dict | None  # {"time_s": {"champion": [...], "challenger": [...]}, "peak_mb": {...}, "pairs", "repeat"}
    problem: str | None  # why the check or the race could not be done, one line
    tests_s: float | None  # the regressed tests' call time in this run
    raced: list[str]  # the regressed tests found among the tests run
    callers: list[str]  # the tests that called the target or another function the check wrapped
    calls_by_test: dict[str, int]  # how many such calls each made

    @property
    def checked(self) -> int:
        return sum(f["checked"] for f in self.functions.values())


def verify(sandbox: Sandbox, target_file: str, qualname: str, nodeids: Sequence[str], original: str,
           champion: str | None, race: Sequence[str], timeout_s: float, memory_mb: int, alpha: float = 0.01,
           compete: bool = True, champion_peak_mb: float | None = None, check_budget_s: float | None = None,
           watch: Sequence[str] = (), expected_calls: dict[str, int] | None = None,
           calls_by_test: dict[str, int] | None = None) -> Verified:
    """Run the covering tests with the tree as it is (the candidate) under verify.py: each call of a changed
    function is checked against `original` (the module's text) on copies of its arguments; then, if all is
    well and `compete`, the `race` tests run alternately with `champion` (None: the original) and the tree,
    then once under tracemalloc for the peak (the champion's only when `champion_peak_mb` is not known). Without
    `compete`, the race tests' peak with the tree as it is."""
    spec, out = sandbox.scratch_file("verify", ".json"), sandbox.scratch_file("verified", ".json")
    texts = {}
    for name, text in (("original", original), ("champion", champion)):
        if text is not None:
            texts[name] = sandbox.scratch_file(name, ".py")  # outside the tree: the candidate stays in place
            texts[name].write_text(text, encoding="utf-8")
    spec.write_text(json.dumps({"root": str(sandbox.path), "file": target_file, "qualname": qualname,
                                "original": str(texts["original"]), "champion": str(texts["champion"]) if champion else None,
                                "race": list(race), "compete": compete, "peak": not compete, "alpha": alpha,
                                "champion_peak_mb": champion_peak_mb, "check_budget_s": check_budget_s,
                                "watch": list(watch), "expected_calls": expected_calls or {},
                                "tests_count": len(nodeids), "calls_by_test": calls_by_test or {},
                                "out": str(out)}), encoding="utf-8")
    run = run_pytest(sandbox, nodeids, timeout_s, memory_mb, ["-p", "pytest_soap.soap.verify", f"--soap-verify={spec}"])
    try:
        result = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = {}
    problem = result.get("error") or result.get("race_failed")
    return Verified(run, result.get("functions") or {}, result.get("mismatch"), result.get("race"), problem,
                    result.get("tests_s"), result.get("raced") or [], result.get("callers") or [],
                    result.get("calls_by_test") or {})

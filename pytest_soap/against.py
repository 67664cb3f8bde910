"""`--soap-against REF`: measure a git ref side by side with the working tree, on this machine, in this run.

The working tree's tests run in the user's own session (the head side). REF is checked out into a
temporary git worktree and the same selection runs there in a fresh pytest process with the same
interpreter and options (the base side). Tests whose first figures cross their line are suspects.
Both first passes' processes are still up (the base's serves requests: rerun.serve), and each runs every
suspect twice more: the rechecks, which let most of a process's noise go without a process to start.
Suspects still past their line get rounds that alternate base and head, each in a fresh process, until
the statistics decide (see compare.judge_paired) or the round budget ends.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import compare, protocol
from .attribute import profiles_memory
from .measure.functions import Profile
from .records import GATED_METRICS, Measurement
from .worktree import temporary_worktree, warm_bytecode

# Runs of each suspect in a round's fresh process, one base then one head process per round. A change far
# past its line, twice the threshold, is decided on two process pairs, and five runs a side can reach
# p < 0.01 in the first round. A change nearer the line needs a third pair anyway (compare.pairs_needed):
# its first round takes three runs a side, and most such suspects are noise that those settle. Each round
# costs two process start-ups, on networkx's suite half a plain run, so there are at most two.
FAR_RUNS, NEAR_RUNS = 5, 3
# In a duet, Wilcoxon's signed-rank test on n pairs can reach p = 2**-n at best: 7 pairs for p < 0.01 in one
# round. A duet's round costs one side's time, so its runs cost what the sequential ones did.
DUET_FAR_RUNS, DUET_NEAR_RUNS = 7, 4
MAX_ROUNDS = 2
# Runs of each suspect in the rechecks, on each side: with the first, a median of three per process, which
# one slow run cannot make. They dismiss suspects and join the first process pair's median; they stay out
# of the U test, whose runs come from fresh rounds only (a networkx null run flagged a test at 1.21x when
# they were in it: the process that made the test a suspect made its rechecks slow too).
RECHECK_RUNS = 2
# How long a warm process may take to finish its session once closed, before it is stopped.
CLOSE_S = 30
# What the rounds for tests that are not past their line may cost, as a share of one pass of the suite (the
# base pass's wall time). The two passes cost up to two runs of the suite; with this, a gate that finds
# nothing past the line stays within two and a third. At a half, near-line tests of a null comparison on a
# busy machine took the gate to 3.6 runs.
ROUND_BUDGET = 0.3
# Idle cores, while the head's session waits, for both first passes at once: one each, less a little for
# the background chatter of an idle machine.
IDLE_CORES = 1.75
# Options of the user's command line that concern the controlling session only.
CONTROL_FLAGS = {"--soap-save"}
CONTROL_OPTIONS = {"--soap-against", "--soap-json", "--soap-baseline"}


class AgainstError(Exception):
    """A ref that cannot be measured; the message is one line for the user."""


@dataclass(frozen=True)
class Ref:
    name: str
    sha: str
    repo_root: Path
    head_sha: str | None
    dirty: bool

    def describe(self) -> str:
        parts = [f"{self.name} ({self.sha[:10]})"]
        if self.head_sha == self.sha:
            parts.append("the same commit as HEAD: a null comparison" + (", but the tree has changes" if self.dirty else ""))
        elif self.dirty:
            parts.append("the working tree has uncommitted changes: they are compared as they are")
        return "; ".join(parts)


def resolve(path: Path, name: str) -> Ref:
    import git  # here, not at the top: the processes that measure a side never need it

    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise AgainstError(f"--soap-against needs a git repository, and {path} is not in one") from None
    try:
        sha = repo.commit(name).hexsha
    except (git.BadName, git.BadObject, ValueError, git.GitCommandError):
        if (Path(repo.git_dir) / "shallow").exists():
            raise AgainstError(f"{name!r} is not in this shallow clone: fetch it with `git fetch --unshallow` "
                               "(on GitHub Actions, `fetch-depth: 0` in actions/checkout)") from None
        raise AgainstError(f"unknown git ref {name!r}: no branch, tag or commit of that name") from None
    if repo.working_tree_dir is None:
        raise AgainstError(f"the git repository at {repo.git_dir} is bare: there is no tree to compare")
    try:
        head = repo.head.commit.hexsha
    except ValueError:
        head = None
    return Ref(name, sha, Path(repo.working_tree_dir), head, repo.is_dirty(untracked_files=False))


def worktree(ref: Ref):
    """REF checked out, detached, in a temporary folder; removed on every way out, Ctrl-C included."""
    return temporary_worktree(ref.repo_root, ref.sha, "soap-ref-")


def side_arguments(args: list[str], drop: tuple[str, ...] = ()) -> list[str]:
    """The user's command line without the options that belong to the controlling session, nor `drop`."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in CONTROL_OPTIONS:
            skip = True  # its value is the next argument
        elif arg not in CONTROL_FLAGS and arg.split("=", 1)[0] not in CONTROL_OPTIONS and arg not in drop:
            kept.append(arg)
    return kept


@dataclass
class Side:
    """How to run pytest on one side: where, with what environment."""

    name: str  # "base" or "head": names its files
    label: str  # the ref or HEAD: names it to the user
    cwd: Path
    rootdir: Path  # where node ids start, on this side
    env: dict[str, str]
    runs: int = 0

    @classmethod
    def base(cls, tree: Path, ref: Ref, invocation_dir: Path, rootdir: Path) -> Side:
        # The worktree's code must be what its tests import, even when the project is installed in
        # editable mode (a .pth or finder pointing at the working tree): PYTHONPATH comes before both.
        paths = [str(tree)] + [str(tree / "src")] * (tree / "src").is_dir()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        def inside(path: Path) -> Path:
            try:
                return tree / path.relative_to(ref.repo_root)
            except ValueError:  # outside the repository: the worktree's root is the best match
                return tree
        return cls("base", ref.name, inside(invocation_dir), inside(rootdir), env)

    @classmethod
    def head(cls, invocation_dir: Path, rootdir: Path) -> Side:
        return cls("head", "HEAD", invocation_dir, rootdir, dict(os.environ))

    def run(self, args: list[str], work: Path, runs: dict[str, int] | None = None) -> tuple[dict[str, Measurement], str | None]:
        """Measure in a fresh pytest process; the measurements, and what went wrong if it did not run.
        With `runs`, the process collects just those tests' files (`args` then holds no paths of its own)
        and runs each test that many times in a row."""
        return self.start(args, work, runs).finish()

    def start(self, args: list[str], work: Path, runs: dict[str, int] | None = None, warm: bool = False,
              duet: bool = False) -> SideRun:
        """The same, in the background: `finish()` waits for it. A `warm` process stays up after its tests,
        to run some of them again when asked (see protocol) until it is closed; a `duet` process runs no test
        of its own, only those asked, each at the moment the session runs it (see DuetPartner)."""
        self.runs += 1
        dump = work / f"{self.name}-{self.runs}.json"
        selection = None if runs is None else protocol.Selection(runs)
        if not (warm or duet):
            return SideRun(self._pytest(args, work, selection, [f"--soap-side={dump}"]), dump, time.perf_counter())
        (ask_r, ask_w), (answer_r, answer_w) = os.pipe(), os.pipe()
        serve = f"--soap-duet={ask_r},{answer_w}" if duet else f"--soap-serve={ask_r},{answer_w}"
        try:
            proc = self._pytest(args, work, selection, [f"--soap-side={dump}", serve], pass_fds=(ask_r, answer_w))
        except BaseException:
            for fd in (ask_w, answer_r):
                os.close(fd)
            raise
        finally:
            os.close(ask_r)
            os.close(answer_w)
        channel = protocol.Channel(os.fdopen(answer_r, "r", encoding="utf-8"), os.fdopen(ask_w, "w", encoding="utf-8"))
        return SideRun(proc, dump, time.perf_counter(), channel)

    def start_profile(self, args: list[str], work: Path, wanted: dict[str, bool]) -> SideRun:
        """One profiled run of each test in `wanted` ({nodeid: memory?}), in a fresh process in the
        background; see SideRun.profiles."""
        self.runs += 1
        dump = work / f"{self.name}-{self.runs}.profiles.json"
        return SideRun(self._pytest(args, work, protocol.Selection.profiling(wanted), [f"--soap-profile={dump}"]),
                       dump, time.perf_counter())

    def _pytest(self, args: list[str], work: Path, selection: protocol.Selection | None, extra: list[str],
                pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        # At this session's -O level: the code either side runs, and the bytecode it reads, must be alike.
        cmd = [sys.executable, *["-O"] * sys.flags.optimize, "-m", "pytest", *args, "--soap", *extra, "-p", "no:cacheprovider"]
        if selection is not None:
            only_file = work / f"{self.name}-{self.runs}.only"
            protocol.write(only_file, selection)
            cmd.append(f"--soap-only={only_file}")
            cmd += sorted({str(self.rootdir / nodeid.split("::")[0]) for nodeid in selection.runs})
        # Its output goes to a file: a pipe nobody reads while the head's tests run would fill and stall it.
        with open(work / f"{self.name}-{self.runs}.out", "wb") as out:
            return subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    pass_fds=pass_fds)


@dataclass
class SideRun:
    """A side's pytest process under way."""

    proc: subprocess.Popen
    dump: Path
    started: float
    channel: protocol.Channel | None = None  # a warm process's pipes (see Side.start)
    seconds: float = 0.0  # its wall time, once finished

    def finish(self) -> tuple[dict[str, Measurement], str | None]:
        """Its measurements once its tests are done, and what went wrong if they did not run."""
        if self.channel:
            measured = self._measured(self.channel.receive())
            self.seconds = time.perf_counter() - self.started
            if measured:
                return measured, None
            self.close()  # no tests, or no answer: the exit status and the output say why
        self.proc.wait()
        self.seconds = time.perf_counter() - self.started
        if not self.dump.exists():
            return {}, self.why()
        reply = protocol.read(self.dump)
        measured = reply.measurements if isinstance(reply, protocol.Measured) else {}
        if self.proc.returncode not in (0, 1) or (not measured and self.proc.returncode != 5):
            return measured, self.why()
        return measured, None

    def ask(self, request: protocol.Message) -> protocol.Message | None:
        """A warm process's answer to a request; None when it has gone (or was closed)."""
        if self.channel is None or not self.channel.send(request):
            return None
        return self.channel.receive()

    def rerun(self, runs: dict[str, int]) -> tuple[dict[str, Measurement], str | None]:
        """A warm process's further runs of each test in `runs`, that many times each."""
        measured = self._measured(self.ask(protocol.Rerun(runs)))
        if measured is None:
            self.close()
            return {}, self.why()
        return measured, None

    def ask_profiles(self, wanted: dict[str, bool]) -> None:
        """Ask a warm process to profile these tests ({nodeid: memory?}); read_profiles() has the answer."""
        if self.channel and not self.channel.send(protocol.ProfileRuns(wanted)):
            self.channel.close()  # it has gone: read_profiles() says so

    def read_profiles(self) -> dict[str, Profile] | None:
        """The answer to ask_profiles(); None when the process has gone."""
        reply = self.channel.receive() if self.channel else None
        return reply.profiles if isinstance(reply, protocol.Profiled) else None

    @staticmethod
    def _measured(reply: protocol.Message | None) -> dict[str, Measurement] | None:
        return reply.measurements if isinstance(reply, protocol.Measured) else None

    def close(self) -> None:
        """Let a warm process finish its session (its pipe closed, it tears its fixtures down and exits);
        stop it if it has not within CLOSE_S seconds."""
        if self.channel:
            self.channel.close()
        self.channel = None
        try:
            self.proc.wait(timeout=CLOSE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def profiles(self) -> dict[str, Profile]:
        """The profiles of the tests that ran, of a run from Side.start_profile."""
        self.proc.wait()
        if not self.dump.exists():
            return {}
        try:
            reply = protocol.read(self.dump)
        except protocol.ProtocolError:
            return {}
        return reply.profiles if isinstance(reply, protocol.Profiled) else {}

    def why(self) -> str:
        """pytest's own account of a run that did not happen: the exception it printed, else its last error line."""
        # The output file is named for the run ("base-3.out"), whatever the dump ("base-3.profiles.json").
        output = (self.dump.parent / f"{self.dump.name.split('.')[0]}.out").read_text(encoding="utf-8", errors="replace")
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        exceptions = [line[1:].strip() for line in lines if line.startswith("E ")]
        errors = [line for line in lines if line.startswith("ERROR")]
        return f"pytest exited {self.proc.returncode}: {(exceptions or errors or lines or ['no output'])[-1]}"


class DuetPartner:
    """The head session's end of a duet with the ref's warm process: for each test the session asks the ref
    to run it too (begin), and when both are set up, starts both calls at once (at_call: the ref's Ready,
    then Go); end() has the ref's measurements. A ref that has gone, or lacks the test, answers at once,
    and the head's test runs alone."""

    def __init__(self, side_run: SideRun):
        self.side_run = side_run
        self.waiting = False  # a Duet asked, its Measured not read yet
        self.reply: dict[str, Measurement] = {}
        self.first_pass: dict[str, Measurement] = {}  # the ref's runs of the session's own loop
        self.paired = 0  # calls that started together

    def begin(self, nodeid: str, following: str | None, times: int = 1) -> None:
        self.reply = {}
        channel = self.side_run.channel
        self.waiting = bool(channel and channel.send(protocol.Duet(nodeid, following, times)))

    def at_call(self) -> None:
        if self.waiting:
            self._step()

    def end(self) -> dict[str, Measurement]:
        while self.waiting:  # calls the head did not make (its setup failed): the ref's run alone
            self._step()
        return self.reply

    def _step(self) -> None:
        channel = self.side_run.channel
        message = channel.receive() if channel else None
        if isinstance(message, protocol.Ready) and channel and channel.send(protocol.Go()):
            self.paired += 1
            return
        self.waiting = False
        self.reply = message.measurements if isinstance(message, protocol.Measured) else {}


@dataclass
class PairedRun:
    ref: Ref
    base: dict[str, Measurement] = field(default_factory=dict)
    rounds: int = 0
    problem: str | None = None  # why the ref could not be measured
    sides: str = "sequential"  # or "duet": each test ran on both sides at the same moment (see DuetPartner)
    suspects: int = 0  # tests that got rounds
    profiles: dict[str, tuple[Profile, Profile]] = field(default_factory=dict)  # regressed: (head, base)
    # Wall time of each stage: worktree; base, its first pass; waited, for it after the head's tests; rounds; profiles.
    seconds: dict[str, float] = field(default_factory=dict)


def core_to_spare() -> bool:
    """Can the ref's first pass run beside the head's tests? Only with a core idle for each: on a 2-core
    machine with one core busy, three processes sharing two cores made both first passes so noisy that the
    rounds cost more than running the passes one after the other. Under xdist the workers take the cores,
    and the caller does not ask."""
    return idle_cores() >= IDLE_CORES


def idle_cores(seconds: float = 0.2) -> float:
    """How many of this process's cores sat idle over the last moment, while it slept. From /proc/stat where
    there is one: the load average trails the machine by a minute, and read just after another job
    started it counted a busy core as free. Elsewhere, the cores less the load average."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def ticks() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(f) for f in stat.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return fields[3] + fields[4], sum(fields)

    try:
        idle, total = ticks()
        time.sleep(seconds)
        idle_after, total_after = ticks()
    except (OSError, ValueError, IndexError):
        return cores - os.getloadavg()[0]
    share = (idle_after - idle) / (total_after - total) if total_after > total else 0.0
    return min(cores, share * (os.cpu_count() or cores))


# The head session's runs of some tests again ({nodeid: times}), then pytest's next item (a node id, or None).
RerunHead = Callable[[dict[str, int], str | None], dict[str, Measurement]]


class RefRun:
    """The ref's side of a session: its worktree, its first pass, then rounds for the suspects, in which the
    head's measurements get the rounds' samples. Open from `open()` to `close()`, which the session calls on
    every way out, Ctrl-C included.

    `paths` are the test paths pytest took from `args`: rounds name the suspects' files instead. With
    pytest-xdist loaded, rounds and profiles run in one process (`-n 0`): a few suspects gain nothing from
    workers but their start-ups, and a worker's neighbour on the next core is noise."""

    def __init__(self, ref: Ref, args: list[str], paths: list[str], invocation_dir: Path, rootdir: Path,
                 thresholds: compare.Thresholds, xdist: bool = False, warm: bool = True):
        self.ref, self.thresholds = ref, thresholds
        self.warm = warm  # both sides can re-run tests in their first pass's process (not as xdist controllers)
        self.args = side_arguments(args)
        self.round_args = side_arguments(args, drop=tuple(paths)) + ["-n", "0"] * xdist
        self.invocation_dir, self.rootdir = invocation_dir, rootdir
        self.run = PairedRun(ref)
        self._stack = ExitStack()
        self._base_pass: SideRun | None = None
        self.partner: DuetPartner | None = None

    def open(self) -> None:
        clock = time.perf_counter()
        tree = self._stack.enter_context(worktree(self.ref))
        # Both trees' bytecode cache written before either side's tests run: see warm_bytecode.
        warm_bytecode([tree, self.ref.repo_root])
        self.work = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="soap-sides-")))
        self.base_side = Side.base(tree, self.ref, self.invocation_dir, self.rootdir)
        self.head_side = Side.head(self.invocation_dir, self.rootdir)
        self.run.seconds["worktree"] = round(time.perf_counter() - clock, 3)

    def start_base(self) -> SideRun:
        """The base's first pass, in the background from now, after the head's (sequential sides)."""
        self._base_pass = self.base_side.start(self.args, self.work, warm=self.warm)
        return self._base_pass

    def start_duet(self) -> DuetPartner:
        """The base's process for a duet: collected, it runs each test the head's session runs, at the same
        moment, on another core (see DuetPartner). The first pass then costs one pass of the suite, and
        each test's pair of runs shares the machine's noise of that moment."""
        self._base_pass = self.base_side.start(self.args, self.work, duet=True)
        self.partner = DuetPartner(self._base_pass)
        self.run.sides = "duet"
        return self.partner

    def close(self) -> None:
        if self._base_pass and self._base_pass.proc.poll() is None:
            self._base_pass.proc.kill()
            self._base_pass.proc.wait()
        self._stack.close()

    def measure(self, head: dict[str, Measurement],
                rerun_head: RerunHead | None = None,
                profile_head: Callable[[dict[str, bool]], dict[str, Profile]] | None = None) -> PairedRun:
        """Compare the head's first pass with the ref's; `rerun_head` runs head tests again in this session
        (for the rechecks: without it, as under xdist, there are none), and `profile_head` profiles them
        ({nodeid: memory?}; without it, a fresh process does)."""
        run = self._measure(head, rerun_head if self.warm else None, profile_head if self.warm else None)
        # Done with the warm base: let it finish its session. On Ctrl-C this is skipped, and close() kills it.
        if self._base_pass:  # _measure has started it
            self._base_pass.close()
        return run

    def _recheck(self, base_pass: SideRun, suspects: dict[str, int], rerun_head: RerunHead
                 ) -> tuple[dict[str, Measurement], dict[str, Measurement], str | None]:
        """The suspects' runs again in the first pass's processes: the base's, the head's, and what went wrong.
        In a duet, test by test, each call at the same moment on both sides; else the base's, then the head's."""
        if self.partner is None:
            base, problem = base_pass.rerun(suspects)
            return base, {} if problem else rerun_head(suspects, None), problem
        fresh: dict[str, Measurement] = {}
        fresh_head: dict[str, Measurement] = {}
        queue = list(suspects)
        for nodeid, following in zip(queue, [*queue[1:], None]):
            self.partner.begin(nodeid, following, suspects[nodeid])
            fresh_head |= rerun_head({nodeid: suspects[nodeid]}, following)
            fresh |= self.partner.end()
        gone = base_pass.proc.poll() is not None
        if gone:
            base_pass.close()
        return fresh, fresh_head, base_pass.why() if gone else None

    def _round(self, suspects: dict[str, int]) -> tuple[tuple[dict[str, Measurement], dict[str, Measurement]], str | None]:
        """A round: each suspect run its number of times in a fresh process a side (the base's, the head's).
        In a duet both processes run at once, each call started with the other's; else the base's, then the
        head's. What went wrong, if it did."""
        if self.partner is None:
            fresh = []
            for side in (self.base_side, self.head_side):
                measured, problem = side.run(self.round_args, self.work, suspects)
                if problem:
                    return ({}, {}), f"a confirming run on {side.label} failed ({problem})"
                fresh.append(measured)
            return (fresh[0], fresh[1]), None
        started = [side.start(self.round_args, self.work, suspects, duet=True) for side in (self.base_side, self.head_side)]
        try:
            base, head = conduct(started, suspects)
            for side, side_run in zip((self.base_side, self.head_side), started):
                if side_run.proc.poll() is not None:  # a duet's process waits to be closed: this one died
                    side_run.close()
                    return ({}, {}), f"a confirming run on {side.label} failed ({side_run.why()})"
            return (base, head), None
        finally:
            for side_run in started:
                side_run.close()

    def _measure(self, head: dict[str, Measurement], rerun_head: RerunHead | None, profile_head) -> PairedRun:
        run, thresholds = self.run, self.thresholds
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            run.seconds[stage] = round(run.seconds.get(stage, 0.0) + now - clock, 3)
            clock = now

        base_pass = self._base_pass or self.start_base()
        rest = base_pass.ask(protocol.Rest()) if self.partner else None
        if self.partner and isinstance(rest, protocol.Measured):
            # The tests only the ref has ran just now, alone, so that their verdict, "removed", has figures.
            run.base, problem = self.partner.first_pass | rest.measurements, None
            base_pass.seconds = time.perf_counter() - base_pass.started
        else:
            run.base, problem = base_pass.finish()  # a duet's process that has gone: its status says why
        lap("waited")
        run.seconds["base"] = round(base_pass.seconds, 3)
        if problem:
            run.problem = f"the tests at {self.ref.name} did not run ({problem})"
            return run
        duet = self.partner is not None
        near = DUET_NEAR_RUNS if duet else NEAR_RUNS
        cost = RoundCost(head, run.base, run.seconds["base"], duet=duet)
        # For tests not past their line (see affordable_suspects): in the rechecks, and again in the rounds. The
        # rechecks once spent most of it, and a planted 1.2x was left without the second round it needed.
        budget = ROUND_BUDGET * run.seconds["base"]
        if rerun_head:
            # Rechecks: most suspects are a process's noise, and the first passes' processes, still up, can
            # say so for the price of a few runs, with no start-up. Their runs join the first pass's process
            # pair; only suspects still past their line after them go on to the rounds.
            suspects = affordable_suspects(head, run.base, thresholds, cost, budget, runs=RECHECK_RUNS, start_ups=False)
            run.suspects = len(suspects)
            if suspects:
                fresh, fresh_head, problem = self._recheck(base_pass, suspects, rerun_head)
                if problem:
                    run.problem = f"a recheck on {self.ref.name} failed ({problem})"
                    return run
                for nodeid in suspects:
                    _add_runs(run.base[nodeid], fresh.get(nodeid), new_process=False)
                    _add_runs(head[nodeid], fresh_head.get(nodeid), new_process=False)
                lap("rechecks")
                suspects = affordable_suspects(head, run.base, thresholds, cost, budget, among=suspects)
        else:
            suspects = affordable_suspects(head, run.base, thresholds, cost, budget)
            run.suspects = len(suspects)
        while suspects:
            run.rounds += 1
            (fresh_base, fresh_head), problem = self._round(suspects)
            if problem:
                run.problem = problem
                return run
            for nodeid in suspects:
                _add_runs(run.base[nodeid], fresh_base.get(nodeid))
                _add_runs(head[nodeid], fresh_head.get(nodeid))
            lap("rounds")
            undecided = [n for n in suspects
                         if compare.paired_undecided(head[n], run.base[n], thresholds, run.rounds, MAX_ROUNDS, duet)]
            suspects = {n: near for n in undecided}
            if run.seconds["rounds"] + cost(suspects) > budget:
                # Past the budget, a second round only for tests whose process pairs all agree they are past
                # the line, but are too few, or their runs too few, to say it with confidence.
                suspects = {n: near for n in undecided
                            if compare.judge_paired(head[n], run.base[n], thresholds, duet).pending}
        # Attribution needs each regressed test's profile on both sides: one more run of it a side. The two
        # sides' profiles run at once when a core is free for each, else one after the other: in a benchmark run
        # with a core busy, where they shared the other, 1.2x and 1.5x regressions got no function blamed.
        verdicts = [compare.judge_paired(m, run.base[n], thresholds, duet) for n, m in head.items() if n in run.base]
        regressed = {v.nodeid: profiles_memory(v.regressed_metrics) for v in verdicts if v.verdict == "regressed"}
        if regressed and profile_head is not None:
            # Both first passes' processes are still up: each profiles its side with no start-up, no imports
            # and no collection (two fresh processes cost 2 to 4 s of a planted benchmark's 30).
            base_pass.ask_profiles(regressed)
            head_profiles = profile_head(regressed) if core_to_spare() else None  # else after the base's
            base_profiles = base_pass.read_profiles()
            if head_profiles is None:
                head_profiles = profile_head(regressed)
            if base_profiles is None:  # it has gone: a fresh process, as under xdist
                base_profiles = self.base_side.start_profile(self.round_args, self.work, regressed).profiles()
            run.profiles = {n: (head_profiles[n], base_profiles[n]) for n in head_profiles if n in base_profiles}
            lap("profiles")
        elif regressed:
            sides, only = (self.head_side, self.base_side), regressed
            if core_to_spare():
                started = [side.start_profile(self.round_args, self.work, only) for side in sides]
                head_profiles, base_profiles = (profile_run.profiles() for profile_run in started)
            else:
                head_profiles, base_profiles = (side.start_profile(self.round_args, self.work, only).profiles()
                                                for side in sides)
            run.profiles = {n: (head_profiles[n], base_profiles[n]) for n in head_profiles if n in base_profiles}
            lap("profiles")
        return run


def conduct(side_runs: list[SideRun], runs: dict[str, int]) -> list[dict[str, Measurement]]:
    """A round in duet: fresh processes (see Side.start's `duet`) run each test in `runs` that many times,
    each call started on all of them at once (every Ready answered by one Go to all); each one's measurements.
    A process that lacks a test, fails it or has gone answers early, and the others go on without it."""
    replies: list[dict[str, Measurement]] = [{} for _ in side_runs]
    queue = list(runs)
    for nodeid, following in zip(queue, [*queue[1:], None]):
        waiting = [bool(r.channel and r.channel.send(protocol.Duet(nodeid, following, runs[nodeid]))) for r in side_runs]
        while any(waiting):
            messages = [r.channel.receive() if w and r.channel else None for r, w in zip(side_runs, waiting)]
            for i, message in enumerate(messages):
                if isinstance(message, protocol.Ready):
                    continue
                if waiting[i] and isinstance(message, protocol.Measured):
                    replies[i] |= message.measurements
                waiting[i] = False
            for side_run, message in zip(side_runs, messages):
                if isinstance(message, protocol.Ready) and side_run.channel:
                    side_run.channel.send(protocol.Go())
    return replies


@dataclass
class RoundCost:
    """What a round would cost, estimated from the first passes: each of its two processes starts up like
    the base pass did (its wall time less its tests' time), then runs each suspect its number of times. In a
    duet the two processes start up and run at once: a round costs one side's time."""

    head: dict[str, Measurement]
    base: dict[str, Measurement]
    pass_s: float
    duet: bool = False

    @property
    def start_up(self) -> float:
        return max(self.pass_s - sum(m.figure("time_s") or 0 for m in self.base.values()), 0.0)

    def runs(self, nodeid: str, count: int) -> float:
        both = (self.head[nodeid].figure("time_s") or 0, self.base[nodeid].figure("time_s") or 0)
        return count * (max(both) if self.duet else sum(both))

    def __call__(self, runs: dict[str, int]) -> float:
        return (1 if self.duet else 2) * self.start_up + sum(self.runs(n, count) for n, count in runs.items())


# With fewer tests timed above the floor than this, their median ratio says little about the processes.
DRIFT_MIN_TESTS = 10


def process_drift(head: dict[str, Measurement], base: dict[str, Measurement], names: list[str],
                  thresholds: compare.Thresholds) -> float:
    """How much slower the head's first pass ran than the base's, as the median time ratio over the tests.
    Two processes can differ by 5% on every test (load, clock speed, memory layout), and most tests of a
    change are unchanged, so that is the processes' doing, not the code's. 1.0 when too few tests are timed,
    or when it reaches the time threshold: a change that slows every test that much is no drift to correct."""
    ratios = [h / b for n in names if (h := head[n].figure("time_s")) and (b := base[n].figure("time_s"))
              and max(h, b) >= thresholds.min_time_s]
    if len(ratios) < DRIFT_MIN_TESTS:
        return 1.0
    drift, limit = statistics.median(ratios), thresholds.limit("time_s")
    return drift if 1 / limit < drift < limit else 1.0


def affordable_suspects(head: dict[str, Measurement], base: dict[str, Measurement], thresholds: compare.Thresholds,
                        cost: RoundCost, budget: float, among: Iterable[str] | None = None, runs: int | None = None,
                        start_ups: bool = True) -> dict[str, int]:
    """The tests (of `among`, else all) that get more runs, with how many on each side: `runs`, else as
    many as a first round takes (see FAR_RUNS). They are picked on the figures so far, with the time and
    TMU of every base figure times process_drift. Every test past its whole line towards a regression gets
    them, whatever it costs. A test past only half of it (a real regression that read low, or noise), or
    one past its whole line the other way, does while its runs cost at most `budget` seconds, the furthest
    from its base first; with `start_ups` (a round, not a recheck) that budget also pays the round's two
    process start-ups when no test past the line does. On networkx's suite a process's start-up is a third
    of a run, and 1.5 s tests drifting 5% tripled the gate's cost. Improvements inside the line get none:
    the gate does not need them, and 200 ms tests that looked 5% faster were a null run's dearest suspects."""
    both = [n for n, m in head.items() if n in base and m.judged and base[n].judged]
    drift = process_drift(head, base, both, thresholds)
    figures = {n: {k: v * drift if k in ("time_s", "tmu_mbs") and v is not None else v
                   for k, v in base[n].figures().items()} for n in both}
    candidates = both if among is None else [n for n in both if n in among]
    past_line = [n for n in candidates if compare.suspect_metrics(head[n], figures[n], thresholds)]
    near_line = [n for n in candidates if n not in past_line and (
                 compare.suspect_metrics(head[n], figures[n], thresholds, False, compare.SUSPECT_MARGIN)
                 or compare.suspect_metrics(head[n], figures[n], thresholds, True))]

    def first_runs(n: str) -> int:
        """FAR_RUNS for a change that two process pairs can decide, else NEAR_RUNS (in a duet, theirs)."""
        far, near = (DUET_FAR_RUNS, DUET_NEAR_RUNS) if cost.duet else (FAR_RUNS, NEAR_RUNS)
        t = thresholds.for_test(head[n])
        for metric in compare.suspect_metrics(head[n], figures[n], thresholds, True, compare.SUSPECT_MARGIN):
            h, b = head[n].figure(metric), figures[n][metric]
            if h and b and compare.pairs_needed(metric, max(h / b, b / h), t.limit(metric)) == 2:
                return far
        return near

    def distance(n: str) -> float:
        ratios = [h / b for h, b in ((head[n].figure(k), figures[n].get(k)) for k in GATED_METRICS) if h and b]
        return max((abs(math.log(r)) for r in ratios), default=0.0)

    # With suspects past the line there is a round anyway, and a test near it costs only its own runs.
    chosen = {n: runs or first_runs(n) for n in past_line}
    budget -= cost({}) if start_ups and not past_line else 0.0
    for n in sorted(near_line, key=distance, reverse=True):
        count = runs or first_runs(n)
        if cost.runs(n, count) <= budget:
            chosen[n] = count
            budget -= cost.runs(n, count)
    return chosen


def _add_runs(m: Measurement, fresh: Measurement | None, new_process: bool = True) -> None:
    """Fold a round's runs (or, not `new_process`, a recheck's) into a test's measurement; a test that
    failed in them is flaky."""
    if fresh is None or fresh.outcome not in ("passed", "xpassed"):
        m.outcome = "flaky"
        return
    m.samples.extend(fresh.samples)
    if new_process:
        m.rounds.append(len(fresh.samples))

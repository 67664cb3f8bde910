"""`--soap-against REF`: measure a git ref side by side with the working tree, on this machine, in this run.

The working tree's tests run in the user's own session (the head side). REF is checked out into a
temporary git worktree and the same selection runs there in a fresh pytest process with the same
interpreter and options (the base side, see sides.py): in a duet, each test at the moment the head runs
it; else after the head's tests. Tests whose first figures cross their line are suspects (suspects.py).
Both first passes' processes are still up (the base's serves requests: rerun.serve), and each runs every
suspect twice more: the rechecks, which let most of a process's noise go without a process to start.
Suspects still past their line get rounds, each a fresh process pair, until the statistics decide (see
compare.judge_paired) or the rounds or their budget end. RefRun runs these stages in turn.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import compare, protocol
from .attribute import profiles_memory
from .measure.functions import Profile
from .records import JUDGED_OUTCOMES, Measurement, Outcome
from .sides import DuetPartner, Side, SideRun, conduct, side_arguments
from .suspects import DUET_NEAR_RUNS, NEAR_RUNS, WARM_UP_RUNS, RoundCost, affordable_suspects
from .worktree import temporary_worktree, warm_bytecode

# Rounds of a suspect at most: each costs a process pair's start-up (on networkx's suite half a plain run).
MAX_ROUNDS = 2
# ...and of one whose process pairs all agree it is past the line, with too little evidence yet: the budget
# grows with the evidence. With two, sqlparse's real 1.2x regression ended "unconfirmed" in 5 of 5
# sequential gates.
MAX_PENDING_ROUNDS = 3
# Runs of each suspect in the rechecks, on each side: with the first, a median of three per process, which
# one slow run cannot make. They dismiss suspects and join the first process pair's median; they stay out
# of the U test, whose runs come from fresh rounds only (a networkx null run flagged a test at 1.21x when
# they were in it: the process that made the test a suspect made its rechecks slow too).
RECHECK_RUNS = 2
# How near its line a test's first pair must come to be rechecked: a quarter of the way, where a round needs
# half (compare.SUSPECT_MARGIN). A recheck costs no start-up, and one unlucky pair is all that keeps a real
# regression from a second look: sqlparse's real 1.19x once read under 1.05x in a duet's first pass and was
# never a suspect (1 gate in 5).
RECHECK_MARGIN = 0.25
# What the rounds for tests that are not past their line may cost, as a share of one pass of the suite (the
# base pass's wall time). The two passes cost up to two runs of the suite; with this, a gate that finds
# nothing past the line stays within two and a third. At a half, near-line tests of a null comparison on a
# busy machine took the gate to 3.6 runs.
ROUND_BUDGET = 0.3
# Idle cores, while the head's session waits, for both first passes at once: one each, less a little for
# the background chatter of an idle machine.
IDLE_CORES = 1.75


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


@dataclass
class PairedRun:
    ref: Ref
    base: dict[str, Measurement] = field(default_factory=dict)
    rounds: int = 0
    problem: str | None = None  # why the ref could not be measured
    sides: str = "sequential"  # or "duet": each test ran on both sides at the same moment (see DuetPartner)
    suspects: int = 0  # tests that got rounds
    unsettled: set[str] = field(default_factory=set)  # suspects still undecided when the rounds ran out
    profiles: dict[str, tuple[Profile, Profile]] = field(default_factory=dict)  # regressed: (head, base)
    # Wall time of each stage: worktree; base, its first pass; waited, for it after the head's tests; rounds; profiles.
    seconds: dict[str, float] = field(default_factory=dict)


def core_to_spare(since: CpuClock | None = None) -> bool:
    """Can the ref's first pass run beside the head's tests? Only with a core idle for each: on a 2-core
    machine with one core busy, three processes sharing two cores made both first passes so noisy that the
    rounds cost more than running the passes one after the other. Under xdist the workers take the cores,
    and the caller does not ask."""
    return idle_cores(since) >= IDLE_CORES


@dataclass(frozen=True)
class CpuClock:
    """The machine's CPU time, idle and in all, from /proc/stat (in its ticks), and this process's own
    (children waited for included), at a moment."""

    idle_ticks: int
    total_ticks: int
    own_s: float
    at: float

    @classmethod
    def read(cls) -> CpuClock | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(f) for f in stat.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        except (OSError, ValueError):
            return None
        if len(fields) < 8:
            return None
        own = os.times()
        return cls(fields[3] + fields[4], sum(fields), own.user + own.system + own.children_user + own.children_system,
                   time.monotonic())

    def idle_since(self, earlier: CpuClock, cores: int, tick_s: float) -> float:
        """The cores the rest of the machine left idle from `earlier` to this moment: this process's own
        use counts as idle, since the sides are what will run on them."""
        total = self.total_ticks - earlier.total_ticks
        if total <= 0:
            return 0.0
        idle = self.idle_ticks - earlier.idle_ticks + (self.own_s - earlier.own_s) / tick_s
        return min(cores, max(0.0, idle / total * cores))


def idle_cores(since: CpuClock | None = None, seconds: float = 0.2) -> float:
    """How many of this process's cores the rest of the machine left idle over the last `seconds` at least:
    from `since` (a clock read as the session started up: its work so far is its own, and no time is lost
    sleeping), or from now, sleeping for the rest. From /proc/stat where there is one: the load average
    trails the machine by a minute, and read just after another job started it counted a busy core as free.
    Elsewhere, the cores less the load average."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    start = since or CpuClock.read()
    if start is None:
        return cores - os.getloadavg()[0]
    time.sleep(max(0.0, seconds - (time.monotonic() - start.at)))
    end = CpuClock.read()
    if end is None:
        return cores - os.getloadavg()[0]
    # /proc/stat counts every core of the machine, in USER_HZ ticks.
    return min(cores, end.idle_since(start, os.cpu_count() or cores, 1 / os.sysconf("SC_CLK_TCK")))


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
        warm_bytecode(self.ref.repo_root, tree)
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
            warmed = {nodeid: count + WARM_UP_RUNS for nodeid, count in suspects.items()}
            for side in (self.base_side, self.head_side):
                measured, problem = side.run(self.round_args, self.work, warmed)
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
        """The stages in turn, each timed in run.seconds; a stage that fails ends the run with its problem."""
        run = self.run
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            run.seconds[stage] = round(run.seconds.get(stage, 0.0) + now - clock, 3)
            clock = now

        base_pass = self._base_pass or self.start_base()
        run.base, problem = self._first_pass(base_pass)
        lap("waited")
        run.seconds["base"] = round(base_pass.seconds, 3)
        if problem:
            run.problem = f"the tests at {self.ref.name} did not run ({problem})"
            return run
        cost = RoundCost(head, run.base, run.seconds["base"], duet=self.partner is not None)
        # For tests not past their line (see affordable_suspects): in the rechecks, and again in the rounds. The
        # rechecks once spent most of it, and a planted 1.2x was left without the second round it needed.
        budget = ROUND_BUDGET * run.seconds["base"]
        if rerun_head:
            suspects, problem = self._rechecks(head, base_pass, rerun_head, cost, budget)
            lap("rechecks")
        else:
            suspects = affordable_suspects(head, run.base, self.thresholds, cost, budget)
            run.suspects = len(suspects)
        if not problem:
            problem = self._rounds(head, suspects, cost, budget, lambda: lap("rounds"))
        if problem:
            run.problem = problem
            return run
        run.profiles = self._profiles(head, base_pass, profile_head)
        if run.profiles:
            lap("profiles")
        return run

    def _first_pass(self, base_pass: SideRun) -> tuple[dict[str, Measurement], str | None]:
        """The ref's measurements of the first pass, and what went wrong if its tests did not run."""
        rest = base_pass.ask(protocol.Rest()) if self.partner else None
        if self.partner and isinstance(rest, protocol.Measured):
            # The tests only the ref has ran just now, alone, so that their verdict, "removed", has figures.
            base_pass.seconds = time.perf_counter() - base_pass.started
            return self.partner.first_pass | rest.measurements, None
        return base_pass.finish()  # sequential sides; or a duet's process that has gone: its status says why

    def _rechecks(self, head: dict[str, Measurement], base_pass: SideRun, rerun_head: RerunHead, cost: RoundCost,
                  budget: float) -> tuple[dict[str, int], str | None]:
        """Most suspects are a process's noise, and the first passes' processes, still up, can say so for the
        price of a few runs, with no start-up. Their runs join the first pass's process pair; the suspects
        still past their line after them go on to the rounds, with how many runs each."""
        run = self.run
        suspects = affordable_suspects(head, run.base, self.thresholds, cost, budget, runs=RECHECK_RUNS, start_ups=False,
                                       margin=RECHECK_MARGIN)
        run.suspects = len(suspects)
        if not suspects:
            return {}, None
        fresh, fresh_head, problem = self._recheck(base_pass, suspects, rerun_head)
        if problem:
            return {}, f"a recheck on {self.ref.name} failed ({problem})"
        for nodeid in suspects:
            _add_runs(run.base[nodeid], fresh.get(nodeid), new_process=False)
            _add_runs(head[nodeid], fresh_head.get(nodeid), new_process=False)
        return affordable_suspects(head, run.base, self.thresholds, cost, budget, among=suspects), None

    def _rounds(self, head: dict[str, Measurement], suspects: dict[str, int], cost: RoundCost, budget: float,
                lap: Callable[[], None]) -> str | None:
        """Rounds of fresh process pairs until the suspects are decided, or the rounds or the budget end."""
        run, thresholds, duet = self.run, self.thresholds, self.partner is not None
        near = DUET_NEAR_RUNS if duet else NEAR_RUNS
        tried: set[str] = set()
        while suspects:
            tried |= set(suspects)
            run.rounds += 1
            (fresh_base, fresh_head), problem = self._round(suspects)
            if problem:
                return problem
            warm_ups = 0 if duet else WARM_UP_RUNS  # see _round
            for nodeid in suspects:
                _add_runs(run.base[nodeid], fresh_base.get(nodeid), warm_ups=warm_ups)
                _add_runs(head[nodeid], fresh_head.get(nodeid), warm_ups=warm_ups)
            lap()
            undecided = [n for n in suspects
                         if compare.paired_undecided(head[n], run.base[n], thresholds, run.rounds, MAX_ROUNDS, duet)
                         or (run.rounds < MAX_PENDING_ROUNDS and compare.judge_paired(head[n], run.base[n], thresholds,
                                                                                       duet).pending)]
            suspects = {n: near for n in undecided}
            if run.seconds["rounds"] + cost(suspects) > budget:
                # Past the budget, a second round only for tests whose process pairs all agree they are past
                # the line, but are too few, or their runs too few, to say it with confidence.
                suspects = {n: near for n in undecided
                            if compare.judge_paired(head[n], run.base[n], thresholds, duet).pending}
        # Left undecided when the rounds or their budget ran out: their verdict says so, never "unchanged".
        run.unsettled = {n for n in tried if compare.paired_undecided(head[n], run.base[n], thresholds, 0, 1, duet)}
        return None

    def _profiles(self, head: dict[str, Measurement], base_pass: SideRun,
                  profile_head: Callable[[dict[str, bool]], dict[str, Profile]] | None
                  ) -> dict[str, tuple[Profile, Profile]]:
        """Attribution needs each regressed test's profile on both sides: one more run of it a side. The two
        sides' profiles run at once when a core is free for each, else one after the other: in a benchmark run
        with a core busy, where they shared the other, 1.2x and 1.5x regressions got no function blamed."""
        run, duet = self.run, self.partner is not None
        verdicts = [compare.judge_paired(m, run.base[n], self.thresholds, duet) for n, m in head.items() if n in run.base]
        regressed = {v.nodeid: profiles_memory(v.regressed_metrics) for v in verdicts
                     if v.verdict == compare.Verdict.REGRESSED}
        if not regressed:
            return {}
        if profile_head is not None:
            # Both first passes' processes are still up: each profiles its side with no start-up, no imports
            # and no collection (two fresh processes cost 2 to 4 s of a planted benchmark's 30).
            # Side by side when a core is idle for each: asked after the base has started, it never is.
            side_by_side = self.partner is not None or core_to_spare()
            base_pass.ask_profiles(regressed)
            head_profiles = profile_head(regressed) if side_by_side else None  # else after the base's
            base_profiles = base_pass.read_profiles()
            if head_profiles is None:
                head_profiles = profile_head(regressed)
            if base_profiles is None:  # it has gone: a fresh process, as under xdist
                base_profiles = self.base_side.start_profile(self.round_args, self.work, regressed).profiles()
        else:
            sides = (self.head_side, self.base_side)
            if core_to_spare():
                started = [side.start_profile(self.round_args, self.work, regressed) for side in sides]
                head_profiles, base_profiles = (profile_run.profiles() for profile_run in started)
            else:
                head_profiles, base_profiles = (side.start_profile(self.round_args, self.work, regressed).profiles()
                                                for side in sides)
        return {n: (head_profiles[n], base_profiles[n]) for n in head_profiles if n in base_profiles}


def _add_runs(m: Measurement, fresh: Measurement | None, new_process: bool = True, warm_ups: int = 0) -> None:
    """Fold a round's runs (or, not `new_process`, a recheck's) into a test's measurement, less the first
    `warm_ups` (see WARM_UP_RUNS); a test that failed in them is flaky."""
    if fresh is None or fresh.outcome not in JUDGED_OUTCOMES:
        m.outcome = Outcome.FLAKY
        return
    kept = fresh.samples[warm_ups:] if len(fresh.samples) > warm_ups else fresh.samples
    m.samples.extend(kept)
    if new_process:
        m.rounds.append(len(kept))

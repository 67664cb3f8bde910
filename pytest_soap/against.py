"""`--soap-against REF`: measure a git ref side by side with the working tree, on this machine, in this run.

The working tree's tests run in the user's own session (the head side). REF is checked out into a
temporary git worktree and the same selection runs there in a fresh pytest process with the same
interpreter and options (the base side). Tests whose first figures cross their line are suspects;
they get rounds that alternate base and head, each in a fresh process, until the statistics decide
(see compare.judge_paired) or the round budget ends.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import compare
from .attribute import profiles_memory
from .measure.functions import Profile
from .records import GATED_METRICS, Measurement

# Runs of each suspect in each round's fresh processes, one base then one head per round. After the
# first, its 5 runs a side can reach p < 0.01, with two process pairs behind it, and most suspects are
# settled; the second is for those whose pairs disagree. Each round costs two process start-ups, on
# networkx's suite half a plain run, so the rounds are few and the runs in each many.
ROUND_REPEATS = (5, 3)
# What the rounds for tests that are not past their line may cost, as a share of one pass of the suite (the
# base pass's wall time). The two passes cost about two runs of the suite; with this, a gate that finds
# nothing past the line stays within two and a half.
ROUND_BUDGET = 0.5
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
    try:
        head = repo.head.commit.hexsha
    except ValueError:
        head = None
    return Ref(name, sha, Path(repo.working_tree_dir), head, repo.is_dirty(untracked_files=False))


@contextmanager
def worktree(ref: Ref):
    """REF checked out, detached, in a temporary folder; removed on every way out, Ctrl-C included."""
    import git

    repo = git.Repo(ref.repo_root)
    folder = Path(tempfile.mkdtemp(prefix="soap-ref-"))
    tree = folder / "tree"
    try:
        repo.git.worktree("add", "--detach", "--force", str(tree), ref.sha)
        yield tree
    finally:
        try:
            repo.git.worktree("remove", "--force", str(tree))
        except git.GitCommandError:
            pass  # never created, or already gone: the folder and `prune` below settle it
        shutil.rmtree(folder, ignore_errors=True)
        repo.git.worktree("prune")


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

    def run(self, args: list[str], work: Path, only: list[str] | None = None,
            repeat: int = 1) -> tuple[dict[str, Measurement], str | None]:
        """Measure in a fresh pytest process; the measurements, and what went wrong if it did not run.
        With `only`, the process collects just those tests' files (`args` then holds no paths of its own)."""
        self.runs += 1
        dump = work / f"{self.name}-{self.runs}.json"
        proc = self._pytest(args, work, only, [f"--soap-side={dump}"] + [f"--soap-repeat={repeat}"] * (repeat > 1))
        if not dump.exists():
            return {}, _why(proc)
        measured = {d["nodeid"]: Measurement.from_dict(d) for d in json.loads(dump.read_text(encoding="utf-8"))}
        if proc.returncode not in (0, 1) or (not measured and proc.returncode != 5):
            return measured, _why(proc)
        return measured, None

    def profile(self, args: list[str], work: Path, only: list[str]) -> dict[str, Profile]:
        """One profiled run of each test in `only`, in a fresh process; the profiles of those that ran."""
        self.runs += 1
        dump = work / f"{self.name}-{self.runs}.profiles.json"
        self._pytest(args, work, only, [f"--soap-profile={dump}"])
        if not dump.exists():
            return {}
        return {nodeid: Profile.from_dict(p) for nodeid, p in json.loads(dump.read_text(encoding="utf-8")).items()}

    def _pytest(self, args: list[str], work: Path, only: list[str] | None, extra: list[str]) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pytest", *args, "--soap", *extra, "-p", "no:cacheprovider"]
        if only is not None:
            only_file = work / f"{self.name}-{self.runs}.only"
            only_file.write_text("\n".join(only), encoding="utf-8")
            cmd.append(f"--soap-only={only_file}")
            cmd += sorted({str(self.rootdir / line.split("::")[0]) for line in only})
        return subprocess.run(cmd, cwd=self.cwd, env=self.env, capture_output=True, text=True)


def _why(proc: subprocess.CompletedProcess) -> str:
    """pytest's own account of a run that did not happen: the exception it printed, else its last error line."""
    lines = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
    exceptions = [line[1:].strip() for line in lines if line.startswith("E ")]
    errors = [line for line in lines if line.startswith("ERROR")]
    return f"pytest exited {proc.returncode}: {(exceptions or errors or lines or ['no output'])[-1]}"


@dataclass
class PairedRun:
    ref: Ref
    base: dict[str, Measurement] = field(default_factory=dict)
    rounds: int = 0
    problem: str | None = None  # why the ref could not be measured
    suspects: int = 0  # tests that got rounds
    profiles: dict[str, tuple[Profile, Profile]] = field(default_factory=dict)  # regressed: (head, base)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage: worktree, base, rounds


def measure_ref(ref: Ref, head: dict[str, Measurement], args: list[str], paths: list[str], invocation_dir: Path,
                rootdir: Path, thresholds: compare.Thresholds) -> PairedRun:
    """The base side's first pass, then rounds for the suspects; head measurements get the rounds' samples.
    `paths` are the test paths pytest took from `args`: rounds name the suspects' files instead."""
    run = PairedRun(ref)
    round_args = side_arguments(args, drop=tuple(paths))
    args = side_arguments(args)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        run.seconds[stage] = round(run.seconds.get(stage, 0.0) + now - clock, 3)
        clock = now

    with worktree(ref) as tree, tempfile.TemporaryDirectory(prefix="soap-sides-") as work_dir:
        lap("worktree")
        work = Path(work_dir)
        base_side, head_side = Side.base(tree, ref, invocation_dir, rootdir), Side.head(invocation_dir, rootdir)
        run.base, problem = base_side.run(args, work)
        lap("base")
        if problem:
            run.problem = f"the tests at {ref.name} did not run ({problem})"
            return run
        cost = RoundCost(head, run.base, run.seconds["base"])
        suspects = affordable_suspects(head, run.base, thresholds, cost)
        run.suspects = len(suspects)
        for repeat in ROUND_REPEATS:
            if not suspects or run.rounds and (run.seconds["rounds"] + cost(suspects, repeat)
                                               > ROUND_BUDGET * run.seconds["base"]):
                break  # a second round only within the budget: the first settles clear regressions
            run.rounds += 1
            for side, measured in ((base_side, run.base), (head_side, head)):
                fresh, problem = side.run(round_args, work, only=suspects, repeat=repeat)
                if problem:
                    run.problem = f"a confirming run on {side.label} failed ({problem})"
                    return run
                for nodeid in suspects:
                    _add_round(measured[nodeid], fresh.get(nodeid))
                lap("rounds")
            suspects = [n for n in suspects
                        if compare.paired_undecided(head[n], run.base[n], thresholds, run.rounds, len(ROUND_REPEATS))]
        # Attribution needs each regressed test's profile on both sides: one more run of it a side.
        verdicts = [compare.judge_paired(m, run.base[n], thresholds) for n, m in head.items() if n in run.base]
        regressed = [v.nodeid + "\tmemory" * profiles_memory(v.regressed_metrics) for v in verdicts if v.verdict == "regressed"]
        if regressed:
            head_profiles = head_side.profile(round_args, work, regressed)
            base_profiles = base_side.profile(round_args, work, regressed)
            run.profiles = {n: (head_profiles[n], base_profiles[n]) for n in head_profiles if n in base_profiles}
            lap("profiles")
    return run


@dataclass
class RoundCost:
    """What a round would cost, estimated from the first passes: each of its two processes starts up like
    the base pass did (its wall time less its tests' time), then runs each suspect `repeat` times."""

    head: dict[str, Measurement]
    base: dict[str, Measurement]
    pass_s: float

    @property
    def start_up(self) -> float:
        return max(self.pass_s - sum(m.figure("time_s") or 0 for m in self.base.values()), 0.0)

    def runs(self, nodeid: str, repeat: int) -> float:
        return repeat * ((self.head[nodeid].figure("time_s") or 0) + (self.base[nodeid].figure("time_s") or 0))

    def __call__(self, suspects: list[str], repeat: int) -> float:
        return 2 * self.start_up + sum(self.runs(n, repeat) for n in suspects)


def affordable_suspects(head: dict[str, Measurement], base: dict[str, Measurement], thresholds: compare.Thresholds,
                        cost: RoundCost) -> list[str]:
    """The tests that get rounds. Every test past its whole line towards a regression does, whatever it costs.
    A test past only half of it (a real regression that read low, or noise), or one that looks improved,
    does while its runs, and the round's start-ups if no test past the line pays them, cost at most
    ROUND_BUDGET of the base pass's wall time, the furthest from its base first. On networkx's suite a process's start-up is a third of a run, and 1.5 s tests drifting 5%
    tripled the gate's cost."""
    both = [n for n, m in head.items() if n in base and m.judged and base[n].judged]
    past_line = [n for n in both if compare.suspect_metrics(head[n], base[n].figures(), thresholds)]
    near_line = [n for n in both if n not in past_line and
                 compare.suspect_metrics(head[n], base[n].figures(), thresholds, True, compare.SUSPECT_MARGIN)]

    def distance(n: str) -> float:
        ratios = [h / b for h, b in ((head[n].figure(k), base[n].figure(k)) for k in GATED_METRICS) if h and b]
        return max((abs(math.log(r)) for r in ratios), default=0.0)

    # With suspects past the line there is a round anyway, and a test near it costs only its own runs.
    first = ROUND_REPEATS[0]
    budget = ROUND_BUDGET * cost.pass_s - (0.0 if past_line else cost([], first))
    chosen = list(past_line)
    for n in sorted(near_line, key=distance, reverse=True):
        if cost.runs(n, first) <= budget:
            chosen.append(n)
            budget -= cost.runs(n, first)
    return chosen


def _add_round(m: Measurement, fresh: Measurement | None) -> None:
    """Fold a round's runs into a test's measurement; a test that failed in a round is flaky."""
    if fresh is None or fresh.outcome not in ("passed", "xpassed"):
        m.outcome = "flaky"
        return
    m.samples.extend(fresh.samples)
    m.rounds.append(len(fresh.samples))

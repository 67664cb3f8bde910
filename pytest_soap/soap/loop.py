"""The SOAP loop for one target: profile, prompt, reply, candidate, verify, measure; keep the best.

Everything the model writes runs in a sandbox (a separate worktree, a subprocess with a time and a memory
limit, an environment without keys or tokens, behind a wall that stops anything of a kind the original's tests
never do), never in the user's tree. A candidate is kept only if the
covering tests pass with it, its calls behave as the original's where they happen, and it races the best so
far on the regressed tests to a significant gain in a goal metric, with no metric made worse.

Every time limit comes from what was measured: the gate's time for the covering tests sets the first, and
that first run's time sets the rest (see Budget).
"""

from __future__ import annotations

import difflib
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..compare import Line, Thresholds
from ..report.units import LABEL, ratio
from ..stats import mann_whitney_greater
from . import CandidateStatus, OptimizationStatus, Prior, Target, prompt
from .candidate import CandidateError, check_revision, extract_code, function_source, splice
from .llm import ModelError
from .profile import ProfileError, format_profile, profile_target
from .sandbox import RunStatus, Sandbox, SandboxError, Verified, memory_limit_mb, verify
from .verify import MAX_PAIRS, MIN_SAMPLE_S

MAX_TOKENS = 8192
MEMORY_MB = 4096  # a candidate's memory limit: far above a unit test's needs, far below the machine's
# The goal metrics of a gate's regressed metric: TMU is memory held over time, so either figure can lower it.
GOALS = {"time_s": ("time_s",), "peak_mb": ("peak_mb",), "tmu_mbs": ("time_s", "peak_mb")}
CONVERGED = 2  # rounds in a row of correct candidates with no further gain
# Time limits: a run may take FACTOR times what the same run of the original measured, plus SLACK_S for a busy
# machine. The first run's base is the gate's figure, which leaves out start-up, imports and collection.
FACTOR = 3.0
SLACK_S = 5.0
START_SLACK_S = 30.0
UNMEASURED_S = 300.0  # the first run's limit when nothing was measured (soap optimize on its own)
PROFILE_COST = 3.0  # a profiled run (line tracer, then memray) against a plain one
MIN_CHECK_S = 2.0  # the least time the check may spend on copies and the original's runs


@dataclass(frozen=True)
class Budget:
    """A stage's time limit and what it was derived from, to say when it is hit."""

    stage: str
    seconds: float
    basis: str

    def timed_out(self) -> str:
        return f"{self.stage} timed out after {self.seconds:.1f} s ({self.basis})"


def first_budget(measured_s: float | None) -> Budget:
    if measured_s is None:
        return Budget("the original's covering tests", UNMEASURED_S, "nothing was measured to scale it from")
    return Budget("the original's covering tests", FACTOR * measured_s + START_SLACK_S,
                  f"{FACTOR:g}x the {measured_s:.2f} s the gate measured for them, plus {START_SLACK_S:g} s for start-up")


def sampling_budget(first_s: float) -> float:
    """What the check may add to a run in copies and the original's runs: twice the original's whole run of the
    covering tests, at least MIN_CHECK_S, so that a round stays within its cost target (3x that run, plus 2 s)."""
    return max(MIN_CHECK_S, 2 * first_s)


def check_budget(first_s: float, race_s: float) -> Budget:
    """The check and race: the covering tests' run, the race's samples (each at least MIN_SAMPLE_S) and its
    memory runs, the time the check may add, and slack."""
    race = 2 * MAX_PAIRS * max(race_s, MIN_SAMPLE_S) + 2 * PROFILE_COST * race_s
    return Budget("the check and race", FACTOR * (first_s + race) + sampling_budget(first_s) + SLACK_S,
                  f"{FACTOR:g}x the original's run of the covering tests ({first_s:.2f} s) and the race's "
                  f"{2 * MAX_PAIRS} samples of the regressed tests ({race_s:.3f} s each), plus "
                  f"{sampling_budget(first_s) + SLACK_S:.1f} s")


def profile_budget(first_s: float) -> Budget:
    return Budget("the profile", FACTOR * PROFILE_COST * first_s + SLACK_S,
                  f"{FACTOR * PROFILE_COST:g}x the original's run of the covering tests ({first_s:.2f} s), plus {SLACK_S:g} s")


@dataclass
class Tried:
    """One round's candidate and what became of it."""

    iteration: int
    status: CandidateStatus
    reason: str
    time_ratio: float | None = None  # its time over the best's when it raced
    peak_ratio: float | None = None
    seconds: dict = field(default_factory=dict)  # the round's stages: model, check_and_race, profile
    revised: str | None = field(default=None, repr=False)  # the module with it, when it was kept


@dataclass
class Optimization:
    file: str
    qualname: str
    status: OptimizationStatus = OptimizationStatus.SKIPPED
    reason: str = ""
    tests: list[str] = field(default_factory=list)
    before: dict | None = None  # the original's figures on the regressed tests: time_s (a run of them), peak_mb
    after: dict | None = None  # the kept revision's, when one was kept
    behaviour: str = ""  # how the kept revision's behaviour was checked: its calls against the original's, or the tests alone
    sandbox: str = ""  # how the candidates were contained, one line (Sandbox.containment)
    capabilities: dict = field(default_factory=dict)  # what the original's tests did that the wall watches: key -> first such thing
    final_check: str = ""  # the kept revision's last check, with the whole patch in one tree (session.final_check)
    candidates: list[Tried] = field(default_factory=list)
    tokens: dict = field(default_factory=lambda: {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0})
    cost_usd: float | None = None
    checks: dict = field(default_factory=dict)  # the evidence: tests run and raced, calls compared, rounds, stage times
    reused: dict = field(default_factory=dict)  # an earlier run's revision kept as round 0: {"from", "tokens"}
    original: str = field(default="", repr=False)
    revised: str | None = field(default=None, repr=False)  # the module with the kept revision

    def diff(self) -> str:
        if self.revised is None:
            return ""
        return "".join(difflib.unified_diff(self.original.splitlines(keepends=True), self.revised.splitlines(keepends=True),
                                            f"a/{self.file}", f"b/{self.file}"))

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["original"], data["revised"]
        data["diff"] = self.diff()  # this revision alone, against the original: what `soap action` commits
        data["status"] = str(self.status)  # plain data: the statuses as plain strings
        for tried in data["candidates"]:
            del tried["revised"]
            tried["status"] = str(tried["status"])
        return data


def best_after(opt: Optimization, iteration: int) -> str:
    """The module as the loop kept it after `iteration` rounds (0: the original)."""
    kept = [c.revised for c in opt.candidates if c.iteration <= iteration and c.revised is not None]
    return kept[-1] if kept else opt.original


def optimize(target: Target, provider, model: str, iterations: int, metrics: list[str], evidence: str,
             thresholds: Thresholds = Thresholds(), progress: Callable[[str], None] = lambda line: None,
             profile_view: str = "both", task: str = "", prior: Prior | None = None) -> Optimization:
    """Run the loop on one target; never raises for a bad reply, a bad candidate or a failing API.
    `profile_view` is what the model sees of each profile (profile.VIEWS); `task`, what the code is for;
    `prior`, an earlier run's revision to re-verify as round 0 and to start from if it holds."""
    opt = Optimization(target.file, target.qualname, tests=list(target.tests))
    opt.original = (target.root / target.file).read_text(encoding="utf-8")
    goals = sorted({g for m in metrics for g in GOALS.get(m, ())}) or ["time_s", "peak_mb"]
    try:
        with Sandbox(target.root) as box:
            _loop(opt, target, box, provider, model, iterations, goals, evidence, thresholds, progress,
                  profile_view, task, prior)
    except SandboxError as e:
        opt.status, opt.reason = OptimizationStatus.SKIPPED, str(e)
    return opt


def _loop(opt: Optimization, target: Target, box: Sandbox, provider, model: str, iterations: int,
          goals: list[str], evidence: str, thresholds: Thresholds, progress: Callable[[str], None],
          profile_view: str, task: str, prior: Prior | None) -> None:
    # The first run takes every test it is given (from the gate: the session's passing tests), and those that
    # call the target, or a function the reply may revise, are its covering tests from then on.
    race = list(target.race_tests)
    budget = first_budget(target.measured_s)
    first = verify(box, target.file, target.qualname, list(target.tests), opt.original, None, race,
                   budget.seconds, MEMORY_MB, compete=False, watch=[target.qualname, *target.revisable])
    if first.run.status != RunStatus.PASSED:
        opt.reason = f"the original's tests do not pass in a clean copy of the tree: {_run_problem(first, budget)}"
        return
    opt.capabilities, opt.sandbox = dict(box.capabilities or {}), box.containment()  # the first run recorded them
    if first.problem:
        opt.reason = f"{target.qualname} cannot be checked where it runs: {first.problem}"
        return
    if not first.functions.get(target.qualname, {}).get("calls"):
        opt.reason = f"the covering tests never call {target.qualname}"
        return
    if not first.raced:
        opt.reason = f"none of the regressed tests ({', '.join(race)}) ran: there is nothing to measure a gain on"
        return
    race = [t for t in first.raced if t in first.callers]  # when none were named, the tests that call the target
    if not race:
        opt.reason = f"the regressed tests ({', '.join(first.raced)}) never call {target.qualname}"
        return
    tests = sorted(set(first.callers) | set(race)) if target.tests else []
    best_peak = (first.race or {}).get("peak_mb", {}).get("challenger")  # the original's, then each kept one's
    checking, profiling = check_budget(first.run.seconds, first.tests_s or 0.0), profile_budget(first.run.seconds)
    opt.checks = {"tests": tests, "raced": first.raced, "compared_calls": 0, "rounds": 0,
                  "seconds": {"first_run": round(first.run.seconds, 3)},
                  "limits": {"first_run": round(budget.seconds, 1), "check_and_race": round(checking.seconds, 1),
                             "profile": round(profiling.seconds, 1)}}

    def profile():
        """The line profile of the target as the sandbox holds it, under the candidates' limits; its text."""
        if profile_view == "none":  # the ablation without a profile: nothing to take
            return None, ""
        # On the regressed tests: where the time went in the regression is what the model needs, and the whole
        # covering suite under the line tracer was most of a round's cost on sqlparse (5.0 s of 8.9 s).
        taken = profile_target(box, target.file, target.qualname, race, profiling.seconds, MEMORY_MB)
        return taken, format_profile(taken, view=profile_view)

    started = time.perf_counter()
    try:
        original_lines, original_profile = profile()
    except ProfileError as e:
        opt.reason = f"could not profile {target.qualname}: {e}"
        return
    opt.checks["seconds"]["profile"] = round(time.perf_counter() - started, 3)
    best_text, best_code, best_profile = opt.original, None, None
    rejected: list[prompt.Rejected] = []
    stale = 0
    opt.status = OptimizationStatus.REJECTED
    calls = {name: f["calls"] for name, f in first.functions.items()}
    if prior is not None:
        # Round 0: the earlier run's revision, checked as any candidate is, on this tree. A later run must not
        # lose what an earlier one found because the model's replies were worse this time.
        progress(f"{target.key}: round 0, the revision an earlier run kept")
        started = time.perf_counter()
        try:
            check_revision(prior.revised, opt.original, target.qualname)
        except CandidateError as e:
            tried = Tried(0, CandidateStatus.REJECTED, str(e))
        else:
            tried = _check(prior.revised, 0, target, box, best_text, best_peak, tests, race, first.run.seconds, calls,
                           first.calls_by_test, checking, goals, thresholds, opt, earlier=prior.origin or "an earlier run")
        tried.seconds = {"check_and_race": round(time.perf_counter() - started, 3)}
        opt.candidates.append(tried)
        if tried.status == CandidateStatus.ACCEPTED:
            best_text, best_code = prior.revised, function_source(prior.revised, target.qualname)[0]
            best_peak = opt.after["peak_mb"]  # type: ignore[index]
            opt.reused = {"from": prior.origin, "tokens": prior.tokens}
        else:
            rejected.append(prompt.Rejected(0, f"the revision an earlier run kept, {tried.status}: {tried.reason}"))
            box.write(target.file, best_text)
    for iteration in range(1, iterations + 1):
        opt.checks["rounds"] = iteration
        seconds: dict[str, float] = {}
        if best_code is not None and best_profile is None:  # the kept revision's profile, for this prompt
            started = time.perf_counter()
            try:
                best_profile = profile()[1]
            except ProfileError as e:
                best_profile = f"(not profiled: {e})"
            seconds["profile"] = time.perf_counter() - started
        progress(f"{target.key}: round {iteration} of {iterations}, asking {model}")
        fixed, request = prompt.build(target.file, target.qualname, opt.original, tests, original_profile, evidence,
                                      best_code, best_profile, rejected, task, related=target.related,
                                      root=target.root, profile=original_lines)
        started = time.perf_counter()
        try:
            reply = provider.complete(prompt.SYSTEM, fixed, request, model, MAX_TOKENS)
        except ModelError as e:
            opt.candidates.append(Tried(iteration, CandidateStatus.FAILED, str(e)))
            if opt.revised is None:
                opt.status, opt.reason = OptimizationStatus.FAILED, str(e)
            break
        seconds["model"] = time.perf_counter() - started
        _count(opt, reply)
        started = time.perf_counter()
        try:
            candidate = splice(best_text, target.qualname, extract_code(reply.text), target.revisable)
        except CandidateError as e:
            tried = Tried(iteration, CandidateStatus.REJECTED, str(e))
        else:
            tried = _check(candidate, iteration, target, box, best_text, best_peak, tests, race, first.run.seconds,
                           calls, first.calls_by_test, checking, goals, thresholds, opt)
        seconds["check_and_race"] = time.perf_counter() - started
        tried.seconds = {stage: round(s, 3) for stage, s in seconds.items()}
        opt.candidates.append(tried)
        progress(f"{target.key}: round {iteration}: {tried.status}{': ' + tried.reason if tried.reason else ''}")
        if tried.status == CandidateStatus.ACCEPTED:  # _check has set opt.revised and opt.after, which mypy cannot see
            best_text, best_code, best_profile, stale = (opt.revised, extract_code(reply.text),  # type: ignore[assignment]
                                                         None, 0)
            best_peak = opt.after["peak_mb"]  # type: ignore[index]
        else:
            rejected.append(prompt.Rejected(iteration, f"{tried.status}: {tried.reason}"))
            stale = stale + 1 if tried.status == CandidateStatus.NO_GAIN else 0
        box.write(target.file, best_text)  # between rounds the sandbox holds the best: its profile is taken there
        if stale >= CONVERGED:
            break
    if opt.revised is not None:
        opt.status, opt.reason = OptimizationStatus.ACCEPTED, ""
    elif opt.status == OptimizationStatus.REJECTED and not opt.reason:
        opt.reason = "no candidate was correct and measurably cheaper"


def _run_problem(v: Verified, budget: Budget) -> str:
    if v.run.status == RunStatus.TIMEOUT:
        return budget.timed_out()
    if v.run.status == RunStatus.MEMORY:
        return f"exceeded the {memory_limit_mb(MEMORY_MB)} MiB memory limit"
    return v.run.reason


def behaviour(functions: dict[str, dict]) -> str:
    """How a candidate's behaviour was checked, in one line, from the check's tallies."""
    checked = {name: f["checked"] for name, f in functions.items() if f["checked"]}
    problems = [f["first_problem"] for f in functions.values() if f["first_problem"]]
    left = sum(f["uncopyable"] + f["too_big"] for f in functions.values())
    if not checked:
        why = problems[0] if problems else "the tests made no call that could be compared"
        return f"checked by the tests alone: {why}"
    line = "calls compared with the original's: " + ", ".join(f"{n} of {name}" for name, n in checked.items())
    return line + (f"; {left} not compared, as {problems[0]}" if left and problems else "")


def _check(candidate: str, iteration: int, target: Target, box: Sandbox, best_text: str, best_peak: float | None,
           tests: list[str], race: list[str], first_s: float, expected_calls: dict[str, int],
           calls_by_test: dict[str, int], budget: Budget, goals: list[str], thresholds: Thresholds,
           opt: Optimization, earlier: str = "") -> Tried:
    """Verify and race a candidate module; a kept one becomes opt.revised and opt.after. An `earlier` run's
    revision is kept when it is correct and made nothing worse: that run's race measured its gain, on the same
    source of the target, and a quiet race here must not undo it."""
    box.write(target.file, candidate)
    v = verify(box, target.file, target.qualname, tests, opt.original, best_text, race,
               budget.seconds, MEMORY_MB, thresholds.paired_alpha, champion_peak_mb=best_peak,
               check_budget_s=sampling_budget(first_s), expected_calls=expected_calls, calls_by_test=calls_by_test)
    if v.run.status == RunStatus.REFUSED:
        return Tried(iteration, CandidateStatus.REJECTED, f"the sandbox's wall stopped it: {v.run.reason}")
    if v.run.status != RunStatus.PASSED:
        return Tried(iteration, CandidateStatus.REJECTED, f"tests {v.run.status}: {_run_problem(v, budget)}")
    if v.mismatch:
        return Tried(iteration, CandidateStatus.REJECTED, f"differential check, different: {v.mismatch}")
    if v.problem or not v.race:
        return Tried(iteration, CandidateStatus.REJECTED, f"the race did not run: {v.problem or 'no regressed test was run'}")
    opt.checks["compared_calls"] = max(opt.checks.get("compared_calls", 0), v.checked)
    verdict = judge_race(v.race, goals, thresholds)
    tried = Tried(iteration, verdict.status, verdict.reason, verdict.time_ratio, verdict.peak_ratio)
    if earlier and not verdict.worse:
        gain = "" if verdict.status == CandidateStatus.ACCEPTED else \
            "; its gain was measured when it was found (this race found none significant)"
        tried = Tried(iteration, CandidateStatus.ACCEPTED, f"the earlier revision ({earlier}), re-verified: "
                      f"{verdict.figures}{gain}", verdict.time_ratio, verdict.peak_ratio)
    if opt.before is None:
        opt.before = verdict.champion
    if tried.status == CandidateStatus.ACCEPTED:
        opt.revised, opt.after, tried.revised = candidate, verdict.challenger, candidate
        opt.behaviour = behaviour(v.functions)
    return tried


@dataclass
class RaceVerdict:
    status: CandidateStatus  # accepted | no gain
    reason: str
    time_ratio: float
    peak_ratio: float | None
    champion: dict
    challenger: dict
    figures: str = ""  # the ratios, in words
    worse: bool = False  # a metric crossed its line the wrong way


def judge_race(race: dict, goals: list[str], thresholds: Thresholds) -> RaceVerdict:
    """The gate's rules, candidate against best: a gain is the line crossed the right way, with the
    Mann-Whitney U test at the gate's paired alpha for time (tracemalloc's peak is exact); any metric
    crossed the wrong way disqualifies it."""
    champion_t, challenger_t = race["time_s"]["champion"], race["time_s"]["challenger"]
    best_t, cand_t = statistics.median(champion_t), statistics.median(challenger_t)
    best_p, cand_p = race["peak_mb"]["champion"], race["peak_mb"]["challenger"]
    # Time has no floor: the race is one quiet process, and its statistics judge even a fast function.
    # Memory has the gate's: a dict that buys a 100x speed-up with 90 KiB more is no memory regression.
    time_line = Line(best_t, thresholds.limit("time_s"), 0.0)
    peak_line = Line(best_p, thresholds.limit("peak_mb"), thresholds.min_memory_mb)
    alpha = thresholds.paired_alpha
    gains = {"time_s": time_line.undercut_by(cand_t) and mann_whitney_greater(champion_t, challenger_t) <= alpha,
             "peak_mb": peak_line.undercut_by(cand_p)}
    worse = {"time_s": time_line.crossed_by(cand_t) and mann_whitney_greater(challenger_t, champion_t) <= alpha,
             "peak_mb": peak_line.crossed_by(cand_p)}
    time_ratio = cand_t / best_t if best_t > 0 else 1.0
    peak_ratio = cand_p / best_p if best_p > 0 else None
    figures = f"time {ratio(time_ratio)} the best" + (f", peak {ratio(peak_ratio)}" if peak_ratio is not None else "")
    champion, challenger = {"time_s": best_t, "peak_mb": best_p}, {"time_s": cand_t, "peak_mb": cand_p}
    if any(worse.values()):
        made_worse = " and ".join(LABEL[m] for m, w in worse.items() if w)
        return RaceVerdict(CandidateStatus.NO_GAIN, f"{figures}: {made_worse} made worse", time_ratio, peak_ratio,
                           champion, challenger, figures, worse=True)
    if any(gains[g] for g in goals):
        return RaceVerdict(CandidateStatus.ACCEPTED, figures, time_ratio, peak_ratio, champion, challenger, figures)
    return RaceVerdict(CandidateStatus.NO_GAIN, f"{figures}: no significant gain in {' or '.join(LABEL[g] for g in goals)}",
                       time_ratio, peak_ratio, champion, challenger, figures)


def _count(opt: Optimization, reply) -> None:
    opt.tokens["input"] += reply.input_tokens
    opt.tokens["output"] += reply.output_tokens
    opt.tokens["cache_read"] += reply.cache_read_tokens
    opt.tokens["cache_write"] += reply.cache_write_tokens
    cost = reply.cost_usd
    if cost is not None:
        opt.cost_usd = round((opt.cost_usd or 0.0) + cost, 6)

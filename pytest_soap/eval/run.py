"""Each problem through the SOAP loop, as the paper runs it, and every round scored on the hidden tests.

Per problem: the canonical solution is scored on the hidden tests (the reference of the normalised
metrics); the initial code is the record's `completion`, or the model writes it from the description; it
must pass the public tests, or the problem is counted as failing and not optimised. Then the loop runs on
`Solution.<method>` in a small git project of its own (the module, and the public tests as a pytest test),
with the task and the public tests in the prompt, and every round's best is scored on the hidden tests,
which the model never sees. Scoring is `exact` (score.py: warm, in-process, the heap) or `paper` (paper.py:
the paper's harness, a cold process per program and its RSS), by `Settings.metrics`.
"""

from __future__ import annotations

import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import git

from ..records import TextEnum
from ..report.units import mebibyte_seconds, mebibytes, seconds
from ..soap import OptimizationStatus, Target
from ..soap.candidate import CandidateError, extract_code
from ..soap.llm import ModelError
from ..soap.loop import MEMORY_MB, best_after, optimize
from . import TIMEOUT_S, paper
from .dataset import DatasetError, Problem, module, program, with_tests
from .score import REPEAT, Score, score_all

MODULE, TEST = "solution.py", "test_public.py"
TOKENS = ("input", "output", "cache_read", "cache_write")
# How programs are scored (--metrics), each with the one-line definition every table and eval.json carries.
METRICS = {
    "exact": "warm and in-process: ET the median of warm runs, MU the heap's peak and TMU the area under the heap "
             "(memray, every 1 ms)",
    "paper": "the paper's harness: a cold process per program, its RSS sampled by memory_profiler every 1 ms; ET "
             f"first to last sample, MU the largest, TMU the trapezoid area; {paper.TIMEOUT_S:g} s timeout, the "
             f"first {paper.TEST_LINES} lines of tests",
}

WRITE_SYSTEM = """\
You write correct, efficient Python solutions to programming tasks.
Reply with the complete solution, `class Solution` and its method, in one fenced ```python block."""


@dataclass
class Settings:
    model: str
    iterations: int = 5
    profile: str = "both"
    timeout_s: float = TIMEOUT_S
    memory_mb: int = MEMORY_MB
    descriptions: str = "description"  # the records' field(s) the task descriptions came from
    metrics: str = "exact"  # how programs are scored: a key of METRICS


class ProblemStatus(TextEnum):
    """What became of a problem (ProblemResult.status)."""

    OPTIMISED = "optimised"  # the loop ran on it (whatever it kept)
    FAILING = "failing"  # the initial code fails its public tests
    BROKEN = "broken"  # the problem is unsound: the canonical solution fails, or the record is incomplete


@dataclass
class ProblemResult:
    idx: int
    name: str
    status: ProblemStatus
    reason: str = ""
    canonical: Score | None = None
    rounds: list[Score] = field(default_factory=list)  # [0]: the initial code; [k]: the best after round k
    loop: dict | None = None  # the loop's record: each round's candidate and what became of it
    tokens: dict = field(default_factory=lambda: dict.fromkeys(TOKENS, 0))
    cost_usd: float | None = None  # an estimate from list prices, as the loop's; None when the model has none
    final_code: str | None = field(default=None, repr=False)

    def spend(self, tokens: dict, cost_usd: float | None) -> None:
        for key in TOKENS:
            self.tokens[key] += tokens.get(key, 0)
        if cost_usd is not None:
            self.cost_usd = round((self.cost_usd or 0.0) + cost_usd, 6)

    def to_dict(self) -> dict:
        return {"idx": self.idx, "name": self.name, "status": str(self.status), "reason": self.reason,
                "canonical": self.canonical.to_dict() if self.canonical else None,
                "rounds": [s.to_dict() for s in self.rounds], "loop": self.loop, "tokens": self.tokens,
                "cost_usd": self.cost_usd, "final_code": self.final_code}


def evaluate(problems: list[Problem], provider, settings: Settings,
             progress: Callable[[str], None] = lambda line: None) -> list[ProblemResult]:
    results = []
    for number, problem in enumerate(problems, 1):
        progress(f"[{number}/{len(problems)}] problem {problem.idx} ({problem.name})")
        result = evaluate_problem(problem, provider, settings, progress)
        progress(f"[{number}/{len(problems)}] problem {problem.idx}: {_summary(result)}")
        results.append(result)
    return results


def evaluate_problem(problem: Problem, provider, settings: Settings,
                     progress: Callable[[str], None] = lambda line: None) -> ProblemResult:
    result = ProblemResult(problem.idx, problem.name, ProblemStatus.OPTIMISED)
    try:
        method = problem.method
    except DatasetError as e:
        result.status, result.reason = ProblemStatus.BROKEN, str(e)
        return result
    initial = problem.completion
    hidden, public_tests = tests(problem.hidden_tests, settings), tests(problem.public_tests, settings)
    canonical = with_tests(module(problem.canonical), hidden)
    # First, one run each: the canonical solution must pass its hidden tests, the initial code its public ones.
    public_run = [program(initial, public_tests)] if initial is not None else []
    checks = scores_of([canonical, *public_run], settings, repeat=1)
    result.canonical = checks[0]
    if not result.canonical.passed:
        result.status, result.reason = ProblemStatus.BROKEN, f"the canonical solution fails its hidden tests: {result.canonical.reason}"
        return result
    if initial is not None:
        public = checks[1]
    else:  # only now, when the problem is known to be sound, is the model asked
        initial, why = write_initial(problem, provider, settings.model, result)
        public = (scores_of([program(initial, public_tests)], settings, repeat=1)[0]
                  if initial is not None else Score(False, why))
    if not public.passed or initial is None:  # no initial code has failed already
        result.status, result.reason = ProblemStatus.FAILING, f"the initial code fails its public tests: {public.reason}"
        result.rounds = [Score(False, public.reason)] * (settings.iterations + 1)
        return result
    with tempfile.TemporaryDirectory(prefix="soap-eval-") as tmp:
        root = project(Path(tmp), module(initial), problem.public_tests)
        target = Target(root, MODULE, f"Solution.{method}", (f"{TEST}::test_public",))
        opt = optimize(target, provider, settings.model, settings.iterations, ["tmu_mbs"],
                       evidence(public, settings.profile, settings.metrics), profile_view=settings.profile,
                       task=task_text(problem), progress=progress)
    result.spend(opt.tokens, opt.cost_usd)
    result.loop = opt.to_dict()
    if opt.status not in (OptimizationStatus.ACCEPTED, OptimizationStatus.REJECTED):  # the loop could not run: say why
        result.reason = f"the loop {opt.status}: {opt.reason}"
    # Every round's best on the hidden tests, with the canonical solution: in one process when exact (see score.py).
    bests = [best_after(opt, k) for k in range(settings.iterations + 1)]
    distinct = list(dict.fromkeys(bests))
    scores = scores_of([canonical] + [with_tests(text, hidden) for text in distinct], settings)
    result.canonical = scores[0]
    if not result.canonical.passed:  # it passed a moment ago: the machine, not the solution
        result.status, result.reason = ProblemStatus.BROKEN, f"the canonical solution's scoring run failed: {result.canonical.reason}"
        return result
    result.rounds = [scores[1 + distinct.index(text)] for text in bests]
    result.final_code = bests[-1]
    return result


def tests(text: str, settings: Settings) -> str:
    """The tests a program runs: all of them, or in paper mode the harness's first 100 lines."""
    return paper.first_lines(text) if settings.metrics == "paper" else text


def scores_of(programs: list[str], settings: Settings, repeat: int = REPEAT) -> list[Score]:
    if settings.metrics == "paper":  # the harness's 10 s, or a shorter --timeout
        return paper.score_all(programs, min(settings.timeout_s, paper.TIMEOUT_S), settings.memory_mb)
    return score_all(programs, settings.timeout_s, settings.memory_mb, repeat)


def write_initial(problem: Problem, provider, model: str, result: ProblemResult) -> tuple[str | None, str]:
    """The model's first solution from the description, as the paper's round 0; None and why on failure."""
    request = (f"{task_text(problem)}\n\nWrite `class Solution` with the method `{problem.method}` "
               "that the tests call.")
    try:
        reply = provider.complete(WRITE_SYSTEM, "", request, model, 4096)
        result.spend({"input": reply.input_tokens, "output": reply.output_tokens, "cache_read": reply.cache_read_tokens,
                      "cache_write": reply.cache_write_tokens}, reply.cost_usd)
        return extract_code(reply.text), ""
    except (ModelError, CandidateError) as e:
        return None, f"no initial code: {e}"


def task_heading(problem: Problem) -> str:
    """The first line of every request about the problem (the offline server finds the problem by it)."""
    return f"Task: problem {problem.idx} ({problem.name})."


def task_text(problem: Problem) -> str:
    """The task as the model reads it: the paper's prompt carries the description and the public tests."""
    return (f"{task_heading(problem)}\n\n{problem.description.strip()}\n\n"
            f"The public tests, which the solution must pass (`solution = Solution()` runs first):\n\n"
            f"```python\n{problem.public_tests.strip()}\n```")


def evidence(public: Score, view: str, metrics: str = "exact") -> str:
    """The paper's totals (ET, peak, TMU), which every ablation but `none` shows the model."""
    if view == "none":
        return "not shown"
    peak = "a peak resident memory (the whole process's)" if metrics == "paper" else "a peak heap"
    return (f"the initial code on the public tests took {seconds(public.time_s)}, with {peak} of "
            f"{mebibytes(public.peak_mb)} and a total memory usage of {mebibyte_seconds(public.tmu_mbs)}")


def project(where: Path, module_text: str, public_tests: str) -> Path:
    """A git project holding the module and its public tests as one pytest test, for the loop's sandbox."""
    root = where / "project"
    root.mkdir()
    (root / MODULE).write_text(module_text, encoding="utf-8")
    body = textwrap.indent(public_tests.strip(), "    ")
    (root / TEST).write_text(f"from solution import *\n\n\ndef test_public():\n    solution = Solution()\n{body}\n",
                             encoding="utf-8")
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\npythonpath = [\".\"]\n", encoding="utf-8")
    repo = git.Repo.init(root)
    repo.index.add([MODULE, TEST, "pyproject.toml"])
    author = git.Actor("soap eval", "soap-eval@localhost")
    repo.index.commit("the initial code", author=author, committer=author)
    repo.close()
    return root


def _summary(result: ProblemResult) -> str:
    if result.status != ProblemStatus.OPTIMISED:
        return f"{result.status}: {result.reason}"
    first, last = result.rounds[0], result.rounds[-1]
    if not (first.passed and last.passed):
        return f"hidden tests: round 0 {'passed' if first.passed else 'failed'}, last round {'passed' if last.passed else 'failed'}"
    return f"ET {seconds(first.time_s)} → {seconds(last.time_s)}, TMU {mebibyte_seconds(first.tmu_mbs)} → {mebibyte_seconds(last.tmu_mbs)}"



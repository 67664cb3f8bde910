"""The SOAP loop: profile a function line by line, ask a model for a cheaper revision, keep it only if it
still behaves the same and measures cheaper. One module per step: profile, prompt, llm, candidate,
sandbox (verify), loop."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..records import TextEnum

# The newest Sonnet-class model in the anthropic SDK's model list (anthropic.types.Model): Sonnet-class
# because the loop makes many rounds per function and needs code quality at a moderate price; not
# claude-sonnet-4-5, which is in the SDK's DEPRECATED_MODELS table and reaches end of life on 2026-11-30.
# --soap-model overrides it.
DEFAULT_MODEL = "claude-sonnet-5-5"
# The model APIs the loop can ask (--soap-provider; llm.provider_for builds each), the default first. Named
# here, with no SDK imported, so that the options, the CLI and the action can offer them.
PROVIDERS = ("anthropic", "openai")



# The loop's statuses live here, not in loop.py, so that the reports, the action and the demo can read them
# without importing the loop (and with it the model's SDK).

class OptimizationStatus(TextEnum):
    """What became of a target (loop.Optimization.status)."""

    ACCEPTED = "accepted"  # a revision was kept
    REJECTED = "rejected"  # the loop ran, and kept nothing: no candidate was correct and cheaper, or the final check failed
    SKIPPED = "skipped"  # the loop could not run on it (not Python, not called, the original's tests fail...)
    FAILED = "failed"  # the model's API failed before anything was kept


class CandidateStatus(TextEnum):
    """What became of one round's candidate (loop.Tried.status, loop.RaceVerdict.status)."""

    ACCEPTED = "accepted"  # correct, and it won the race: the new best
    NO_GAIN = "no gain"  # correct, but no significant gain in a goal metric, or a metric made worse
    REJECTED = "rejected"  # not spliced, stopped by the wall, failed the tests or the differential check
    FAILED = "failed"  # the model's API failed: no candidate


@dataclass(frozen=True)
class Related:
    """Another function on the regressed path, from the gate's attribution: shown to the model (its source when
    it holds a few percent or more of the regression, else its signature), and revisable with the target when
    it is in the target's file."""

    file: str  # relative to the root, forward slashes
    qualname: str
    share: float = 0.0  # the part of the regression it holds, 0..1 (0 when unknown)
    changed: bool = False  # whether the diff changed it


@dataclass(frozen=True)
class Target:
    """A function to optimise: where it is, and the tests that exercise it."""

    root: Path  # the repository's root, absolute
    file: str  # the module's path relative to root, with forward slashes
    qualname: str  # "function" or "Class.method"
    tests: tuple[str, ...] = field(default=())  # pytest node ids, relative to root: the covering tests
    race: tuple[str, ...] = field(default=())  # the regressed tests, where a gain is measured; () means all of tests
    related: tuple[Related, ...] = field(default=())  # the rest of the regression: callers, callees, changed helpers
    measured_s: float | None = None  # the covering tests' time as the gate measured it: the first time limit's base

    @property
    def key(self) -> str:
        return f"{self.file}::{self.qualname}"

    @property
    def race_tests(self) -> tuple[str, ...]:
        return self.race or self.tests

    @property
    def revisable(self) -> tuple[str, ...]:
        """The functions of the target's file that a reply may revise besides the target."""
        return tuple(r.qualname for r in self.related if r.file == self.file and r.qualname != self.qualname)


@dataclass(frozen=True)
class Prior:
    """A revision an earlier run kept (`--soap-prior`, which `soap action` writes from its branch's commits):
    the loop re-verifies it before its first round, and keeps it unless a new candidate beats it."""

    file: str
    qualname: str
    revised: str  # the whole module: this tree's text with the earlier revision merged in
    origin: str = ""  # where it came from, for the report: the commit that holds it
    tokens: int = 0  # what the runs that found it spent: input, cached or not, and output

    @property
    def key(self) -> str:
        return f"{self.file}::{self.qualname}"


PRIOR_SCHEMA = 1


def write_priors(path: Path, priors: list[Prior]) -> None:
    path.write_text(json.dumps({"schema": PRIOR_SCHEMA, "revisions": [vars(p) for p in priors]}), encoding="utf-8")


def read_priors(path: Path) -> dict[str, Prior]:
    """The revisions in a --soap-prior file, by target key; ValueError, in one line, for a file that is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"--soap-prior {path} cannot be read: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"--soap-prior {path} is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != PRIOR_SCHEMA or not isinstance(data.get("revisions"), list):
        raise ValueError(f"--soap-prior {path} is not a file of earlier revisions (schema {PRIOR_SCHEMA})")
    priors = {}
    for n, entry in enumerate(data["revisions"]):
        try:
            prior = Prior(**entry)
        except TypeError:
            raise ValueError(f"--soap-prior {path}: revision {n} is not file, qualname and revised text") from None
        if not all(isinstance(v, str) for v in (prior.file, prior.qualname, prior.revised)):
            raise ValueError(f"--soap-prior {path}: revision {n} is not file, qualname and revised text")
        priors[prior.key] = prior
    return priors

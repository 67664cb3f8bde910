"""The SOAP loop: profile a function line by line, ask a model for a cheaper revision, keep it only if it
still behaves the same and measures cheaper. One module per step: profile, prompt, llm, candidate,
sandbox (verify), loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The newest Sonnet-class model in the anthropic SDK's model list (anthropic.types.Model): Sonnet-class
# because the loop makes many rounds per function and needs code quality at a moderate price; not
# claude-sonnet-4-5, which is in the SDK's DEPRECATED_MODELS table and reaches end of life on 2026-11-30.
# --soap-model overrides it.
DEFAULT_MODEL = "claude-sonnet-5-5"


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

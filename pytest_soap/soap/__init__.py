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
class Target:
    """A function to optimise: where it is, and the tests that exercise it."""

    root: Path  # the repository's root, absolute
    file: str  # the module's path relative to root, with forward slashes
    qualname: str  # "function" or "Class.method"
    tests: tuple[str, ...] = field(default=())  # pytest node ids, relative to root

    @property
    def key(self) -> str:
        return f"{self.file}::{self.qualname}"

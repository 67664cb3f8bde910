"""What an optimisation branch was built from, so that the next run on the pull request does no work twice
and never loses a revision it had.

`soap action` commits each kept revision on `soap/<head branch>` as a commit of its own, whose trailers say
what it was built from: the target, a hash of the target's source as the loop found it, the pull request's
head and base commits, the model tokens it cost and its before and after figures. The next run reads them
back (`read_branch`): on the same head and base it reuses them as they are; after a new push, each revision
whose target's source is unchanged is merged into the new tree (`seed`) and handed to the loop as its round 0.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

from ..soap.candidate import CandidateError, function_source

TARGET, SOURCE, HEAD, BASE, TOKENS, BEFORE, AFTER = (
    "Soap-Target", "Soap-Source", "Soap-Head", "Soap-Base", "Soap-Tokens", "Soap-Before", "Soap-After")
FIGURE = re.compile(r"(\w+)=([-+0-9.eE]+)")


@dataclass(frozen=True)
class Built:
    """One commit of an optimisation branch: one kept revision and what it was built from."""

    commit: str
    parent: str
    file: str
    qualname: str
    source: str  # "sha256:<hex>" of the target's source, as the loop found it
    head: str  # the pull request's head and base when it was built
    base: str
    tokens: int  # model tokens (input, cached or not, and output) spent on it, by every run that led to it
    before: dict  # the figures of the regressed tests: time_s, peak_mb
    after: dict

    @property
    def key(self) -> str:
        return f"{self.file}::{self.qualname}"

    def as_optimization(self) -> dict:
        """The report's entry for it when it is reused as it is (same head and base)."""
        return {"file": self.file, "qualname": self.qualname, "status": "accepted", "reason": "",
                "before": self.before, "after": self.after, "candidates": [],
                "reused": {"from": f"commit {self.commit[:12]}", "tokens": self.tokens},
                "tokens": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}}


def source_hash(module_text: str, qualname: str) -> str | None:
    """The hash of the target's source (decorators to its last line); None where it is not a target here."""
    try:
        text = function_source(module_text, qualname)[0]
    except (CandidateError, SyntaxError, ValueError):
        return None
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def message(o: dict, source: str, head: str, base: str, tokens: int) -> str:
    """The commit message of one kept revision: a subject, its figures, and the trailers read_branch reads."""
    before, after = o.get("before") or {}, o.get("after") or {}
    figures = [f"{m}: {before[m]:.6g} -> {after[m]:.6g}" for m in ("time_s", "peak_mb")
               if before.get(m) is not None and after.get(m) is not None]
    return "\n".join([
        f"pytest-soap: optimise {o['qualname']} in {o['file']}", "",
        "On the regressed tests, " + ("; ".join(figures) or "no figures") + ".", "",
        f"{TARGET}: {o['file']}::{o['qualname']}",
        f"{SOURCE}: {source}",
        f"{HEAD}: {head}",
        f"{BASE}: {base}",
        f"{TOKENS}: {tokens}",
        f"{BEFORE}: {_figures_text(before)}",
        f"{AFTER}: {_figures_text(after)}",
    ]) + "\n"


def _figures_text(figures: dict) -> str:
    return " ".join(f"{m}={v!r}" for m, v in figures.items() if isinstance(v, (int, float))) or "none"


def read_branch(repo: git.Repo, tip: str) -> list[Built]:
    """The revisions on the branch at `tip`, oldest first: its first-parent commits back to the first one
    that pytest-soap did not make (the head it was built on)."""
    found = []
    for commit in repo.iter_commits(tip, first_parent=True):
        trailers = {key: values[-1] for key, values in commit.trailers_dict.items()}  # git interpret-trailers
        file, _, qualname = trailers.get(TARGET, "").partition("::")
        if not (file and qualname and commit.parents):
            break
        try:
            tokens = int(trailers.get(TOKENS, "0"))
        except ValueError:
            tokens = 0
        found.append(Built(commit.hexsha, commit.parents[0].hexsha, file, qualname, trailers.get(SOURCE, ""),
                           trailers.get(HEAD, ""), trailers.get(BASE, ""), tokens,
                           _figures(trailers.get(BEFORE, "")), _figures(trailers.get(AFTER, ""))))
    return found[::-1]


def _figures(text: str) -> dict:
    return {m: float(v) for m, v in FIGURE.findall(text)}


def seed(repo: git.Repo, built: Built, ours: str) -> str | None:
    """`ours` (the module as this run has it) with the built revision's change merged in, three ways: the
    revision's commit against its parent, so that another revision of the same file stays out. None when
    the change does not merge cleanly."""
    parent = _show(repo, built.parent, built.file)
    theirs = _show(repo, built.commit, built.file)
    if parent is None or theirs is None:
        return None
    if ours == parent:
        return theirs
    with tempfile.TemporaryDirectory(prefix="soap-seed-") as scratch:
        paths = []
        for name, text in (("ours", ours), ("base", parent), ("theirs", theirs)):
            path = Path(scratch) / name
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
        try:
            return repo.git.merge_file("-p", "-q", *paths, strip_newline_in_stdout=False)
        except git.GitCommandError:
            return None  # conflicts: the push changed the lines around the revision


def _show(repo: git.Repo, commit: str, file: str) -> str | None:
    try:
        return repo.git.show(f"{commit}:{file}", strip_newline_in_stdout=False)
    except git.GitCommandError:
        return None

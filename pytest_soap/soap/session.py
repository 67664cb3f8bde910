"""`--soap-optimize`: from the gate's attributions to the loop's targets, then the patch and `--soap-apply`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..attribute import Attribution
from ..compare import TestVerdict, Thresholds
from ..report.units import LABEL, ratio
from ..store import atomic_write
from . import Target
from .loop import Optimization, optimize

PATCH = Path(".soap") / "optimized.patch"


@dataclass
class Planned:
    target: Target
    metrics: list[str]  # what regressed in its tests: the loop's goals
    evidence: str  # what the gate measured, for the prompt


@dataclass
class LoopRun:
    optimizations: list[Optimization] = field(default_factory=list)
    patch: Path | None = None
    notes: list[str] = field(default_factory=list)


def plan(attributions: list[Attribution], verdicts: dict[str, TestVerdict], root: Path) -> list[Planned]:
    """One target per function that some regressed test names first, with every test that names it first."""
    first: dict[tuple[str, str], list[str]] = {}
    for a in attributions:
        if a.causes:
            first.setdefault((a.causes[0].file, a.causes[0].qualname), []).append(a.nodeid)
    planned = []
    for (file, qualname), tests in first.items():
        metrics = sorted({m for t in tests for m in verdicts[t].regressed_metrics})
        evidence = "; ".join(f"{t}: " + ", ".join(f"{LABEL[m]} {ratio(verdicts[t].metrics[m].ratio)}"
                                                   for m in verdicts[t].regressed_metrics) for t in tests)
        planned.append(Planned(Target(root, file, qualname, tuple(tests)), metrics, evidence))
    return planned


def run(planned: list[Planned], provider, model: str, iterations: int, thresholds: Thresholds, root: Path,
        apply: bool, progress) -> LoopRun:
    result = LoopRun()
    for p in planned:
        result.optimizations.append(optimize(p.target, provider, model, iterations, p.metrics, p.evidence,
                                             thresholds, progress))
    patch = "".join(o.diff() for o in result.optimizations)
    if patch:
        result.patch = root / PATCH
        atomic_write(result.patch, patch)
    if apply:
        applied: dict[str, str] = {}  # file -> its text with the revisions written so far
        result.notes += [note for o in result.optimizations if o.revised is not None
                         if (note := apply_revision(root, o, applied))]
    return result


def apply_revision(root: Path, o: Optimization, applied: dict[str, str] | None = None) -> str | None:
    """Write a kept revision into the working tree, atomically, and only over the text the loop started
    from (or, for a second function of the same file, over that text with the earlier revisions of this
    run, which each loop started from too: the revision is then merged by `git apply`); a note otherwise."""
    applied = {} if applied is None else applied
    path = root / o.file
    current = path.read_text(encoding="utf-8")
    if current == o.original:
        text = o.revised
    elif current == applied.get(o.file):
        text = _merged(root, o)
        if text is None:
            return f"{o.file}: the revision of {o.qualname} overlaps an earlier one: it is in {PATCH} only"
    else:
        return f"{o.file} changed while the loop ran: its revision is in {PATCH} only"
    atomic_write(path, text)
    applied[o.file] = text
    return None


def _merged(root: Path, o: Optimization) -> str | None:
    """The file with o's diff (made against the original) applied by git, which allows for the lines
    earlier revisions moved; None when it does not apply. The file itself is left as it was."""
    import git

    with tempfile.TemporaryDirectory(prefix="soap-apply-") as scratch:
        copy = Path(scratch) / o.file
        copy.parent.mkdir(parents=True)
        copy.write_text((root / o.file).read_text(encoding="utf-8"), encoding="utf-8")
        diff = Path(scratch) / "revision.patch"
        diff.write_text(o.diff(), encoding="utf-8")
        try:
            git.Git(scratch).apply(str(diff))
        except git.GitCommandError:
            return None
        return copy.read_text(encoding="utf-8")

"""`--soap-optimize`: from the gate's attributions to the loop's targets, then the patch and `--soap-apply`."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from ..attribute import Attribution
from ..compare import TestVerdict, Thresholds
from ..report.units import LABEL, ratio
from ..store import atomic_write
from . import OptimizationStatus, Prior, Related, Target
from .candidate import CandidateError, enclosing, locate
from .loop import MEMORY_MB, UNMEASURED_S, Optimization, optimize
from .sandbox import RunStatus, Sandbox, SandboxError, run_pytest

PATCH = Path(".soap") / "optimized.patch"


@dataclass
class Planned:
    """A regression to repair: the functions to try, most to blame first. The loop goes on to the next while
    the one it tried was skipped (it could not be optimised: absent, a C extension, never called...)."""

    target: Target  # the first to try
    metrics: list[str]  # what regressed in its tests: the loop's goals
    evidence: str  # what the gate measured, for the prompt
    fallbacks: list[Target] = field(default_factory=list)  # the next ones, in turn

    @property
    def alternatives(self) -> list[Target]:
        return [self.target, *self.fallbacks]


@dataclass
class LoopRun:
    optimizations: list[Optimization] = field(default_factory=list)  # every target tried, the skipped ones too
    patch: Path | None = None
    notes: list[str] = field(default_factory=list)


def plan(attributions: list[Attribution], verdicts: dict[str, TestVerdict], root: Path,
         changed: Sequence[tuple[str, str]] = (), passed: dict[str, float] | None = None) -> list[Planned]:
    """One plan per function that some regressed tests blame most, with those tests. Its alternatives are every
    function their causes name (a nested one as the function that defines it): the changed ones first, then the
    unchanged, each most to blame first. Each target carries the others as its related functions, and every
    function the diff `changed` in its file too: a fix often rewrites a changed function the profiles left
    out (on sqlparse, TokenList.group_tokens beside the blamed TokenList.__init__). With `passed` (the node ids
    of the session's tests that passed, and their time in the gate's run), they are the targets' covering tests:
    the loop's first run finds which of them call the target, and its measured time is theirs. A wrong revision
    of sqlparse's TokenList.__init__ differed only on calls from another test file than the regressed test's."""
    groups: dict[tuple[str, str], list[Attribution]] = {}
    blamed = {a.nodeid: _blamed(a) for a in attributions}
    for a in attributions:
        if blamed[a.nodeid]:
            groups.setdefault(next(iter(blamed[a.nodeid])), []).append(a)
    planned = []
    for first, group in groups.items():
        tests = [a.nodeid for a in group]
        parts: dict[tuple[str, str], tuple[float, bool]] = {}  # the most a test blames on it, and if it changed
        for a in group:
            for key, (share, was_changed) in blamed[a.nodeid].items():
                before = parts.get(key, (0.0, False))
                parts[key] = max(before[0], share), before[1] or was_changed
        order = [first, *sorted((k for k in parts if k != first), key=lambda k: (not parts[k][1], -parts[k][0]))]
        related = {k: Related(*k, *parts[k]) for k in order if k[0].endswith(".py")}
        for key in changed:
            if key not in related and key[0].endswith(".py") and "<locals>" not in key[1]:
                related[key] = Related(*key, 0.0, True)
        measured = [verdicts[t].measurement.figure("time_s") for t in tests]
        covering = tuple(tests)
        if passed:
            covering = tuple(dict.fromkeys([*tests, *passed]))
            measured = [passed.get(t, verdicts[t].measurement.figure("time_s")) if t in verdicts else passed[t]
                        for t in covering]
        known = [s for s in measured if s is not None]
        measured_s = sum(known) if len(known) == len(measured) else None
        targets = [Target(root, file, qualname, tests=covering, race=tuple(tests),
                          related=tuple(r for k, r in related.items() if k != (file, qualname)
                                        and (k in parts or k[0] == file)),
                          measured_s=measured_s)
                   for file, qualname in order]
        metrics = sorted({m for t in tests for m in verdicts[t].regressed_metrics})
        evidence = "; ".join(f"{t}: " + ", ".join(f"{LABEL[m]} {ratio(verdicts[t].metrics[m].ratio)}"
                                                   for m in verdicts[t].regressed_metrics) for t in tests)
        planned.append(Planned(targets[0], metrics, evidence, targets[1:]))
    return planned


def _blamed(a: Attribution) -> dict[tuple[str, str], tuple[float, bool]]:
    """(file, qualname) -> (its share of the test's regression, whether it changed), most to blame first: the
    changed functions, then the unchanged. A nested function counts as the function that defines it, and an
    unchanged callee whose rise went to its changed caller (no share of its own) by that rise."""
    parts: dict[tuple[str, str], tuple[float, bool]] = {}
    for c in a.causes:
        share = c.share if not c.within else (c.delta_cum_s / a.whole if a.whole > 0 else 0.0)
        key = (c.file, enclosing(c.qualname))
        before = parts.get(key, (0.0, False))
        parts[key] = before[0] + share, before[1] or c.changed  # a nested function's part is its encloser's
    return dict(sorted(parts.items(), key=lambda item: (not item[1][1], -item[1][0])))


def unrevisable(target: Target) -> str | None:
    """Why the loop cannot take this target, in one line, seen before it starts; None when it can."""
    if not target.file.endswith(".py"):
        return f"{target.file} is not Python source (a C extension?): the loop revises Python functions"
    try:
        source = (target.root / target.file).read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{target.file} is not in the working tree: deleted or moved on this side"
    except (OSError, UnicodeDecodeError) as e:
        return f"{target.file} cannot be read: {e}"
    try:
        locate(source, target.qualname, where=target.file)
    except CandidateError as e:
        return str(e)
    return None


def run(planned: list[Planned], provider, model: str, iterations: int, thresholds: Thresholds, root: Path,
        apply: bool, progress, priors: Mapping[str, Prior] = {}) -> LoopRun:
    """Each plan's alternatives in turn until the loop takes one (its result is not "skipped"); a function
    that several plans name is run once. A target with a revision in `priors` starts from it (loop.optimize),
    and is run even when an alternative before it was taken."""
    result = LoopRun()
    tried: set[str] = set()
    for p in planned:
        taken = False
        for target in p.alternatives:
            # Past the one the loop took, only those with an earlier revision: a later run must not lose it.
            if target.key in tried or (taken and target.key not in priors):
                continue
            tried.add(target.key)
            why = unrevisable(target)
            o = (Optimization(target.file, target.qualname, OptimizationStatus.SKIPPED, why, list(target.tests))
                 if why else optimize(target, provider, model, iterations, p.metrics, p.evidence, thresholds, progress,
                                   prior=priors.get(target.key)))
            result.optimizations.append(o)
            if o.status == OptimizationStatus.SKIPPED:
                progress(f"{target.key}: skipped: {o.reason}")
            taken = taken or o.status != OptimizationStatus.SKIPPED
    if any(o.revised is not None for o in result.optimizations):
        progress("the final check: the kept revisions' covering tests, all revisions in one tree, behind the wall")
        final_check(root, result.optimizations)
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
    if o.revised is None:
        return f"{o.file}: no revision of {o.qualname} was kept"
    applied = {} if applied is None else applied
    path = root / o.file
    current = path.read_text(encoding="utf-8")
    if current == o.original:
        text = o.revised
    elif current == applied.get(o.file):
        merged = _merged(current, o)
        if merged is None:
            return f"{o.file}: the revision of {o.qualname} overlaps an earlier one: it is in {PATCH} only"
        text = merged
    else:
        return f"{o.file} changed while the loop ran: its revision is in {PATCH} only"
    atomic_write(path, text)
    applied[o.file] = text
    return None


def _merged(text: str, o: Optimization) -> str | None:
    """`text` (o's file with earlier revisions in it) with o's diff (made against the original) applied by git,
    which allows for the lines earlier revisions moved; None when it does not apply."""
    import git

    with tempfile.TemporaryDirectory(prefix="soap-apply-") as scratch:
        copy = Path(scratch) / o.file
        copy.parent.mkdir(parents=True)
        copy.write_text(text, encoding="utf-8")
        diff = Path(scratch) / "revision.patch"
        diff.write_text(o.diff(), encoding="utf-8")
        try:
            git.Git(scratch).apply(str(diff))
        except git.GitCommandError:
            return None
        return copy.read_text(encoding="utf-8")


def final_check(root: Path, optimizations: list[Optimization]) -> None:
    """Before anything is written to the patch: the kept revisions, all in one tree as the patch will put them,
    run their covering tests once more behind the sandbox's wall, allowed only what the originals' tests do.
    Each loop checked its revision alone; together they have not run. If they fail together, each is added in
    turn to those that passed, and one that fails is dropped with its reason."""
    kept = [o for o in optimizations if o.revised is not None]
    problem = _recheck(root, kept) if kept else None
    passed = kept if problem is None else []
    for o in kept if problem is not None else ():
        alone = problem if len(kept) == 1 else _recheck(root, [*passed, o])
        if alone is None:
            passed.append(o)
        else:
            o.status, o.reason, o.revised, o.after = OptimizationStatus.REJECTED, f"the final check failed: {alone}", None, None
            o.final_check = f"failed: {alone}"
    for o in passed:
        o.final_check = (f"passed: its covering tests ran again with {'every revision of the patch' if len(passed) > 1 else 'the revision'} "
                         "in the tree, behind the sandbox's wall")


def _recheck(root: Path, revised: list[Optimization]) -> str | None:
    """Why the covering tests of `revised` fail with all of them in one sandbox, behind the wall; None if they pass."""
    texts: dict[str, str] = {}
    for o in revised:
        text = o.revised if o.file not in texts else _merged(texts[o.file], o)
        if text is None:
            return f"the revision of {o.qualname} does not apply over the others in {o.file}"
        texts[o.file] = text
    every = [o.checks.get("tests", list(o.tests)) for o in revised]
    tests = [] if any(not t for t in every) else sorted({t for t in chain.from_iterable(every)})  # []: the whole suite
    limit = sum(o.checks.get("limits", {}).get("check_and_race", UNMEASURED_S) for o in revised)
    capabilities = {key: seen for o in revised for key, seen in o.capabilities.items()}
    try:
        with Sandbox(root, capabilities) as box:
            for file, text in texts.items():
                box.write(file, text)
            run = run_pytest(box, tests, limit, MEMORY_MB)
    except SandboxError as e:
        return str(e)
    if run.status == RunStatus.PASSED:
        return None
    return run.reason if run.status == RunStatus.REFUSED else f"tests {run.status}: {run.reason}"

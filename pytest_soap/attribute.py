"""Attribution: which of the project's functions made a regressed test slower or hungrier.

With a profile of each side, a function's cost change is split into what it did itself and what it made
others do. Time: cProfile records, for each function, the time spent in it under each caller. A rise in an
unchanged function is passed up to the callers through which it rose, in proportion, until it reaches a
function the diff changed; that function is blamed for it. So a changed function that now calls an
unchanged helper ten times as often is blamed for the helper's time, and listed first. Memory: each
allocation held at the heap's high-water mark is blamed on the innermost changed function on its stack,
else the innermost project function.

Each second (or MiB) of rise is blamed on one function only, so a caller and its callee never hold the same
time, and the shares listed for a test add up to at most 100%. An unchanged helper whose rise went to its
changed caller is still named, beside that caller, with no share of its own. With one side's profile only,
what each function costs in this run stands for its rise.

Rank: changed functions whose cost rose; then unchanged ones whose rise a changed caller explains; then
the rest, unless their rise is within the noise. Tests, site-packages and this plugin are never blamed;
time in external code (C extensions, built-ins, libraries) goes to the project function that called it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .changes import ChangeSet
from .measure.functions import FunctionCost, Profile

# A function whose share of a regression is smaller than this is not worth naming.
MIN_SHARE = 0.02
MAX_CAUSES = 5
# An unchanged function's rise is noise, and it is not listed, below the larger of these: timer resolution and
# cProfile's own cost per call are around a microsecond, and a rise that small against the regression explains
# nothing of it.
NOISE_S = 20e-6
NOISE_SHARE = 0.05
# ... or, when it was called as often as before, below this part of what it cost before: the same work,
# profiled once in each of two processes, differs by that much.
NOISE_RELATIVE = 0.25


@dataclass
class Cause:
    file: str
    qualname: str
    lineno: int
    changed: bool
    # The rise blamed on it, which its share comes from: in its own time, and that plus its callees' rises passed
    # up to it (with one side's profile only, what they cost in this run). Never negative; cum is at least own.
    delta_own_s: float = 0.0
    delta_cum_s: float = 0.0
    delta_peak_mb: float = 0.0  # the growth of what it holds at the heap's high-water mark
    share: float = 0.0  # of the test's regression (Attribution.whole): delta_cum_s or delta_peak_mb over it
    reason: str = ""
    within: str = ""  # the changed caller whose share holds this unchanged function's rise; its own share is 0


@dataclass
class Attribution:
    nodeid: str
    causes: list[Cause] = field(default_factory=list)  # most to blame first
    evidence: str = ""
    notes: list[str] = field(default_factory=list)
    whole: float = 0.0  # what the shares are of: seconds, or MiB when memory regressed alone
    memory: bool = False
    rises: bool = True  # False with one side's profile only: the figures are costs in this run, not rises


def profiles_memory(regressed_metrics: list[str]) -> bool:
    """Which profile a regressed test gets: memray's for a regression in memory only, else cProfile's. Both
    need Python's profile hook, so one run cannot take both."""
    return not {"time_s", "cpu_s"} & set(regressed_metrics)


def _whole(net: float, shown: list[float]) -> float:
    """What a test's shares are of: the regression the profiles measured (head's total less base's). Where other
    code got faster, the rises blamed add up to more than that net figure; then their sum is the whole, so that
    no share passes 100% and the listed shares never add up to more. Rises within the noise are left out of
    that sum: jitter spread over many functions would otherwise dilute the real cause's share."""
    return max(net, sum(shown))


class _TimeBlame:
    """Passes each function's rise in own time up its rising call edges to the changed functions."""

    def __init__(self, head: Profile, base: Profile, is_changed):
        self.is_changed = is_changed
        base_edges = {(e.caller, e.callee): e.cum_s for e in base.edges}
        self.rising_callers: dict[str, list[tuple[str, float]]] = {}
        for e in head.edges:
            rise = e.cum_s - base_edges.get((e.caller, e.callee), 0.0)
            if rise > 0:
                self.rising_callers.setdefault(e.callee, []).append((e.caller, rise))
        self.memo: dict[str, dict[str, float]] = {}

    def explained_by(self, key: str, visiting: frozenset = frozenset()) -> dict[str, float]:
        """The changed functions that explain `key`'s rise, with the share each explains."""
        if self.is_changed(key):
            return {key: 1.0}
        if key in self.memo:
            return self.memo[key]
        callers = [(c, r) for c, r in self.rising_callers.get(key, []) if c not in visiting]
        total = sum(r for _, r in callers)
        shares: dict[str, float] = {}
        for caller, rise in callers:
            for changed, share in self.explained_by(caller, visiting | {key}).items():
                shares[changed] = shares.get(changed, 0.0) + share * rise / total
        if not visiting:  # results found inside a cycle depend on the path taken, so they are not kept
            self.memo[key] = shares
        return shares

    def project_caller(self, key: str, functions: dict[str, FunctionCost]) -> str | None:
        """The nearest project function above external code, along the most risen edges."""
        seen = {key}
        while key in self.rising_callers:
            key = max(self.rising_callers[key], key=lambda cr: cr[1])[0]
            if key in seen:
                return None
            seen.add(key)
            if functions.get(key) and functions[key].kind != "external":
                return key
        return None


def attribute(nodeid: str, metrics: list[str], head: Profile, base: Profile | None, changes: ChangeSet) -> Attribution:
    """The causes of one test's regression in `metrics`, most to blame first."""
    result = Attribution(nodeid, memory=profiles_memory(metrics), rises=base is not None)
    base = base or Profile()  # one side only: everything the run cost counts as risen
    functions = {**base.functions, **head.functions}

    def is_changed(key: str) -> bool:
        f = functions.get(key)
        return bool(f and f.file and changes.changed(f.file, f.qualname))

    diff = (f"the diff against {changes.ref[:10]}" if changes.ref else None)
    if changes.note:
        result.notes.append(changes.note)
    if result.rises:
        result.evidence = "profiles of both sides" + (f" and {diff}" if diff else ", no diff")
    else:
        result.evidence = "this side's profile only" + (f" and {diff}" if diff else "") + ": the hottest functions"
    blame = _blame_peak if result.memory else _blame_time
    ranked = sorted(blame(head, base, functions, is_changed, result),
                    key=lambda c: (not c.changed, not c.within, -c.share, -c.delta_cum_s))
    listed = [c for c in ranked if c.within or c.share >= MIN_SHARE][:MAX_CAUSES]
    names = {c.qualname for c in listed}
    result.causes = [c for c in listed if not c.within or c.within in names]
    tests_changed = [f.qualname for f in head.functions.values() if f.kind == "test" and is_changed(f.key)]
    if tests_changed:
        result.notes.append(f"the test's own code changed ({', '.join(tests_changed)}): part of the regression "
                            "may be the test's, not the project's")
    if not result.causes:
        result.notes.append("no function of the project accounts for this regression")
    return result


def _cause(f: FunctionCost, changed: bool, **figures) -> Cause:
    return Cause(f.file or "", f.qualname, f.lineno, changed, **figures)


def _time_reason(changed: bool, own: float, callees: float, rises: bool) -> str:
    """Why, in words that agree with the figures: each part named rose, and holds a fair part of the rise (a
    changed caller's own few microseconds are not why it is blamed)."""
    if not rises:
        return "one of the costliest in this run"
    named = lambda part: part > 0 and part >= NOISE_SHARE * (own + callees)
    parts = (["its own time"] if named(own) else []) + (
        ["time in its callees" if changed else "time in the external code it calls"] if named(callees) else [])
    return f"{' and '.join(parts)} rose"


def _blame_time(head: Profile, base: Profile, functions, is_changed, result: Attribution) -> list[Cause]:
    blame = _TimeBlame(head, base, is_changed)
    kept: dict[str, list[float]] = {}  # blamed function -> [its own rise, its callees' rises passed up to it]
    passed: dict[str, tuple[str, float]] = {}  # unchanged -> (changed caller explaining most of it, rise passed up)
    external: dict[str, tuple[str, float]] = {}  # external code -> (the project caller blamed, seconds)
    for key, f in head.functions.items():
        rise = f.own_s - (base.functions[key].own_s if key in base.functions else 0.0)
        if rise <= 0:
            continue
        explained = blame.explained_by(key)
        for changed, part in explained.items():
            kept.setdefault(changed, [0.0, 0.0])[changed != key] += rise * part
        if explained and not is_changed(key):
            passed[key] = max(explained, key=explained.__getitem__), rise * sum(explained.values())
        left = rise * (1 - sum(explained.values()))
        owner = key if f.kind != "external" else blame.project_caller(key, functions)
        if left > 0 and owner:
            kept.setdefault(owner, [0.0, 0.0])[owner != key] += left
            if owner != key:
                external[key] = owner, left

    project = {k: v for k, v in kept.items() if functions[k].kind == "project"}
    net = head.total_s - base.total_s
    regression = net if net > 0 else sum(map(sum, project.values()))

    def noise(key: str, seconds: float) -> bool:
        if seconds < max(NOISE_S, NOISE_SHARE * regression):
            return True
        before, now = base.functions.get(key), head.functions.get(key)
        return bool(before and now and before.calls == now.calls
                    and seconds < NOISE_RELATIVE * max(before.own_s, before.cum_s))

    shown = {k: v for k, v in project.items() if is_changed(k) or not noise(k, sum(v))}
    whole = result.whole = _whole(net, [sum(v) for v in shown.values()])
    if whole <= 0:
        return []
    causes = []
    for key, (own, callees) in shown.items():
        changed = is_changed(key)
        causes.append(_cause(functions[key], changed, delta_own_s=own, delta_cum_s=own + callees,
                             share=(own + callees) / whole,
                             reason=("changed; " if changed else "unchanged; ")
                             + _time_reason(changed, own, callees, result.rises)))
    for key, (caller, seconds) in passed.items():
        if functions[key].kind == "project" and key not in shown and not noise(key, seconds):
            name = functions[caller].qualname
            why = f"rose because {name} (changed) calls it more" if result.rises else f"called by {name} (changed)"
            causes.append(_cause(functions[key], False, delta_own_s=seconds, delta_cum_s=seconds,
                                 reason=f"unchanged; {why}", within=name))
    for key, (owner, seconds) in external.items():
        if owner in shown and seconds / whole >= MIN_SHARE * 5:
            result.notes.append(f"{seconds / whole:.0%} of the time is in external code "
                                f"{functions[key].qualname}, blamed on its caller")
    return causes


def _blame_peak(head: Profile, base: Profile, functions, is_changed, result: Attribution) -> list[Cause]:
    def held(profile: Profile) -> dict[str, float]:
        owners: dict[str, float] = {}
        for mb, keys in profile.peak_stacks:
            project = [k for k in keys if functions.get(k) and functions[k].kind == "project"]
            owner = next((k for k in project if is_changed(k)), project[0] if project else None)
            if owner:
                owners[owner] = owners.get(owner, 0.0) + mb
        return owners

    now, before = held(head), held(base)
    grew = {k: mb - before.get(k, 0.0) for k, mb in now.items() if mb > before.get(k, 0.0)}
    net = head.peak_mb - base.peak_mb
    regression = net if net > 0 else sum(grew.values())
    shown = {k: mb for k, mb in grew.items() if is_changed(k) or mb >= NOISE_SHARE * regression}
    whole = result.whole = _whole(net, list(shown.values()))
    if whole <= 0:
        return []
    what = "it holds more memory at the peak" if result.rises else "one of the costliest in this run"
    return [_cause(functions[k], is_changed(k), delta_peak_mb=mb, share=mb / whole,
                   reason=("changed; " if is_changed(k) else "unchanged; ") + what) for k, mb in shown.items()]

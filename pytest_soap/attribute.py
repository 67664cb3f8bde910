"""Attribution: which of the project's functions made a regressed test slower or hungrier.

With a profile of each side, a function's cost change is split into what it did itself and what it made
others do. Time: cProfile records, for each function, the time spent in it under each caller. A rise in an
unchanged function is passed up to the callers through which it rose, in proportion, until it reaches a
function the diff changed; that function is blamed for it. So a changed function that now calls an
unchanged helper ten times as often is blamed for the helper's time, and listed first. Memory: each
allocation held at the heap's high-water mark is blamed on the innermost changed function on its stack,
else the innermost project function.

Rank: changed functions whose cost rose; then unchanged ones whose rise a changed caller explains; then
the rest. Tests, site-packages and this plugin are never blamed; time in external code (C extensions,
built-ins, libraries) goes to the project function that called it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .changes import ChangeSet
from .measure.functions import FunctionCost, Profile

# A function whose share of a regression is smaller than this is not worth naming.
MIN_SHARE = 0.02
MAX_CAUSES = 5


@dataclass
class Cause:
    file: str
    qualname: str
    lineno: int
    changed: bool
    delta_own_s: float = 0.0
    delta_cum_s: float = 0.0
    delta_peak_mb: float = 0.0
    share: float = 0.0  # of the test's regression that this function accounts for
    reason: str = ""


@dataclass
class Attribution:
    nodeid: str
    causes: list[Cause] = field(default_factory=list)  # most to blame first
    evidence: str = ""
    notes: list[str] = field(default_factory=list)


def profiles_memory(regressed_metrics: list[str]) -> bool:
    """Which profile a regressed test gets: memray's for a regression in memory only, else cProfile's. Both
    need Python's profile hook, so one run cannot take both."""
    return not {"time_s", "cpu_s"} & set(regressed_metrics)


def _delta(head: dict[str, float], base: dict[str, float], key: str) -> float:
    return head.get(key, 0.0) - base.get(key, 0.0)


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
    result = Attribution(nodeid)
    functions = {**(base.functions if base else {}), **head.functions}

    def is_changed(key: str) -> bool:
        f = functions.get(key)
        return bool(f and f.file and changes.changed(f.file, f.qualname))

    diff = (f"the diff against {changes.ref[:10]}" if changes.ref else None)
    if changes.note:
        result.notes.append(changes.note)
    if base is None:
        result.evidence = "this side's profile only" + (f" and {diff}" if diff else "") + ": the hottest functions"
        result.causes = _hottest(head, is_changed, metrics)
    else:
        result.evidence = "profiles of both sides" + (f" and {diff}" if diff else ", no diff")
        causes: dict[str, Cause] = {}
        if "time_s" in metrics or "cpu_s" in metrics:
            _blame_time(head, base, functions, is_changed, causes, result)
        if set(metrics) & {"peak_mb", "tmu_mbs"}:
            _blame_peak(head, base, functions, is_changed, causes, result)
        ranked = sorted(causes.values(), key=lambda c: (not c.changed, c.reason.startswith("unchanged; its"), -c.share))
        result.causes = [c for c in ranked if c.share >= MIN_SHARE][:MAX_CAUSES]
    tests_changed = [f.qualname for f in head.functions.values() if f.kind == "test" and is_changed(f.key)]
    if tests_changed:
        result.notes.append(f"the test's own code changed ({', '.join(tests_changed)}): part of the regression "
                            "may be the test's, not the project's")
    if not result.causes:
        result.notes.append("no function of the project accounts for this regression")
    return result


def _cause(causes: dict[str, Cause], f: FunctionCost, changed: bool) -> Cause:
    return causes.setdefault(f.key, Cause(f.file or "", f.qualname, f.lineno, changed))


def _blame_time(head: Profile, base: Profile, functions, is_changed, causes: dict[str, Cause],
                result: Attribution) -> None:
    own = {k: f.own_s for k, f in head.functions.items()}, {k: f.own_s for k, f in base.functions.items()}
    cum = {k: f.cum_s for k, f in head.functions.items()}, {k: f.cum_s for k, f in base.functions.items()}
    blame = _TimeBlame(head, base, is_changed)
    rise = {k: _delta(*own, k) for k in functions}
    total = head.total_s - base.total_s
    if total <= 0:
        total = sum(r for r in rise.values() if r > 0) or 1.0
    blamed: dict[str, float] = {}
    because: dict[str, str] = {}  # an unchanged function -> the changed caller that explains most of its rise
    for key, amount in rise.items():
        if amount <= 0:
            continue
        explained = blame.explained_by(key)
        for changed, share in explained.items():
            blamed[changed] = blamed.get(changed, 0.0) + amount * share
        left = amount * (1 - sum(explained.values()))
        if explained and not is_changed(key):
            because[key] = max(explained, key=explained.get)
        if left > 0:
            owner = key if functions[key].kind != "external" else blame.project_caller(key, functions)
            if owner:
                blamed[owner] = blamed.get(owner, 0.0) + left
                if owner != key and left / total >= MIN_SHARE * 5:
                    result.notes.append(f"{left / total:.0%} of the time is in external code "
                                        f"{functions[key].qualname}, blamed on its caller")
    for key, seconds in blamed.items():
        f = functions[key]
        if f.kind != "project":
            continue
        c = _cause(causes, f, is_changed(key))
        c.delta_own_s, c.delta_cum_s = _delta(*own, key), _delta(*cum, key)
        c.share = max(c.share, seconds / total)
        c.reason = "changed; its cost rose" if c.changed else "unchanged; its own time rose"
    for key, changed in because.items():
        f = functions[key]
        if f.kind == "project" and key not in causes and _delta(*cum, key) > 0:
            c = _cause(causes, f, False)
            c.delta_own_s, c.delta_cum_s = _delta(*own, key), _delta(*cum, key)
            c.share = max(0.0, c.delta_own_s / total)  # its changed caller carries the blame, and ranks first
            c.reason = f"unchanged; rose because {functions[changed].qualname} (changed) calls it more"


def _blame_peak(head: Profile, base: Profile, functions, is_changed, causes: dict[str, Cause],
                result: Attribution) -> None:
    def held(profile: Profile) -> dict[str, float]:
        owners: dict[str, float] = {}
        for mb, keys in profile.peak_stacks:
            project = [k for k in keys if functions.get(k) and functions[k].kind == "project"]
            owner = next((k for k in project if is_changed(k)), project[0] if project else None)
            if owner:
                owners[owner] = owners.get(owner, 0.0) + mb
        return owners

    now, before = held(head), held(base)
    total = head.peak_mb - base.peak_mb
    if total <= 0:
        total = sum(max(_delta(now, before, k), 0.0) for k in now) or 1.0
    for key in now:
        grew = _delta(now, before, key)
        if grew <= 0:
            continue
        f = functions[key]
        c = _cause(causes, f, is_changed(key))
        c.delta_peak_mb = head.functions[key].peak_mb - (base.functions[key].peak_mb if key in base.functions else 0.0)
        c.share = max(c.share, grew / total)
        if not c.reason:
            c.reason = "changed; it holds more memory at the peak" if c.changed else "unchanged; it holds more memory at the peak"


def _hottest(head: Profile, is_changed, metrics: list[str]) -> list[Cause]:
    """With one side only: changed functions first, then the rest, by what they cost in this run."""
    memory = bool(set(metrics) & {"peak_mb", "tmu_mbs"}) and "time_s" not in metrics
    total = (head.peak_mb if memory else head.total_s) or 1.0
    causes = []
    for key, f in head.functions.items():
        if f.kind != "project":
            continue
        cost = f.peak_mb if memory else f.cum_s
        changed = is_changed(key)
        causes.append(Cause(f.file or "", f.qualname, f.lineno, changed, share=cost / total,
                            reason=("changed; " if changed else "unchanged; ") + "one of the costliest in this run"))
    causes.sort(key=lambda c: (not c.changed, -c.share))
    return [c for c in causes if c.share >= MIN_SHARE][:MAX_CAUSES]

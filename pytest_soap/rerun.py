"""Confirm a suspect: run a test that crossed a threshold again, right away, until its verdict is settled.

Confirming reruns follow the test's first run at once, before the next test, so the process is in the same
state it was in then (the same garbage to collect, the same memory held by the allocator), as it
was when the baseline was taken. Rerunning at the end of the session measured a different process
state, and turned it into false alarms. A rerun goes through pytest's own run protocol with fresh
function fixtures (wider-scoped ones are kept, as for the next test) and no reporting, so the
terminal and other plugins see each test once.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest
from _pytest.runner import runtestprotocol

from . import compare
from .measure.functions import Profile
from .records import MEMORY_METRICS, Measurement

if TYPE_CHECKING:
    from .plugin import SoapSession


def run_again(item: pytest.Item, nextitem: pytest.Item | pytest.Collector | None) -> bool:
    """Run one test once more (setup, call, teardown); True when every phase passed."""
    if hasattr(item, "_initrequest"):
        item._initrequest()  # drop the fixture values of the earlier run
    # pytest tears down to any node's chain, though it annotates nextitem as an Item
    reports = runtestprotocol(item, nextitem=nextitem, log=False)  # type: ignore[arg-type]
    return all(r.passed for r in reports)


def in_a_row(item: pytest.Item, times: int, nextitem: pytest.Item | None) -> bool:
    """Run a test `times` more times in a row; True when every run passed (it stops at the first that did
    not). Between two runs its parent is what comes next: the test's own fixtures are torn down and set up
    afresh, its module's and class's are kept; after the last, `nextitem` is."""
    return all(run_again(item, item.parent if i < times - 1 else nextitem) for i in range(times))


def repeat(item: pytest.Item, nextitem: pytest.Item | None, soap: SoapSession, times: int) -> None:
    """Run a test `times` more times in a row (a round of --soap-against); flaky if any run fails."""
    if not in_a_row(item, times, nextitem):
        soap.measurements[item.nodeid].outcome = "flaky"


def confirm(item: pytest.Item, nextitem: pytest.Item | None, soap: SoapSession) -> bool:
    """Re-run a suspect, of a regression or of an improvement (each needs the same evidence), until its
    verdict is settled; True when its memory regressed or improved, so memray should confirm that with the
    exact heap."""
    m = soap.measurements.get(item.nodeid)
    base = soap.baseline.tests.get(item.nodeid) if soap.baseline else None
    thresholds = soap.settings.thresholds
    if m is None or not compare.suspect_metrics(m, base, thresholds, improvements=True):
        return False
    while compare.undecided(m, base, thresholds, soap.settings.rounds):
        before = len(m.samples)
        if not run_again(item, nextitem):
            # It failed when re-run: its outcome is flaky, so no performance verdict.
            del m.samples[before:]
            m.outcome = "flaky"
            return False
    verdict = compare.judge(m, base, thresholds)
    return bool(set(MEMORY_METRICS) & {*verdict.regressed_metrics, *verdict.improved_metrics})


def measure_heaps(items: list[pytest.Item], soap: SoapSession) -> None:
    """One more run of each test with memray tracking the call, for its exact heap; times are not used.
    Each run keeps the fixtures the next one shares, as pytest's own loop does."""
    soap.heap_run = True
    try:
        run_each(items)
    finally:
        soap.heap_run = False


def profile_each(items: dict[str, pytest.Item], wanted: dict[str, bool], soap: SoapSession) -> dict[str, Profile]:
    """One more run of each wanted test under the function profiler ({nodeid: memory?}: memray's for memory,
    since cProfile and memray both need Python's profile hook), and their profiles. What these runs report
    (a failure, say) is theirs: the tests' own measurements are left as they were."""
    chosen = [items[nodeid] for nodeid in wanted if nodeid in items]
    own = {item.nodeid: soap.measurements.pop(item.nodeid) for item in chosen if item.nodeid in soap.measurements}
    soap.profile_memory, soap.profile_run = {nodeid for nodeid, memory in wanted.items() if memory}, True
    try:
        run_each(chosen)
    finally:
        soap.profile_run = False
        for item in chosen:
            soap.measurements.pop(item.nodeid, None)
        soap.measurements.update(own)
    return {item.nodeid: soap.profiles[item.nodeid] for item in chosen if item.nodeid in soap.profiles}


def run_each(items: list[pytest.Item]) -> None:
    """One more run of each test, keeping the fixtures the next one shares, as pytest's own loop does."""
    for item, nextitem in zip(items, [*items[1:], None]):
        run_again(item, nextitem)


def run_more(items: dict[str, pytest.Item], runs: dict[str, int], soap: SoapSession) -> dict[str, Measurement]:
    """After the session's own runs: run each test in `runs` that many times more, back to back, and return
    those runs as measurements of their own (outcome "failed" if any run failed). The session's own
    measurements are left as they were. Fixtures stay set up from one run to the next, as in pytest's loop."""
    queue = [(items[nodeid], count) for nodeid, count in runs.items() if nodeid in items]
    fresh: dict[str, Measurement] = {}
    for (item, count), following in zip(queue, [*(item for item, _ in queue[1:]), None]):
        own = soap.measurements.pop(item.nodeid, None)
        soap.measurements[item.nodeid] = Measurement(item.nodeid, **soap.overrides.get(item.nodeid, {}))
        try:
            if not in_a_row(item, count, following):
                soap.measurements[item.nodeid].outcome = "failed"
        finally:
            fresh[item.nodeid] = soap.measurements.pop(item.nodeid)
            if own is not None:
                soap.measurements[item.nodeid] = own
    return fresh


def serve(items: list[pytest.Item], soap: SoapSession, pipes: tuple[int, int]) -> None:
    """A side of --soap-against, kept warm after its first pass: send its measurements down the write pipe,
    then run again what each line of the read pipe asks, until the session closes the pipe: {"runs": {nodeid:
    count}}, answered with those runs' measurements, or {"profile": {nodeid: memory?}}, answered with each
    test's profile. Re-running here costs no start-up: no interpreter, no imports, no collection."""
    by_id = {item.nodeid: item for item in items}
    with os.fdopen(pipes[0], "r", encoding="utf-8") as requests, os.fdopen(pipes[1], "w", encoding="utf-8") as answers:
        answers.write(json.dumps([m.to_dict() for m in soap.measurements.values()]) + "\n")
        answers.flush()
        for line in requests:
            request = json.loads(line)
            if "profile" in request:
                profiles = profile_each(by_id, request["profile"], soap)
                answers.write(json.dumps({n: p.to_dict() for n, p in profiles.items()}) + "\n")
            else:
                fresh = run_more(by_id, request["runs"], soap)
                answers.write(json.dumps([m.to_dict() for m in fresh.values()]) + "\n")
            answers.flush()

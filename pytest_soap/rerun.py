"""Confirm a suspect: run a test that crossed a threshold again, right away, until its verdict is settled.

Confirming reruns follow the test's first run at once, before the next test, so the process is in the same
state it was in then (the same garbage to collect, the same memory held by the allocator), as it
was when the baseline was taken. Rerunning at the end of the session measured a different process
state, and turned it into false alarms. A rerun goes through pytest's own run protocol with fresh
function fixtures (wider-scoped ones are kept, as for the next test) and no reporting, so the
terminal and other plugins see each test once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from _pytest.runner import runtestprotocol

from . import compare
from .measure.functions import Profile
from .protocol import Channel, Duet, Measured, Profiled, ProfileRuns, Ready, Rerun, Rest
from .records import JUDGED_OUTCOMES, MEMORY_METRICS, Measurement, Outcome

if TYPE_CHECKING:
    from .recorder import Recorder


def run_once(item: pytest.Item, nextitem: pytest.Item | pytest.Collector | None) -> Outcome:
    """Run one test once more (setup, call, teardown); its outcome, as its reports say: the first phase that
    did not pass decides ("error" in setup or teardown, "failed" in the call, "skipped"...)."""
    if hasattr(item, "_initrequest"):
        item._initrequest()  # drop the fixture values of the earlier run
    # pytest tears down to any node's chain, though it annotates nextitem as an Item
    reports = runtestprotocol(item, nextitem=nextitem, log=False)  # type: ignore[arg-type]
    outcomes = [outcome for report in reports if (outcome := outcome_of(report))]
    return next((o for o in outcomes if o not in JUDGED_OUTCOMES), outcomes[-1] if outcomes else Outcome.ERROR)


def run_again(item: pytest.Item, nextitem: pytest.Item | pytest.Collector | None) -> bool:
    """Run one test once more; True when every phase passed."""
    return run_once(item, nextitem) in JUDGED_OUTCOMES


def in_a_row(item: pytest.Item, times: int, nextitem: pytest.Item | None) -> Outcome:
    """Run a test `times` more times in a row; the outcome of the first run that did not pass (it stops
    there), else "passed". Between two runs its parent is what comes next: the test's own fixtures are torn
    down and set up afresh, its module's and class's are kept; after the last, `nextitem` is."""
    for i in range(times):
        outcome = run_once(item, item.parent if i < times - 1 else nextitem)
        if outcome not in JUDGED_OUTCOMES:
            return outcome
    return Outcome.PASSED


def outcome_of(report: pytest.TestReport) -> Outcome | None:
    """What a phase's report says about the test; None when it says nothing new."""
    xfail = hasattr(report, "wasxfail")
    if report.skipped:
        return Outcome.XFAILED if xfail else Outcome.SKIPPED
    if report.failed:
        return Outcome.FAILED if report.when == "call" else Outcome.ERROR
    if report.when == "call":
        return Outcome.XPASSED if xfail else Outcome.PASSED
    return None


def repeat(item: pytest.Item, nextitem: pytest.Item | None, m: Measurement, times: int) -> None:
    """Run a test `times` more times in a row (a round of --soap-against); flaky if any run fails."""
    if in_a_row(item, times, nextitem) not in JUDGED_OUTCOMES:
        m.outcome = Outcome.FLAKY


def confirm(item: pytest.Item, nextitem: pytest.Item | None, m: Measurement, base: dict | None,
            thresholds: compare.Thresholds, max_runs: int) -> bool:
    """Re-run a suspect, of a regression or of an improvement (each needs the same evidence), until its
    verdict against its saved `base` is settled; True when its memory regressed or improved, so memray should
    confirm that with the exact heap."""
    if not compare.suspect_metrics(m, base, thresholds, improvements=True):
        return False
    while compare.undecided(m, base, thresholds, max_runs):
        before = len(m.samples)
        if not run_again(item, nextitem):
            # It failed when re-run: its outcome is flaky, so no performance verdict.
            del m.samples[before:]
            m.outcome = Outcome.FLAKY
            return False
    verdict = compare.judge(m, base, thresholds)
    return bool(set(MEMORY_METRICS) & {*verdict.regressed_metrics, *verdict.improved_metrics})


def measure_heaps(items: list[pytest.Item], recorder: Recorder) -> None:
    """One more run of each test with memray tracking the call, for its exact heap; times are not used.
    Each run keeps the fixtures the next one shares, as pytest's own loop does."""
    with recorder.in_mode(heap=True):
        run_each(items)


def profile_each(items: dict[str, pytest.Item], wanted: dict[str, bool], recorder: Recorder) -> dict[str, Profile]:
    """One more run of each wanted test under the function profiler ({nodeid: memory?}: memray's for memory,
    since cProfile and memray both need Python's profile hook), and their profiles. The tests' own
    measurements are left as they were."""
    chosen = [items[nodeid] for nodeid in wanted if nodeid in items]
    with recorder.in_mode(profile_memory={nodeid for nodeid, memory in wanted.items() if memory}):
        run_each(chosen)
    return {item.nodeid: recorder.profiles[item.nodeid] for item in chosen if item.nodeid in recorder.profiles}


def run_each(items: list[pytest.Item]) -> None:
    """One more run of each test, keeping the fixtures the next one shares, as pytest's own loop does."""
    for item, nextitem in zip(items, [*items[1:], None]):
        run_again(item, nextitem)


def run_more(items: dict[str, pytest.Item], runs: dict[str, int], recorder: Recorder,
             then: pytest.Item | None = None) -> dict[str, Measurement]:
    """After the session's own runs: run each test in `runs` that many times more, back to back, and return
    those runs as measurements of their own (with the outcome of the first run that did not pass). The session's own
    measurements are left as they were. Fixtures stay set up from one run to the next, as in pytest's loop,
    and after the last for `then`, the test to run next."""
    queue = [(items[nodeid], count) for nodeid, count in runs.items() if nodeid in items]
    with recorder.recording_into({}) as fresh:
        for (item, count), following in zip(queue, [*(item for item, _ in queue[1:]), then]):
            outcome = in_a_row(item, count, following)
            if outcome not in JUDGED_OUTCOMES:
                recorder.entry(item.nodeid).outcome = outcome
    return fresh


def serve(items: list[pytest.Item], recorder: Recorder, pipes: tuple[int, int]) -> None:
    """A side of --soap-against, kept warm: send its first pass's measurements (in duet it has none: it
    runs each test when asked), then answer each request until the session closes the pipe (see protocol).
    Re-running here costs no start-up: no interpreter, no imports, no collection."""
    by_id = {item.nodeid: item for item in items}
    in_duet: set[str] = set()
    channel = Channel(os.fdopen(pipes[0], "r", encoding="utf-8"), os.fdopen(pipes[1], "w", encoding="utf-8"))
    try:
        if not recorder.settings.duet_side:
            channel.send(Measured(dict(recorder.measurements)))
        for request in channel:
            if isinstance(request, ProfileRuns):
                channel.send(Profiled(profile_each(by_id, request.wanted, recorder)))
            elif isinstance(request, Rerun):
                channel.send(Measured(run_more(by_id, request.runs, recorder)))
            elif isinstance(request, Rest):
                channel.send(Measured(run_more(by_id, {n: 1 for n in by_id if n not in in_duet}, recorder)))
            elif isinstance(request, Duet):
                in_duet.add(request.nodeid)
                recorder.cue = lambda nodeid: _await_go(channel, nodeid)
                try:
                    fresh = run_more(by_id, {request.nodeid: request.times}, recorder,
                                     by_id.get(request.following or ""))
                finally:
                    recorder.cue = None
                channel.send(Measured(fresh))
    finally:
        channel.close()


def _await_go(channel: Channel, nodeid: str) -> None:
    """A duet's side, its test set up: say so, and start the call when the session says go (or has gone)."""
    if channel.send(Ready(nodeid)):
        channel.receive()

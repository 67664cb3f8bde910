"""The measuring hooks: every test's call is measured where it runs (a plain session, an xdist worker, a side
process of --soap-against), and recorded into a dict the caller chose.

Runs of a test after pytest's own (rerun.py) do not steer these hooks with flags and popped measurements:
they ask for a mode (a heap run, a profiling run) and a place to record into, each for the length of a
`with` block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING

import pytest

from . import protocol, rerun
from .config import Settings, marker_overrides
from .measure import CallMeter
from .measure.functions import Profile, profile_memory, profiled, project_root
from .measure.heap import track_heap
from .records import Measurement
from .store import Baseline

if TYPE_CHECKING:
    from .sides import DuetPartner


class Mode(Enum):
    TIME = "time"  # time and resident memory, no tracer: the figures the gate judges
    HEAP = "heap"  # memray's exact heap of the call; its time is not used
    PROFILE = "profile"  # cProfile's functions (memray's, for a memory regression), for attribution


class Recorder:
    def __init__(self, config: pytest.Config, settings: Settings, baseline: Baseline | None = None):
        self.config, self.settings, self.baseline = config, settings, baseline
        self.measurements: dict[str, Measurement] = {}  # this session's own runs, pytest's loop and confirmations
        self.into = self.measurements  # where the calls running now are recorded (see recording_into)
        self.overrides: dict[str, dict] = {}  # @pytest.mark.soap of each test
        self.meter = CallMeter(memory=settings.memory)
        self.mode = Mode.PROFILE if settings.profile else Mode.TIME
        self.profiles: dict[str, Profile] = {}
        # cProfile and memray both need Python's profile hook, so a run profiles time or memory, not both:
        # memory for the tests that regressed in memory only.
        self.profile_memory: set[str] = set()
        self.runs: dict[str, int] = {}  # a round of --soap-against: how many times to run each test
        self.heap_queue: list[pytest.Item] = []  # tests whose exact heap is wanted, measured at the end
        self.served: list[pytest.Item] = []  # a duet's side: the tests it runs when asked
        self.cue: Callable[[str], None] | None = None  # a duet's side: waits, at a call, for the session's go
        self.partner: DuetPartner | None = None  # the head's side of a duet: the ref's process

    def entry(self, nodeid: str) -> Measurement:
        """The test's measurement where calls are recorded now, made on its first run."""
        m = self.into.get(nodeid)
        if m is None:
            m = self.into[nodeid] = Measurement(nodeid, **self.overrides.get(nodeid, {}))
        return m

    @contextmanager
    def recording_into(self, fresh: dict[str, Measurement]) -> Iterator[dict[str, Measurement]]:
        """Record the calls of the block into `fresh`, leaving the session's own measurements as they are."""
        before, self.into = self.into, fresh
        try:
            yield fresh
        finally:
            self.into = before

    @contextmanager
    def in_mode(self, heap: bool = False, profile_memory: set[str] | None = None) -> Iterator[None]:
        """Measure the calls of the block with memray's exact heap, or profile them (memray profiles the
        tests in `profile_memory`, cProfile the others)."""
        before = self.mode, self.profile_memory
        if heap:
            self.mode = Mode.HEAP
        elif profile_memory is not None:
            self.mode, self.profile_memory = Mode.PROFILE, profile_memory
        try:
            yield
        finally:
            self.mode, self.profile_memory = before

    # ---- collection ---------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)  # after -k, -m and other plugins have chosen and ordered the tests
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        # Checked here, so a misspelt marker argument stops the run before any test runs.
        self.overrides = {item.nodeid: marker_overrides(item) for item in items}
        if self.settings.only:
            selection = protocol.read(self.settings.only)
            if not isinstance(selection, protocol.Selection):
                raise pytest.UsageError(f"pytest-soap: {self.settings.only} holds no selection of tests")
            self.profile_memory = set(selection.memory)
            self.runs = dict(selection.runs) if not self.settings.profile else {}
            config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in selection.runs])
            items[:] = [item for item in items if item.nodeid in selection.runs]
        if self.settings.duet_side:
            # Its tests run when the session asks (rerun.serve), none in pytest's own loop.
            self.served, items[:] = list(items), []

    # ---- measuring ----------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item):
        if self.mode is Mode.PROFILE:
            if item.nodeid in self.profile_memory:
                return (yield)  # profiled by pytest_pyfunc_call below
            with profiled(project_root(self.config.rootpath)) as profile:
                result = yield
            self.profiles[item.nodeid] = profile
            return result
        m = self.entry(item.nodeid)
        if self.mode is Mode.HEAP:
            with track_heap() as heap:
                result = yield
            m.heap = heap.figures()
            return result
        if self.cue:
            self.cue(item.nodeid)  # a duet's side: the call starts when the session says so
        elif self.partner:
            self.partner.at_call()  # the head's side of a duet: both calls start now
        token = self.meter.start()
        try:
            return (yield)
        finally:
            sample = self.meter.stop(token)
            benchmark_s = _benchmark_median(item)
            if benchmark_s is not None:
                # The fixture ran the code many times; its median round is the test's time,
                # and the call's CPU share scales to it.
                share = sample.cpu_s / sample.time_s if sample.time_s > 0 else 1.0
                sample = replace(sample, time_s=benchmark_s, cpu_s=benchmark_s * share)
                m.timer = "pytest-benchmark"
            m.samples.append(sample)

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function):
        """A memory-only regression's profiling run: memray tracks the test function's call."""
        if not (self.mode is Mode.PROFILE and pyfuncitem.nodeid in self.profile_memory):
            return None
        from _pytest.python import pytest_pyfunc_call as call_test_function

        self.profiles[pyfuncitem.nodeid] = profile_memory(lambda: call_test_function(pyfuncitem),
                                                          project_root(self.config.rootpath))
        return True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = rerun.outcome_of(report)
        if outcome:
            self.entry(report.nodeid).outcome = outcome

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):
        if self.partner:
            self.partner.begin(item.nodeid, nextitem.nodeid if nextitem else None)
        try:
            result = yield
        finally:
            if self.partner:
                self.partner.first_pass.update(self.partner.end())
        m = self.measurements.get(item.nodeid)
        if m is None or not m.judged or item.session.shouldstop or item.session.shouldfail:
            return result
        if self.runs.get(item.nodeid, 1) > 1:
            rerun.repeat(item, nextitem, m, self.runs[item.nodeid] - 1)
        elif self.settings.save:
            # The baseline keeps memray's exact heap of each test long enough to hold memory that
            # matters; under the time floor a test cannot touch more than a few MiB.
            if (m.figure("time_s") or 0.0) >= self.settings.thresholds.min_time_s:  # a judged test has a time
                self.heap_queue.append(item)
        elif self.baseline and rerun.confirm(item, nextitem, m, self.baseline.tests.get(item.nodeid),
                                             self.settings.thresholds, self.settings.rounds):
            self.heap_queue.append(item)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session):
        result = yield
        # Heap runs come last: memray's heap does not depend on what ran before, but the times and
        # resident memory of the tests after a tracked run would.
        if self.meter.measures_memory and not session.shouldstop and not session.shouldfail:
            rerun.measure_heaps(self.heap_queue, self)
        if self.settings.serve:
            rerun.serve(self.served or session.items, self, self.settings.serve)
        return result

    def pytest_unconfigure(self) -> None:
        self.meter.close()


def _benchmark_median(item: pytest.Item) -> float | None:
    """The median round of pytest-benchmark's fixture, when the test used it and it ran."""
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    stats = getattr(getattr(fixture, "stats", None), "stats", None)
    median = getattr(stats, "median", None) if stats is not None and getattr(stats, "data", None) else None
    return float(median) if median else None

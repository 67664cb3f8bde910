"""pytest hooks only: each hook hands its work to the stage that does it.

Roles: a plain session measures and judges in one process. Under pytest-xdist the workers
measure (and re-run their own suspects), and the controller gathers their measurements when
each worker goes down, then judges, reports and saves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from . import against, compare, hookspecs, protocol, rootdir, store
from .attribute import Attribution, attribute, profiles_memory
from .changes import ChangeSet, changed_functions
from .config import MARKER, Settings, add_options, marker_overrides
from .measure import CallMeter
from .measure.functions import Profile, profile_memory, profiled, project_root
from .measure.heap import track_heap
from .records import Measurement
from .report import json_report, terminal
from .rerun import confirm, measure_heaps, outcome_of, profile_each, repeat, run_more, serve

if TYPE_CHECKING:
    from .soap.session import LoopRun


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    hookspecs.register_hookspecs(pluginmanager)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    rootdir.settle(early_config, args)  # before conftests load: they and the node ids depend on the rootdir


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    settings = Settings.from_config(config)
    if not settings.enabled:
        return
    baseline = ref = None
    try:
        if settings.side or settings.profile:
            pass  # measuring one side for a --soap-against session: no baseline, no ref of its own
        elif settings.against:
            if settings.save:
                raise pytest.UsageError("pytest-soap: --soap-save and --soap-against do not mix: choose one baseline")
            ref = against.resolve(config.rootpath, settings.against)
        elif not settings.save:
            baseline = store.load(settings.baseline)
    except (store.BaselineError, against.AgainstError) as e:
        raise pytest.UsageError(f"pytest-soap: {e}") from None
    config.pluginmanager.register(SoapSession(config, settings, baseline, ref), "soap-session")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _is_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("dsession")


class SoapSession:
    def __init__(self, config: pytest.Config, settings: Settings, baseline: store.Baseline | None,
                 ref: against.Ref | None = None):
        self.config = config
        self.settings = settings
        self.baseline = baseline
        self.ref = ref
        self.paired: against.PairedRun | None = None
        self.measurements: dict[str, Measurement] = {}
        self.overrides: dict[str, dict] = {}
        self.meter = CallMeter(memory=settings.memory)
        self.heap_run = False  # set while a test runs once more under memray
        self.heap_queue: list[pytest.Item] = []  # tests whose exact heap is wanted, measured at the end
        self.profile_run = bool(settings.profile)  # set while tests run once more under the function profiler
        self.profiles: dict[str, Profile] = {}
        # cProfile and memray both need Python's profile hook, so a run profiles time or memory, not both:
        # memory for the tests that regressed in memory only.
        self.profile_memory: set[str] = set()
        self.runs: dict[str, int] = {}  # a round of --soap-against: how many times to run each test
        self.served: list[pytest.Item] = []  # a duet's side: the tests it runs when asked
        self.cue: Callable[[str], None] | None = None  # a duet's side: waits, at a call, for the session's go
        self.partner: against.DuetPartner | None = None  # the head's side of a duet: the ref's process
        self.attributions: dict[str, Attribution] = {}
        self.loop: LoopRun | None = None  # the SOAP loop's run, with --soap-optimize
        self.changed: list[tuple[str, str]] = []  # the functions the diff added or modified: (file, qualname)
        self.notes: list[str] = []
        self.verdicts: list[compare.TestVerdict] = []
        self.failure: str | None = None
        if settings.memory and not self.meter.measures_memory:
            self.notes.append("memory is not measured: this system has no /proc/self/clear_refs (Linux only)")
        if baseline and (baseline.machine.get("node"), baseline.python) != (store.machine()["node"],
                                                                             store.python_version()):
            self.notes.append("the baseline comes from another machine or Python: only gross changes are meaningful; "
                              "re-save it here with --soap-save")

    def _measurement(self, nodeid: str) -> Measurement:
        m = self.measurements.get(nodeid)
        if m is None:
            m = self.measurements[nodeid] = Measurement(nodeid, **self.overrides.get(nodeid, {}))
        return m

    # ---- collection ---------------------------------------------------------------------------
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

    # ---- measuring (plain session or xdist worker) --------------------------------------------
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item):
        if self.profile_run and item.nodeid not in self.profile_memory:
            with profiled(project_root(self.config.rootpath)) as profile:
                result = yield
            self.profiles[item.nodeid] = profile
            return result
        if self.profile_run:
            return (yield)  # profiled by pytest_pyfunc_call below
        m = self._measurement(item.nodeid)
        if self.heap_run:
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
        if not (self.profile_run and pyfuncitem.nodeid in self.profile_memory):
            return None
        from _pytest.python import pytest_pyfunc_call as call_test_function

        self.profiles[pyfuncitem.nodeid] = profile_memory(lambda: call_test_function(pyfuncitem),
                                                          project_root(self.config.rootpath))
        return True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if _is_controller(self.config):
            return
        outcome = outcome_of(report)
        if outcome:
            self._measurement(report.nodeid).outcome = outcome

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
            repeat(item, nextitem, self, self.runs[item.nodeid] - 1)
        elif self.settings.save:
            # The baseline keeps memray's exact heap of each test long enough to hold memory that
            # matters; under the time floor a test cannot touch more than a few MiB.
            if (m.figure("time_s") or 0.0) >= self.settings.thresholds.min_time_s:  # a judged test has a time
                self.heap_queue.append(item)
        elif self.baseline and confirm(item, nextitem, self):
            self.heap_queue.append(item)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session):
        if not self.ref or _is_worker(self.config):
            return (yield from self._runtestloop(session, None))
        ref_run = against.RefRun(self.ref, list(self.config.invocation_params.args), list(self.config.args),
                                 self.config.invocation_params.dir, self.config.rootpath, self.settings.thresholds,
                                 xdist=self.config.pluginmanager.hasplugin("xdist"),
                                 warm=not _is_controller(self.config))
        try:
            ref_run.open()
            if not _is_controller(self.config) and self._duet():
                # Each test runs on both sides at once, test by test: the noise both share cancels in their ratio.
                self.partner = ref_run.start_duet()
            return (yield from self._runtestloop(session, ref_run))
        finally:
            self.partner = None
            ref_run.close()

    def _duet(self) -> bool:
        """--soap-sides: duet, or with auto, when a core is idle for each side."""
        return self.settings.sides == "duet" or (self.settings.sides == "auto" and against.core_to_spare())

    def _runtestloop(self, session: pytest.Session, ref_run: against.RefRun | None):
        result = yield
        # Heap runs come last: memray's heap does not depend on what ran before, but the times and
        # resident memory of the tests after a tracked run would.
        if self.meter.measures_memory and not session.shouldstop and not session.shouldfail:
            measure_heaps(self.heap_queue, self)
        if self.settings.serve:
            serve(self.served or session.items, self, self.settings.serve)
        if ref_run and not session.shouldstop and not session.shouldfail:
            # This session re-runs its own suspects; under xdist the workers are gone, and it cannot.
            items = {item.nodeid: item for item in session.items}
            rerun = None if _is_controller(self.config) else (
                lambda runs, then=None: run_more(items, runs, self, items.get(then or "")))
            profile = None if _is_controller(self.config) else (lambda wanted: profile_each(items, wanted, self))
            self.paired = ref_run.measure(self.measurements, rerun, profile)
            ref = ref_run.ref
            self._attribute(self.paired.profiles, lambda: changed_functions(ref.repo_root, ref.sha))
            self._optimize(ref.repo_root)
        elif self.baseline and not _is_worker(self.config) and not _is_controller(self.config) and not session.shouldfail:
            # Against a saved baseline there is one side to profile: this one, in this process.
            regressed = self._regressed()
            profiles = profile_each({item.nodeid: item for item in session.items},
                                    {n: profiles_memory(v.regressed_metrics) for n, v in regressed.items()}, self)
            commit = self.baseline.commit
            self._attribute({n: (p, None) for n, p in profiles.items()},
                            lambda: changed_functions(self.config.rootpath, commit) if commit else
                            ChangeSet(None, [], [], "the baseline records no commit (it was saved outside a git "
                                                    "repository): changed functions are unknown"),
                            regressed)
            self._optimize(project_root(self.config.rootpath))
        return result

    def _optimize(self, root) -> None:
        """--soap-optimize: each function that regressed tests name first goes through the SOAP loop."""
        if not self.settings.optimize or not self.attributions:
            return
        from .soap import llm, session as loop_session  # the model's SDK loads only when the loop runs

        try:
            provider = llm.provider_for(self.config)
        except llm.ModelUnavailable as e:
            self.notes.append(str(e))
            return
        # The session's passing tests: the loop's first run finds those that call a target, its covering tests.
        passed = {m.nodeid: m.figure("time_s") or 0.0 for m in self.measurements.values() if m.outcome == "passed"}
        planned = loop_session.plan(list(self.attributions.values()), self._regressed(), root, self.changed, passed)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        quiet = bool(os.environ.get("CI"))
        progress = ((lambda line: None) if quiet or reporter is None
                    else (lambda line: reporter.write_line(f"pytest-soap: {line}")))
        self.loop = loop_session.run(planned, provider, self.settings.model, self.settings.iterations,
                                     self.settings.thresholds, root, self.settings.apply, progress)

    def _regressed(self) -> dict[str, compare.TestVerdict]:
        return {v.nodeid: v for v in self._judge(list(self.measurements.values())) if v.verdict == "regressed"}

    def _attribute(self, profiles: Mapping[str, tuple[Profile, Profile | None]], changes,
                   regressed: dict[str, compare.TestVerdict] | None = None) -> None:
        """Attribute each profiled regressed test; `changes` is called for the diff only when there is one."""
        if not profiles:
            return
        regressed = self._regressed() if regressed is None else regressed
        diff = changes()
        self.changed = [(f.file, f.qualname) for f in diff.functions if f.kind != "deleted"]
        for nodeid, (head, base) in profiles.items():
            if nodeid in regressed:
                self.attributions[nodeid] = attribute(nodeid, regressed[nodeid].regressed_metrics, head, base, diff)

    # ---- judging and reporting (plain session or xdist controller) ----------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if _is_worker(self.config) or self.settings.side or self.settings.profile:
            if _is_worker(self.config):
                output = self.config.workeroutput  # type: ignore[attr-defined]  # pytest-xdist sets it on a worker
                output["soap"] = [m.to_dict() for m in self.measurements.values()]
                output["soap_profiles"] = {nodeid: p.to_dict() for nodeid, p in self.profiles.items()}
            elif self.settings.side:
                protocol.write(self.settings.side, protocol.Measured(dict(self.measurements)))
            if self.settings.profile and not _is_worker(self.config):
                protocol.write(self.settings.profile, protocol.Profiled(dict(self.profiles)))
            return
        measured = list(self.measurements.values())
        if self.settings.save:
            self._save(measured, interrupted=session.exitstatus == pytest.ExitCode.INTERRUPTED)
        self.verdicts = self._judge(measured)
        mismatch = self._few_matched(measured)
        self.failure = self.failure or mismatch
        regressed = [v for v in self.verdicts if v.verdict == compare.Verdict.REGRESSED]
        if regressed and not self.failure:
            self.failure = terminal.failure_line(regressed)
        unconfirmed = [v for v in self.verdicts if v.verdict == compare.Verdict.UNCONFIRMED]
        if unconfirmed and self.settings.strict and not self.failure:
            self.failure = terminal.failure_line(unconfirmed, "unconfirmed (--soap-strict)")
        if self.settings.json:
            try:
                json_report.write(self.settings.json, self.verdicts, self.baseline, self.settings, self.paired,
                                  list(self.attributions.values()), self.loop, mismatch)
            except OSError as e:
                self.failure = self.failure or f"pytest-soap: cannot write the JSON report {self.settings.json}: {e.strerror}"
        if self.failure and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _few_matched(self, measured: list[Measurement]) -> str | None:
        """A gate that finds few of its baseline's tests in the run compares nothing, so it must not pass quietly.
        Fewer than half on both sides is what a moved rootdir or a renamed suite looks like; a subset run
        or a wave of new tests leaves one side matched."""
        if self.settings.save:
            return None
        if self.paired is not None:
            known: Mapping[str, object] = {} if self.paired.problem else self.paired.base
            where = f"the run of {self.paired.ref.name}"
            remedy = f"if the tests moved, there is nothing on {self.paired.ref.name} to compare them with"
        else:
            known = self.baseline.tests if self.baseline else {}
            where = f"the baseline {self._shown(self.settings.baseline)}"
            remedy = "run pytest from the same folder with the same rootdir, or re-save the baseline with --soap-save"
        ran = [m.nodeid for m in measured if m.judged]
        matched = sum(nodeid in known for nodeid in ran)
        if not known or not ran or 2 * matched >= len(ran) or 2 * matched >= len(known):
            return None
        unmatched = next(n for n in ran if n not in known)
        return (f"pytest-soap: only {matched} of this run's {len(ran)} tests are in {where} ({len(known)} tests), "
                f"so they were not compared: node ids differ (this run has {unmatched!r}, it has {next(iter(known))!r}); "
                f"{remedy}")

    def _judge(self, measured: list[Measurement]) -> list[compare.TestVerdict]:
        thresholds = self.settings.thresholds
        if self.paired is None:
            tests = self.baseline.tests if self.baseline else {}
            return [compare.judge(m, tests.get(m.nodeid), thresholds) for m in measured]
        if self.paired.problem:
            self.notes.append(f"not compared: {self.paired.problem}")
        base = self.paired.base
        duet = self.paired.sides == "duet"
        verdicts = [compare.judge_paired(m, base[m.nodeid], thresholds, duet) if m.nodeid in base
                    else compare.TestVerdict(m, None, "new" if m.judged else m.outcome) for m in measured]
        removed = [compare.TestVerdict(Measurement(nodeid, outcome="removed"), b.figures(), "removed")
                   for nodeid, b in base.items() if nodeid not in self.measurements]
        return verdicts + removed

    def _save(self, measured: list[Measurement], interrupted: bool) -> None:
        if interrupted:
            self.notes.append("interrupted: the baseline was not saved")
            return
        try:
            previous = store.load(self.settings.baseline)
        except store.BaselineError:
            previous = None  # a corrupt old baseline is what --soap-save is for replacing
        try:
            count = store.save(self.settings.baseline, measured, previous, self.config.rootpath)
            self.notes.append(f"saved {count} tests to the baseline {self._shown(self.settings.baseline)}")
        except store.BaselineError as e:
            self.failure = f"pytest-soap: {e}"

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if _is_worker(self.config) or self.settings.side or self.settings.profile:
            return
        compared_with = (f"against {self.ref.describe()}{self._sides()}" if self.ref else
                         terminal.baseline_line(self.baseline, self.settings, self._shown(self.settings.baseline)))
        terminal.write(terminalreporter, self.verdicts, compared_with, self.settings, self.notes, self.attributions)
        if self.loop:
            terminal.write_loop(terminalreporter, self.loop)
        if self.failure:
            terminalreporter.write_line(self.failure, red=True, bold=True)

    def _sides(self) -> str:
        if self.paired is None or self.paired.problem:
            return ""
        if self.paired.sides == "duet":
            return "\nsides: duet (each test ran on both sides at the same moment, on two cores)"
        return "\nsides: sequential (one side's tests, then the other's)"

    def pytest_unconfigure(self) -> None:
        self.meter.close()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        """xdist controller: a worker finished; take its measurements (reruns included)."""
        output = getattr(node, "workeroutput", {})
        for data in output.get("soap", []):
            m = Measurement.from_dict(data)
            self.measurements[m.nodeid] = m
        for nodeid, data in output.get("soap_profiles", {}).items():
            self.profiles[nodeid] = Profile.from_dict(data)

    def _shown(self, path) -> str:
        try:
            return str(path.relative_to(self.config.invocation_params.dir))
        except ValueError:
            return str(path)


def _benchmark_median(item: pytest.Item) -> float | None:
    """The median round of pytest-benchmark's fixture, when the test used it and it ran."""
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    stats = getattr(getattr(fixture, "stats", None), "stats", None)
    median = getattr(stats, "median", None) if stats is not None and getattr(stats, "data", None) else None
    return float(median) if median else None

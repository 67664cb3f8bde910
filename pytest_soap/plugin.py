"""pytest hooks only: each hook hands its work to the stage that does it.

A session's role is decided once, as the session starts, and each role registers the thin plugins it needs:

  gate        a plain session: measures (Recorder), then judges, reports and saves (Gate)
  worker      a pytest-xdist worker: measures, and hands its measurements to the controller (Handover)
  controller  the xdist controller: gathers the workers' measurements, then judges and reports (Gate)
  side        a process measuring one side for a --soap-against session: measures (and serves its
              requests), and hands its measurements over in a file (Handover)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from enum import Enum
from typing import TYPE_CHECKING

import pytest

from . import against, compare, hookspecs, protocol, rootdir, store
from .attribute import Attribution, attribute, profiles_memory
from .changes import ChangeSet, changed_functions
from .config import MARKER, Settings, add_options
from .measure.functions import Profile, project_root
from .recorder import Recorder
from .records import Measurement, Outcome
from .report import json_report, terminal
from .rerun import profile_each, run_more
from .soap import Prior, read_priors

if TYPE_CHECKING:
    from .soap.session import LoopRun


class Role(Enum):
    GATE = "gate"
    WORKER = "worker"
    CONTROLLER = "controller"
    SIDE = "side"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    hookspecs.register_hookspecs(pluginmanager)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


# The machine's CPU time as the session started up.
STARTED = pytest.StashKey["against.CpuClock | None"]()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    rootdir.settle(early_config, args)  # before conftests load: they and the node ids depend on the rootdir
    early_config.stash[STARTED] = against.CpuClock.read()  # for --soap-sides auto: see against.idle_cores


def role_of(config: pytest.Config, settings: Settings) -> Role:
    if settings.side or settings.profile or settings.serve:
        return Role.SIDE
    if hasattr(config, "workerinput"):
        return Role.WORKER
    if config.pluginmanager.hasplugin("dsession"):
        return Role.CONTROLLER
    return Role.GATE


# What pytest_configure found, for pytest_sessionstart to register the role's plugins with.
CONFIGURED = pytest.StashKey[tuple[Settings, "store.Baseline | None", "against.Ref | None"]]()
PRIORS = pytest.StashKey[Mapping[str, Prior]]()  # --soap-prior's revisions by target key, read at configure time


def pytest_configure(config: pytest.Config) -> None:
    """The options and the baseline or ref, checked here so that a bad one stops the run with one line."""
    config.addinivalue_line("markers", MARKER)
    settings = Settings.from_config(config)
    if not settings.enabled:
        return
    baseline = ref = None
    try:
        if settings.side or settings.profile or settings.serve:
            pass  # measuring one side for a --soap-against session: no baseline, no ref of its own
        elif settings.against:
            if settings.save:
                raise pytest.UsageError("pytest-soap: --soap-save and --soap-against do not mix: choose one baseline")
            ref = against.resolve(config.rootpath, settings.against)
        elif not settings.save:
            baseline = store.load(settings.baseline)
        if settings.optimize and settings.prior and not (settings.side or settings.profile or settings.serve):
            config.stash[PRIORS] = read_priors(settings.prior)  # the loop runs in the controlling session only
    except (store.BaselineError, against.AgainstError, ValueError) as e:
        raise pytest.UsageError(f"pytest-soap: {e}") from None
    config.stash[CONFIGURED] = settings, baseline, ref


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """The role is decided here, not at configure time: pytest-xdist makes a session its controller in its
    own pytest_configure, which runs last."""
    config = session.config
    if CONFIGURED not in config.stash:
        return
    settings, baseline, ref = config.stash[CONFIGURED]
    role = role_of(config, settings)
    # Registered in this order, the Gate's wrapper of pytest_runtestloop is outside the Recorder's: the
    # Recorder's end-of-loop runs (heaps, serving) come before the Gate's stages.
    # An xdist controller runs no test: its workers measure (a side's first pass may be distributed too).
    recorder = None
    if not config.pluginmanager.hasplugin("dsession"):
        recorder = Recorder(config, settings, baseline)
        config.pluginmanager.register(recorder, "soap-recorder")
    if role in (Role.WORKER, Role.SIDE):
        config.pluginmanager.register(Handover(config, settings, recorder), "soap-handover")
    else:
        gate = Gate(config, settings, baseline, ref, recorder)
        config.pluginmanager.register(gate, "soap-gate")
        gate.start_ref()


def gather(node, into: dict[str, Measurement]) -> None:
    """An xdist controller's part: a worker has finished, and its measurements (reruns included) join `into`."""
    for data in getattr(node, "workeroutput", {}).get("soap", []):
        m = Measurement.from_dict(data)
        into[m.nodeid] = m


class Handover:
    """A worker's or a side's end of the session: its measurements (and profiles) go to whoever judges them.
    A side whose first pass is distributed by xdist gathers its workers' measurements first."""

    def __init__(self, config: pytest.Config, settings: Settings, recorder: Recorder | None):
        self.config, self.settings, self.recorder = config, settings, recorder
        self.measurements: dict[str, Measurement] = recorder.measurements if recorder else {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            output = self.config.workeroutput  # type: ignore[attr-defined]  # pytest-xdist sets it on a worker
            output["soap"] = [m.to_dict() for m in self.measurements.values()]
            return
        if self.settings.side:
            protocol.write(self.settings.side, protocol.Measured(dict(self.measurements)))
        if self.settings.profile and self.recorder:
            protocol.write(self.settings.profile, protocol.Profiled(dict(self.recorder.profiles)))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        gather(node, self.measurements)


class Gate:
    """Judges and reports: a plain session's (with its Recorder) or the xdist controller's (with the
    workers' measurements). Its stages run at the end of the test loop: the ref's side and the paired
    verdicts (--soap-against), or the profiles against a saved baseline; then attribution and the loop."""

    def __init__(self, config: pytest.Config, settings: Settings, baseline: store.Baseline | None,
                 ref: against.Ref | None, recorder: Recorder | None):
        self.config, self.settings, self.baseline, self.ref, self.recorder = config, settings, baseline, ref, recorder
        # The xdist controller's come from its workers as each goes down.
        self.measurements: dict[str, Measurement] = recorder.measurements if recorder else {}
        self.ref_run: against.RefRun | None = None  # the ref's side, from the session's start (see start_ref)
        self.paired: against.PairedRun | None = None
        self.verdicts: list[compare.TestVerdict] | None = None  # judged once, when the measuring is over
        self.attributions: dict[str, Attribution] = {}
        self.loop: LoopRun | None = None  # the SOAP loop's run, with --soap-optimize
        self.changed: list[tuple[str, str]] = []  # the functions the diff added or modified: (file, qualname)
        self.notes: list[str] = []
        self.failure: str | None = None
        if recorder and settings.memory and not recorder.meter.measures_memory:
            self.notes.append("memory is not measured: this system has no /proc/self/clear_refs (Linux only)")
        if baseline and (baseline.machine.get("node"), baseline.python) != (store.machine()["node"],
                                                                             store.python_version()):
            self.notes.append("the baseline comes from another machine or Python: only gross changes are meaningful; "
                              "re-save it here with --soap-save")

    def start_ref(self) -> None:
        """The ref's worktree, and in a duet its process, as the session starts: the process starts up and
        collects while this one collects. Started after collection, the head's first test waited 0.4 s for it,
        half the cost of comparing a 0.8 s suite with its own HEAD."""
        if not self.ref or self.config.option.collectonly:
            return
        self.ref_run = against.RefRun(self.ref, list(self.config.invocation_params.args), list(self.config.args),
                                      self.config.invocation_params.dir, self.config.rootpath,
                                      self.settings.thresholds, xdist=self.config.pluginmanager.hasplugin("xdist"),
                                      warm=self.recorder is not None)
        self.ref_run.open()
        if self.recorder and self._duet():
            # Each test runs on both sides at once, test by test: the noise both share cancels in their ratio.
            self.recorder.partner = self.ref_run.start_duet()

    def close_ref(self) -> None:
        if self.recorder:
            self.recorder.partner = None
        if self.ref_run:
            self.ref_run.close()

    # ---- the stages, at the end of the test loop ----------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session):
        if not self.ref_run:
            result = yield
            if self.baseline and self.recorder and not session.shouldfail:
                self._profile_against_baseline(session)
            return result
        try:
            result = yield
            if not session.shouldstop and not session.shouldfail:
                self._measure_against(session, self.ref_run)
            return result
        finally:
            self.close_ref()

    def pytest_unconfigure(self) -> None:
        self.close_ref()  # a session stopped before its test loop (a collection error, Ctrl-C) has one open

    def _duet(self) -> bool:
        """--soap-sides: duet, or with auto, when a core is idle for each side."""
        if self.settings.sides != "auto":
            return self.settings.sides == "duet"
        return against.core_to_spare(self.config.stash.get(STARTED, None))

    def _measure_against(self, session: pytest.Session, ref_run: against.RefRun) -> None:
        # This session re-runs its own suspects; under xdist the workers are gone, and it cannot.
        items = {item.nodeid: item for item in session.items}
        recorder = self.recorder
        rerun = profile = None
        if recorder:
            rerun = lambda runs, then=None: run_more(items, runs, recorder, items.get(then or ""))
            profile = lambda wanted: profile_each(items, wanted, recorder)
        self.paired = ref_run.measure(self.measurements, rerun, profile)
        if self.paired.problem:
            self.notes.append(f"not compared: {self.paired.problem}")
        ref = self.paired.ref
        self._attribute(self.paired.profiles, lambda: changed_functions(ref.repo_root, ref.sha))
        self._optimize(ref.repo_root)

    def _profile_against_baseline(self, session: pytest.Session) -> None:
        """Against a saved baseline there is one side to profile: this one, in this process."""
        assert self.recorder is not None and self.baseline is not None  # the caller checks
        regressed = self._regressed()
        profiles = profile_each({item.nodeid: item for item in session.items},
                                {n: profiles_memory(v.regressed_metrics) for n, v in regressed.items()}, self.recorder)
        commit = self.baseline.commit
        self._attribute({n: (p, None) for n, p in profiles.items()},
                        lambda: changed_functions(self.config.rootpath, commit) if commit else
                        ChangeSet(None, [], [], "the baseline records no commit (it was saved outside a git "
                                                "repository): changed functions are unknown"))
        self._optimize(project_root(self.config.rootpath))

    def _optimize(self, root) -> None:
        """--soap-optimize: each function that regressed tests name first goes through the SOAP loop."""
        if not self.settings.optimize or not self.attributions:
            return
        from .soap import llm, session as loop_session  # the model's SDK loads only when the loop runs

        try:
            provider = llm.provider_for(self.config, self.settings.provider, self.settings.base_url)
        except llm.ModelUnavailable as e:
            self.notes.append(str(e))
            return
        # The session's passing tests: the loop's first run finds those that call a target, its covering tests.
        passed = {m.nodeid: m.figure("time_s") or 0.0 for m in self.measurements.values() if m.outcome == Outcome.PASSED}
        planned = loop_session.plan(list(self.attributions.values()), self._regressed(), root, self.changed, passed)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        quiet = bool(os.environ.get("CI"))
        progress = ((lambda line: None) if quiet or reporter is None
                    else (lambda line: reporter.write_line(f"pytest-soap: {line}")))
        self.loop = loop_session.run(planned, provider, self.settings.model, self.settings.iterations,
                                     self.settings.thresholds, root, self.settings.apply, progress,
                                     self.config.stash.get(PRIORS, {}))

    def _attribute(self, profiles: Mapping[str, tuple[Profile, Profile | None]],
                   changes: Callable[[], ChangeSet]) -> None:
        """Attribute each profiled regressed test; `changes` is called for the diff only when there is one."""
        if not profiles:
            return
        regressed = self._regressed()
        diff = changes()
        self.changed = [(f.file, f.qualname) for f in diff.functions if f.kind != "deleted"]
        for nodeid, (head, base) in profiles.items():
            if nodeid in regressed:
                self.attributions[nodeid] = attribute(nodeid, regressed[nodeid].regressed_metrics, head, base, diff)

    # ---- judging: once, when the measuring is over ---------------------------------------------
    def judged(self) -> list[compare.TestVerdict]:
        if self.verdicts is None:
            self.verdicts = self._judge(list(self.measurements.values()))
        return self.verdicts

    def _regressed(self) -> dict[str, compare.TestVerdict]:
        return {v.nodeid: v for v in self.judged() if v.verdict == compare.Verdict.REGRESSED}

    def _judge(self, measured: list[Measurement]) -> list[compare.TestVerdict]:
        thresholds = self.settings.thresholds
        if self.paired is None:
            tests = self.baseline.tests if self.baseline else {}
            return [compare.judge(m, tests.get(m.nodeid), thresholds) for m in measured]
        base, duet = self.paired.base, self.paired.sides == "duet"
        verdicts = [compare.judge_paired(m, base[m.nodeid], thresholds, duet, m.nodeid in self.paired.unsettled)
                    if m.nodeid in base
                    else compare.TestVerdict(m, None, compare.Verdict.NEW if m.judged else m.outcome) for m in measured]
        removed = [compare.TestVerdict(Measurement(nodeid, outcome=Outcome.REMOVED), b.figures(), compare.Verdict.REMOVED)
                   for nodeid, b in base.items() if nodeid not in self.measurements]
        return verdicts + removed

    # ---- reporting ----------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        measured = list(self.measurements.values())
        if self.settings.save:
            self._save(measured, interrupted=session.exitstatus == pytest.ExitCode.INTERRUPTED)
        verdicts = self.judged()
        mismatch = self._few_matched(measured)
        self.failure = self.failure or mismatch
        regressed = [v for v in verdicts if v.verdict == compare.Verdict.REGRESSED]
        if regressed and not self.failure:
            self.failure = terminal.failure_line(regressed)
        unconfirmed = [v for v in verdicts if v.verdict == compare.Verdict.UNCONFIRMED]
        if unconfirmed and self.settings.strict and not self.failure:
            self.failure = terminal.failure_line(unconfirmed, "unconfirmed (--soap-strict)")
        if self.settings.json:
            try:
                json_report.write(self.settings.json, verdicts, self.baseline, self.settings, self.paired,
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
        compared_with = (f"against {self.ref.describe()}{self._sides()}" if self.ref else
                         terminal.baseline_line(self.baseline, self.settings, self._shown(self.settings.baseline)))
        terminal.write(terminalreporter, self.judged(), compared_with, self.settings, self.notes, self.attributions)
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

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        gather(node, self.measurements)

    def _shown(self, path) -> str:
        try:
            return str(path.relative_to(self.config.invocation_params.dir))
        except ValueError:
            return str(path)

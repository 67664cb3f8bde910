"""The `pytest-soap` section at the end of the terminal output."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ..attribute import Attribution
from ..compare import TestVerdict, Verdict
from ..records import JUDGED_OUTCOMES, Outcome
from ..soap import OptimizationStatus
from ..store import Baseline
from . import units

TIME_NOTE = ("time: wall clock of each test's call, less waiting for a CPU and full garbage collections, "
             "no tracer running")
MEMORY_NOTE = ("memory: growth of resident memory during the call (peak and TMU); memray's exact heap for "
               "memory regressions")
# The order the counts are written in; any other verdict ("removed", "failed on ref"...) follows, in the order seen.
ORDER = (Verdict.REGRESSED, Verdict.UNCONFIRMED, Verdict.IMPROVED, Verdict.UNCHANGED, Verdict.NEW, Verdict.UNGATED, Verdict.EXCLUDED,
         Outcome.FAILED, Outcome.ERROR, Outcome.FLAKY, Outcome.SKIPPED, Outcome.XFAILED)
_PLACE: dict[str | None, int] = {v: i for i, v in enumerate(ORDER)}


# The verdicts listed test by test, with their evidence.
GROUPS = ((Verdict.REGRESSED, "REGRESSED"),
          (Verdict.UNCONFIRMED, "unconfirmed: past the line, but the rounds ran out before the evidence sufficed "
                                "(--soap-strict fails on these)"),
          (Verdict.IMPROVED, "improved"))


def counts(labels: Iterable[str | None]) -> list[str]:
    """"2 regressed", "1 unchanged"...: how many tests have each verdict (as TestVerdict.label writes it), in ORDER."""
    counted = Counter(labels)
    return [f"{n} {label}" for label, n in sorted(counted.items(), key=lambda item: _PLACE.get(item[0], len(ORDER)))]


def _metric_line(v) -> str:
    line = (f"{units.LABEL[v.metric]:>5}  {units.figure(v.metric, v.baseline)} → {units.figure(v.metric, v.current)}"
            f"  {units.ratio(v.ratio)}")
    if v.interval:
        line += f" [{v.interval[0]:.2f}–{v.interval[1]:.2f}]"
    if v.p_value is not None:
        line += f"  (median of {v.runs} runs, {v.test} p={v.p_value:.3g})"
    if v.verdict == Verdict.UNCONFIRMED:
        line += f"; {v.reason}"
    return line


def _heap_line(t: TestVerdict) -> str | None:
    heap = t.measurement.heap
    if heap is None:
        return None
    base = (t.baseline or {}).get("heap") or {}

    def change(metric: str) -> str:
        before = f"{units.figure(metric, base[metric])} → " if base.get(metric) is not None else ""
        return f"{units.LABEL[metric]} {before}{units.figure(metric, heap[metric])}"

    return f"heap by memray: {change('peak_mb')}, {change('tmu_mbs')}"


def failure_line(failing: list[TestVerdict], what: str = "regressed") -> str:
    worst = [f"{t.nodeid} ({', '.join(f'{units.LABEL[m]} {units.ratio(v.ratio)}' for m, v in t.metrics.items() if v.verdict == t.verdict)})"
             for t in failing[:3]]
    more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
    return f"pytest-soap: {len(failing)} test{'s' * (len(failing) != 1)} {what}: {'; '.join(worst)}{more}"


def baseline_line(baseline: Baseline | None, settings, shown: str) -> str:
    if settings.save:
        return f"this run is the new baseline at {shown}"
    if baseline is None:
        return (f"No baseline at {shown} yet: this run was measured, not compared. "
                "Record one with `pytest --soap --soap-save`, or compare with a git ref: `--soap-against main`.")
    return f"baseline {shown}: {baseline.describe()}"


def _amount(a: Attribution, value: float) -> str:
    """A figure of an attribution: a rise (+12.3 ms), or with one side's profile a cost in this run."""
    text = units.mebibytes(value) if a.memory else units.seconds(value)
    return f"+{text}" if a.rises else text


def cause_lines(a: Attribution) -> list[str]:
    """The functions blamed for one test, most to blame first, each with the figures its share comes from."""
    lines = []
    for c in a.causes:
        if a.memory:
            figures = [f"{_amount(a, c.delta_peak_mb)} at the peak"]
        else:
            figures = ([f"{_amount(a, c.delta_own_s)} own"] if c.delta_own_s > 0 else []) + (
                [f"{_amount(a, c.delta_cum_s)} with callees"] if c.delta_cum_s > c.delta_own_s else [])
        share = f"in {c.within}'s share" if c.within else f"{c.share:.0%} of it"
        lines.append(f"← {c.file}:{c.lineno} {c.qualname}  {share}; {c.reason}; {', '.join(figures)}")
    whole = f"; shares of {_amount(a, a.whole)}" if a.causes else ""
    lines.append(f"(from {a.evidence}{whole})")
    lines += a.notes
    return lines


def write(reporter, verdicts: list[TestVerdict], compared_with: str, settings, notes: list[str],
          attributions: dict[str, Attribution] | None = None) -> None:
    reporter.write_sep("=", "pytest-soap")
    write = reporter.write_line
    write(compared_with)
    write(f"{TIME_NOTE}; {MEMORY_NOTE if settings.memory else 'memory: not measured (--soap-memory off)'}")
    for note in notes:
        write(note)

    for kind, title in GROUPS:
        group = [t for t in verdicts if t.verdict == kind]
        if not group:
            continue
        write("")
        write(f"{title} ({len(group)}):", red=kind == Verdict.REGRESSED, yellow=kind == Verdict.UNCONFIRMED,
              green=kind == Verdict.IMPROVED, bold=True)
        for t in group:
            write(f"  {t.nodeid}")
            for metric in (m for m, v in t.metrics.items() if v.verdict == kind):
                write(f"    {_metric_line(t.metrics[metric])}")
            heap = _heap_line(t)
            if heap:
                write(f"    {heap}")
            if attributions and t.nodeid in attributions:
                for line in cause_lines(attributions[t.nodeid]):
                    write(f"    {line}")

    measured = [t for t in verdicts if t.measurement.samples and t.measurement.outcome in JUDGED_OUTCOMES]
    slowest = sorted(measured, key=lambda t: t.measurement.figure("time_s") or 0.0, reverse=True)[:settings.slowest]
    if slowest:
        write("")
        write(f"slowest {len(slowest)}:")
        for t in slowest:
            m = t.measurement
            memory = f"  peak {units.mebibytes(m.figure('peak_mb'))}" if m.figure("peak_mb") is not None else ""
            timer = "  (pytest-benchmark median)" if m.timer == "pytest-benchmark" else ""
            write(f"  {units.seconds(m.figure('time_s')):>9}{memory}  {t.nodeid}{timer}")

    if verdicts:
        write("")
        floor = units.seconds(settings.thresholds.min_time_s)
        write(f"{len(verdicts)} tests: {', '.join(counts(t.label for t in verdicts))}"
              + (f" (ungated: changes under {floor} or {units.mebibytes(settings.thresholds.min_memory_mb)})"
                 if any(t.verdict == Verdict.UNGATED for t in verdicts) else ""))


def loop_lines(loop) -> list[str]:
    """The SOAP loop's summary: each target's outcome, its figures before and after, its rounds and cost."""
    return [line for line, _ in _loop_lines(loop)]


def _loop_lines(loop) -> list[tuple[str, bool]]:
    """loop_lines, each with whether it heads an accepted target's lines (the terminal shows those in green)."""
    lines: list[tuple[str, bool]] = []
    for o in loop.optimizations:
        line = f"{o.file}::{o.qualname}  {o.status.upper()}"
        if o.before and o.after:
            line += (f"  time {units.seconds(o.before['time_s'])} → {units.seconds(o.after['time_s'])}, "
                     f"peak {units.mebibytes(o.before['peak_mb'])} → {units.mebibytes(o.after['peak_mb'])}"
                     " (a run of the regressed tests)")
        lines.append((line, o.status == OptimizationStatus.ACCEPTED))
        details: list[str] = []
        if o.reason:
            details.append(f"    {o.reason}")
        if o.behaviour:
            details.append(f"    behaviour: {o.behaviour}")
        if o.final_check:
            details.append(f"    final check: {o.final_check}")
        if o.sandbox:
            details.append(f"    sandbox: {o.sandbox}")
        details += [f"    round {c.iteration}: {c.status}{': ' + c.reason if c.reason else ''}" for c in o.candidates]
        if o.tokens["input"] or o.tokens["output"]:
            cost = f", about ${o.cost_usd:.2f}" if o.cost_usd is not None else ""
            details.append(f"    tokens: {o.tokens['input']} in ({o.tokens['cache_read']} from the cache), "
                           f"{o.tokens['output']} out{cost}")
        lines += [(d, False) for d in details]
    if loop.patch:
        lines.append((f"accepted revisions: {loop.patch} (git apply it, or rerun with --soap-apply)", False))
    lines += [(f"pytest-soap: {note}", False) for note in loop.notes]
    return lines


def write_loop(reporter, loop) -> None:
    reporter.write_sep("-", "SOAP loop")
    for line, accepted in _loop_lines(loop):
        reporter.write_line(line, green=accepted, bold=accepted)

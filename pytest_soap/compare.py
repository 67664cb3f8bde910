"""Verdicts: is a test's figure a real regression against its baseline, or noise?

A saved baseline is one old sample, so one slow run proves nothing. A test whose first run
crosses the threshold becomes a suspect and is run again (only suspects are, to keep the cost
low). It is called regressed when the median of its runs crosses the threshold by more than the
absolute floor AND a one-sided sign test says its runs sit above the threshold line more often
than chance would allow (p <= alpha); improved on the same evidence the other way round, which takes
its runs too (one fast run is no improvement either). The sign test assumes nothing about the shape of the noise,
which on a shared machine is skewed and heavy-tailed, and it needs no spread from the baseline,
which has none. With alpha 0.05 that takes 5 runs of 5 above the line (the default budget, so a
false suspect is let go at its first run below the line), or 7 of 8 with `--soap-rounds 8`.

Against a git ref both sides have runs, from several processes: see judge_paired.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace

from .records import GATED_METRICS, JUDGED_OUTCOMES, MEMORY_METRICS, Measurement, Outcome, TextEnum
from .stats import mann_whitney_greater, paired_ratio_interval, ratio_interval, sign_test_p, wilcoxon_greater


class Verdict(TextEnum):
    """What the gate says of a test, or of one of its metrics. A metric's verdict is one of the first five,
    declared worst first: a test's verdict is its metrics' worst (`rank`). A test that did not pass here has
    its Outcome for a verdict instead (see TestVerdict)."""

    REGRESSED = "regressed"
    # --soap-against: past the line with every process pair agreeing, but the rounds ran out before the
    # evidence sufficed. Shown and counted; it fails the run only with --soap-strict.
    UNCONFIRMED = "unconfirmed"
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    NEW = "new"  # no baseline figure to compare with
    UNGATED = "ungated"  # both figures under the floor, or nothing gated was measured
    EXCLUDED = "excluded"  # @pytest.mark.soap(skip=True)
    REMOVED = "removed"  # in the baseline, not in this run
    ON_REF = "on ref"  # --soap-against: the ref's side did not pass; it reads "<that outcome> on ref"

    @property
    def rank(self) -> int:
        """Its place in the declaration: the lower, the worse."""
        return _RANK[self]

    @classmethod
    def read(cls, text: str) -> str:
        """A verdict given as a string back as its member (a Verdict, else an Outcome); an unknown one stays as it is."""
        if isinstance(text, (Verdict, Outcome)):
            return text
        for kind in (cls, Outcome):
            try:
                return kind(text)
            except ValueError:
                pass
        return text


_RANK = {v: i for i, v in enumerate(Verdict)}


@dataclass(frozen=True)
class Thresholds:
    time_pct: float = 10.0
    memory_pct: float = 10.0
    min_time_s: float = 0.001
    min_memory_mb: float = 1.0
    alpha: float = 0.05  # the sign test against a saved baseline
    paired_alpha: float = 0.01  # Mann-Whitney U between the two sides of --soap-against

    def limit(self, metric: str) -> float:
        """The ratio a figure must exceed to count as slower or bigger."""
        return 1 + (self.time_pct if metric == "time_s" else self.memory_pct) / 100

    def floor(self, metric: str, duration_s: float) -> float:
        """The smallest absolute change that counts; below it values flap with noise."""
        if metric == "time_s":
            return self.min_time_s
        if metric == "peak_mb":
            return self.min_memory_mb
        # TMU: the memory floor held for the whole call. Below it, TMU is time noise times a few pages.
        return self.min_memory_mb * duration_s

    def for_test(self, m: Measurement) -> Thresholds:
        overrides = {}
        if m.threshold is not None:
            overrides["time_pct"] = float(m.threshold)
        if m.memory_threshold is not None:
            overrides["memory_pct"] = float(m.memory_threshold)
        return replace(self, **overrides) if overrides else self


@dataclass
class MetricVerdict:
    metric: str
    verdict: Verdict  # regressed | improved | unchanged | ungated | new
    baseline: float | None
    current: float | None
    ratio: float | None = None
    p_value: float | None = None
    runs: int = 0
    reason: str = ""
    interval: tuple[float, float] | None = None  # bootstrap 95% interval of the ratio (--soap-against)
    test: str = ""  # the statistical test behind p_value: sign test, Mann-Whitney U, Wilcoxon signed-rank
    pending: bool = False  # --soap-against: past the line, every process pair agrees, the evidence is short


@dataclass
class TestVerdict:
    measurement: Measurement
    baseline: dict | None
    # A Verdict; or, for a test that did not pass here, its Outcome (failed, skipped, flaky...). Typed str while
    # plugin.py passes a plain string ("removed"): __post_init__ makes it a member.
    verdict: str
    metrics: dict[str, MetricVerdict] = field(default_factory=dict)
    ref_outcome: str | None = None  # Verdict.ON_REF: the Outcome of the ref's side

    def __post_init__(self) -> None:
        self.verdict = Verdict.read(self.verdict)

    @property
    def label(self) -> str:
        """The verdict as the reports write it: its value, or "<the ref's outcome> on ref"."""
        if self.verdict == Verdict.ON_REF:
            return f"{self.ref_outcome} {Verdict.ON_REF}"
        return str(self.verdict)

    @property
    def nodeid(self) -> str:
        return self.measurement.nodeid

    @property
    def regressed_metrics(self) -> list[str]:
        return [m for m, v in self.metrics.items() if v.verdict == Verdict.REGRESSED]

    @property
    def improved_metrics(self) -> list[str]:
        return [m for m, v in self.metrics.items() if v.verdict == Verdict.IMPROVED]

    @property
    def pending(self) -> bool:
        """--soap-against: another round could settle some metric (see MetricVerdict.pending)."""
        return any(v.pending for v in self.metrics.values())


@dataclass(frozen=True)
class Line:
    """What a metric's figure must exceed to count as worse: base × limit, and base + floor."""

    base: float
    limit: float
    floor: float

    def crossed_by(self, value: float) -> bool:
        return value > self.base * self.limit and value - self.base > self.floor

    def undercut_by(self, value: float) -> bool:
        return self.base > value * self.limit and self.base - value > self.floor

    def beyond(self, value: float, worse: bool) -> bool:
        return self.crossed_by(value) if worse else self.undercut_by(value)


def saved_spread(metric: str, baseline: dict) -> float:
    """How far apart the test's saved runs lie, as a share of their median: noise one save cannot show."""
    values = [s[metric] for s in baseline.get("saves") or [] if s.get(metric) is not None]
    middle = statistics.median(values) if len(values) > 1 else 0.0
    return (max(values) - min(values)) / middle if middle > 0 else 0.0


def line(metric: str, m: Measurement, baseline: dict, t: Thresholds) -> Line | None:
    base = baseline.get(metric)
    if base is None:
        return None
    duration = max(m.figure("time_s") or 0.0, baseline.get("time_s") or 0.0)
    return Line(base, t.limit(metric) + saved_spread(metric, baseline), t.floor(metric, duration))


def judge_metric(metric: str, values: list[float], at: Line | None, alpha: float) -> MetricVerdict:
    if at is None or not values:
        return MetricVerdict(metric, Verdict.NEW, None, None)
    current = statistics.median(values)
    verdict = MetricVerdict(metric, Verdict.UNCHANGED, at.base, current, runs=len(values))
    verdict.ratio = current / at.base if at.base > 0 else None
    if max(at.base, current) < at.floor:
        verdict.verdict, verdict.reason = Verdict.UNGATED, "below the floor"
    elif at.crossed_by(current) or at.undercut_by(current):
        # An improvement takes the evidence a regression does: one lucky run is not one.
        worse = at.crossed_by(current)
        beyond = sum(at.beyond(v, worse) for v in values)
        verdict.p_value, verdict.test = sign_test_p(beyond, len(values)), "sign test"
        if verdict.p_value <= alpha:
            verdict.verdict = Verdict.REGRESSED if worse else Verdict.IMPROVED
        else:
            verdict.reason = (f"{beyond} of {len(values)} runs {'above' if worse else 'below'} the threshold: "
                              "not significant")
    return verdict


# The heap figure that confirms each memory metric. For TMU it is the heap's mean over the call: a TMU
# that grew only because the call took longer is the time verdict's business, and the heap's TMU moves
# with the time a tracked run happens to take.
HEAP_FIGURE = {"peak_mb": "peak_mb", "tmu_mbs": "mean_mb"}


def _heap_disagrees(metric: str, m: Measurement, baseline: dict, at: Line, t: Thresholds, worse: bool) -> bool:
    """Resident memory depends on what earlier tests left behind; memray's heap does not. When both sides
    have a heap figure and it did not cross the line (or, not `worse`, undercut it), the resident change
    was the process's, not the code's."""
    key = HEAP_FIGURE[metric]
    before, now = (baseline.get("heap") or {}).get(key), (m.heap or {}).get(key)
    if before is None or now is None:
        return False
    return not Line(before, at.limit, t.min_memory_mb).beyond(now, worse)


def _overall(m: Measurement, baseline: dict, metrics: dict[str, MetricVerdict]) -> TestVerdict:
    """A test's verdict is its worst metric's (Verdict.rank): regressed over improved over unchanged over new;
    ungated when no metric was judged."""
    verdict = min((v.verdict for v in metrics.values()), key=lambda v: v.rank, default=Verdict.UNGATED)
    return TestVerdict(m, baseline, verdict, metrics)


def judge(m: Measurement, baseline: dict | None, thresholds: Thresholds) -> TestVerdict:
    if m.outcome not in JUDGED_OUTCOMES:
        return TestVerdict(m, baseline, m.outcome)
    if m.skip:
        return TestVerdict(m, baseline, Verdict.EXCLUDED)
    if baseline is None:
        return TestVerdict(m, None, Verdict.NEW)
    t = thresholds.for_test(m)
    metrics = {}
    for metric in GATED_METRICS:
        if not m.values(metric):
            continue
        at = line(metric, m, baseline, t)
        verdict = metrics[metric] = judge_metric(metric, m.values(metric), at, t.alpha)
        worse = verdict.verdict == Verdict.REGRESSED
        if (at is not None and (worse or verdict.verdict == Verdict.IMPROVED) and metric in MEMORY_METRICS
                and _heap_disagrees(metric, m, baseline, at, t, worse)):
            verdict.verdict, verdict.reason = Verdict.UNCHANGED, f"resident memory {'grew' if worse else 'shrank'}, memray's heap did not"
    return _overall(m, baseline, metrics)


def partway(limit: float, margin: float) -> float:
    """A ratio line `margin` of the way from no change to `limit`."""
    return 1 + (limit - 1) * margin


def suspect_metrics(m: Measurement, baseline: dict | None, thresholds: Thresholds,
                    improvements: bool = False, margin: float = 1.0) -> list[str]:
    """Metrics whose figure so far crosses its line (or, asked, undercuts it): the test must run again.
    A margin under 1 moves the line that much closer to the base, so one low first reading of a real
    regression still makes it a suspect."""
    if baseline is None or not m.judged:
        return []
    t = thresholds.for_test(m)
    suspects = []
    for metric in GATED_METRICS:
        if (current := m.figure(metric)) is None or (at := line(metric, m, baseline, t)) is None:
            continue
        at = Line(at.base, partway(at.limit, margin), at.floor * margin)
        if at.crossed_by(current) or (improvements and at.undercut_by(current)):
            suspects.append(metric)
    return suspects


def undecided(m: Measurement, baseline: dict | None, thresholds: Thresholds, max_runs: int) -> bool:
    """Would another run change a suspect's verdict, either way? No once it is significant, or can no
    longer become so."""
    runs = len(m.samples)
    if runs >= max_runs or baseline is None:  # without a baseline nothing is a suspect
        return False
    t = thresholds.for_test(m)
    for metric in suspect_metrics(m, baseline, thresholds, improvements=True):
        at, current = line(metric, m, baseline, t), m.figure(metric)
        if at is None or current is None:  # never: a suspect has both
            continue
        worse = at.crossed_by(current)
        beyond = sum(at.beyond(v, worse) for v in m.values(metric))
        decided = sign_test_p(beyond, runs) <= t.alpha
        reachable = sign_test_p(beyond + max_runs - runs, max_runs) <= t.alpha
        if not decided and reachable:
            return True
    return False


# Side by side, a single first reading on each side can misjudge a test by 10-15% on a busy machine (a
# planted 1.2x read 1.03x): suspects are picked, and kept, at half the threshold.
SUSPECT_MARGIN = 0.5


def pairs_needed(metric: str, effect: float, limit: float) -> int:
    """Process pairs that must agree before a change is called real. Two can agree by chance a few percent
    past the line (a null run flagged a 100 ms test at 1.11x, p=0.008, on two pairs): a change in time (or
    TMU, which moves with it) under twice the threshold takes a third. Past that, it is more than the few
    percent a process drifts by; and peak memory does not drift with a process's speed. The judge passes
    the near end of the effect's interval, not its middle: a test whose runs scatter 2x (one of random
    length) read 1.99x, p=0.008, on two pairs of a null comparison, its interval reaching down to 1.18x."""
    return 2 if metric == "peak_mb" or effect >= limit**2 else 3


def judge_paired(m: Measurement, base: Measurement, thresholds: Thresholds, duet: bool = False,
                 unsettled: bool = False) -> TestVerdict:
    """A test measured on both sides in this run: regressed when the ratio crosses the line, a one-sided
    test on the rounds' runs says head is larger (p <= paired_alpha), and every pair of processes agrees,
    the first pass's included, so one slow process cannot make the verdict; close to the line that takes
    three pairs (see pairs_needed). Improved is the same evidence the other way round. The first pass stays
    out of the test, and out of the ratio: it was picked for being extreme.

    Sequential sides: the ratio of the two sides' medians, and Mann-Whitney U between their runs. In a
    `duet` the i-th runs of both sides ran at the same moment: the ratio is the median of the pairs' ratios
    and the test is Wilcoxon's signed-rank on their logs, so noise that hit both runs of a pair cancels.
    A test past the line whose pairs all agree, but whose evidence is short, is UNCONFIRMED (pending:
    another round could settle it), never unchanged; and so is an `unsettled` one (the rounds ran out while
    it was undecided) that any process pair read past the line."""
    figures = base.figures()
    if m.outcome not in JUDGED_OUTCOMES:
        return TestVerdict(m, figures, m.outcome)
    if base.outcome not in JUDGED_OUTCOMES:
        return TestVerdict(m, figures, Verdict.ON_REF, ref_outcome=base.outcome)
    if m.skip:
        return TestVerdict(m, figures, Verdict.EXCLUDED)
    t = thresholds.for_test(m)
    metrics = {}
    for metric in GATED_METRICS:
        head_values, base_values = m.round_values(metric), base.round_values(metric)
        if not head_values or not base_values:
            continue
        at = line(metric, m, figures | {metric: statistics.median(base_values)}, t)
        if at is None:  # never: the base's figure is given
            continue
        current = statistics.median(head_values)
        v = metrics[metric] = MetricVerdict(metric, Verdict.UNCHANGED, at.base, current, runs=len(head_values),
                                            ratio=current / at.base if at.base > 0 else None,
                                            interval=ratio_interval(head_values, base_values))
        pairs = list(zip(m.by_process(metric), base.by_process(metric)))  # each process pair's medians
        logs = _paired_logs(head_values, base_values) if duet else None
        if logs:
            v.ratio, v.interval = math.exp(statistics.median(logs)), paired_ratio_interval(head_values, base_values)
        shown = v.ratio or 0.0
        worse = at.crossed_by(current) if logs is None else shown > at.limit and current - at.base > at.floor
        better = at.undercut_by(current) if logs is None else shown * at.limit < 1 and at.base - current > at.floor
        if max(at.base, current) < at.floor:
            v.verdict, v.reason = Verdict.UNGATED, "below the floor"
        elif worse or better:
            larger, smaller = (current, at.base) if worse else (at.base, current)
            if logs is not None:
                v.p_value, v.test = wilcoxon_greater(logs if worse else [-d for d in logs]), "Wilcoxon signed-rank"
            else:
                v.p_value, v.test = (mann_whitney_greater(head_values, base_values) if worse
                                     else mann_whitney_greater(base_values, head_values)), "Mann-Whitney U"
            # A pair agrees when it reads the same way, past half the line: near the line a real change reads
            # under it in some pair (a planted 1.15x read 1.09x in a first pass and 1.14x in its round, and was
            # called unchanged). The pooled runs must still cross the line, significantly, on enough pairs.
            agree = all(Line(b, partway(at.limit, SUSPECT_MARGIN), at.floor * SUSPECT_MARGIN).beyond(h, worse)
                        for h, b in pairs)
            effect = _near_end(v.interval, worse) or (larger / smaller if smaller > 0 else math.inf)
            enough = len(pairs) >= pairs_needed(metric, effect, at.limit)
            significant = v.p_value <= t.paired_alpha
            if significant and agree and enough:
                v.verdict = Verdict.REGRESSED if worse else Verdict.IMPROVED
            else:
                v.pending = agree  # every pair agrees, but the runs or the pairs are too few: another round
                if agree and worse:
                    v.verdict = Verdict.UNCONFIRMED
                runs = f"{len(logs)} paired runs" if logs else f"{len(head_values)} and {len(base_values)} runs"
                v.reason = (f"p={v.p_value:.3g} over {runs}, {len(pairs)} process pairs{'' if agree else ' that disagree'}: "
                            + ("a change this close to the line needs a third pair" if significant and agree
                               else "not significant"))
        if unsettled and v.verdict == Verdict.UNCHANGED and any(Line(b, at.limit, at.floor).crossed_by(h) for h, b in pairs):
            v.verdict = Verdict.UNCONFIRMED
            v.reason = (f"process pairs read {', '.join(f'{h / b:.2f}x' for h, b in pairs if b > 0)}: "
                        "the rounds ran out before they agreed")
    return _overall(m, figures, metrics)


def _near_end(interval: tuple[float, float] | None, worse: bool) -> float | None:
    """The effect at the end of a ratio's interval nearer no change, as a factor over 1; None without one."""
    if not interval or min(interval) <= 0:
        return None
    return interval[0] if worse else 1 / interval[1]


def _paired_logs(head: list[float], base: list[float]) -> list[float] | None:
    """log(head / base) of each pair of runs made at the same moment; None when the runs do not pair up."""
    if len(head) != len(base) or not all(h > 0 and b > 0 for h, b in zip(head, base)):
        return None
    return [math.log(h / b) for h, b in zip(head, base)]


def paired_undecided(m: Measurement, base: Measurement, thresholds: Thresholds, rounds: int, max_rounds: int,
                     duet: bool = False) -> bool:
    """Should a suspect get another round? Not once a metric has regressed: that is the test's verdict.
    Otherwise yes while the rounds' median of a metric is past its line (either way) but not significant,
    or the process pairs disagree. Inside the line, the rounds have spoken."""
    if rounds >= max_rounds or not m.judged or not base.judged:
        return False
    metrics = judge_paired(m, base, thresholds, duet).metrics.values()
    return (not any(v.verdict == Verdict.REGRESSED for v in metrics)
            and any(v.verdict != Verdict.IMPROVED and v.p_value is not None for v in metrics))

"""Which tests of --soap-against get more runs, how many, and what those runs cost.

The first passes pick the suspects; a suspect past its whole line always gets its runs, one near it only
while they fit the budget (see affordable_suspects).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from . import compare
from .records import GATED_METRICS, Measurement

# Runs of each suspect in a round's fresh process, one base then one head process per round. A change far
# past its line, twice the threshold, is decided on two process pairs, and five runs a side can reach
# p < 0.01 in the first round. A change nearer the line needs a third pair anyway (compare.pairs_needed):
# its first round takes three runs a side, and most such suspects are noise that those settle. Each round
# costs two process start-ups, on networkx's suite half a plain run, so there are at most two.
FAR_RUNS, NEAR_RUNS = 5, 3
# In a duet, Wilcoxon's signed-rank test on n pairs can reach p = 2**-n at best: 7 pairs for p < 0.01 in one
# round. A duet's round costs one side's time, so its runs cost what the sequential ones did.
DUET_FAR_RUNS, DUET_NEAR_RUNS = 7, 4
# Runs a sequential round's fresh process makes of each suspect before those it keeps. A fresh process's first
# call runs cold (Python 3.11 specialises code as it runs): sqlparse's 20 ms test ran 15% slower first on
# both sides, and pooled unpaired, those runs left a real 1.19x at p=0.025 over four agreeing process pairs
# (unconfirmed in 2 gates of 5). In a duet the two sides' first runs are a pair and share the cold start.
WARM_UP_RUNS = 1

@dataclass
class RoundCost:
    """What a round would cost, estimated from the first passes: each of its two processes starts up like
    the base pass did (its wall time less its tests' time), then runs each suspect its number of times. In a
    duet the two processes start up and run at once: a round costs one side's time."""

    head: dict[str, Measurement]
    base: dict[str, Measurement]
    pass_s: float
    duet: bool = False

    @property
    def start_up(self) -> float:
        return max(self.pass_s - sum(m.figure("time_s") or 0 for m in self.base.values()), 0.0)

    def runs(self, nodeid: str, count: int) -> float:
        both = (self.head[nodeid].figure("time_s") or 0, self.base[nodeid].figure("time_s") or 0)
        return count * (max(both) if self.duet else sum(both))

    def __call__(self, runs: dict[str, int]) -> float:
        warm_up = 0 if self.duet else WARM_UP_RUNS
        return (1 if self.duet else 2) * self.start_up + sum(self.runs(n, count + warm_up) for n, count in runs.items())


# With fewer tests timed above the floor than this, their median ratio says little about the processes.
DRIFT_MIN_TESTS = 10


def process_drift(head: dict[str, Measurement], base: dict[str, Measurement], names: list[str],
                  thresholds: compare.Thresholds) -> float:
    """How much slower the head's first pass ran than the base's, as the median time ratio over the tests.
    Two processes can differ by 5% on every test (load, clock speed, memory layout), and most tests of a
    change are unchanged, so that is the processes' doing, not the code's. 1.0 when too few tests are timed,
    or when it reaches half the time threshold: that is as likely the change's doing. sqlparse's real 1.2x
    regression slows most of its tests by 8-13%; read as drift, the 8.5% of one first pass took it below the
    line and it was never a suspect. Its null comparisons drifted by 5% at most."""
    ratios = [h / b for n in names if (h := head[n].figure("time_s")) and (b := base[n].figure("time_s"))
              and max(h, b) >= thresholds.min_time_s]
    if len(ratios) < DRIFT_MIN_TESTS:
        return 1.0
    drift, reach = statistics.median(ratios), compare.partway(thresholds.limit("time_s"), compare.SUSPECT_MARGIN)
    return drift if 1 / reach < drift < reach else 1.0


def affordable_suspects(head: dict[str, Measurement], base: dict[str, Measurement], thresholds: compare.Thresholds,
                        cost: RoundCost, budget: float, among: Iterable[str] | None = None, runs: int | None = None,
                        start_ups: bool = True, margin: float = compare.SUSPECT_MARGIN) -> dict[str, int]:
    """The tests (of `among`, else all) that get more runs, with how many on each side: `runs`, else as
    many as a first round takes (see FAR_RUNS). They are picked on the figures so far, with the time and
    TMU of every base figure times process_drift. Every test past its whole line towards a regression gets
    them, whatever it costs. A test past only `margin` of it (a real regression that read low, or noise), or
    one past its whole line the other way, does while its runs cost at most `budget` seconds, the furthest
    from its base first; with `start_ups` (a round, not a recheck) that budget also pays the round's two
    process start-ups when no test past the line does. On networkx's suite a process's start-up is a third
    of a run, and 1.5 s tests drifting 5% tripled the gate's cost. Improvements inside the line get none:
    the gate does not need them, and 200 ms tests that looked 5% faster were a null run's dearest suspects."""
    both = [n for n, m in head.items() if n in base and m.judged and base[n].judged]
    drift = process_drift(head, base, both, thresholds)
    figures = {n: {k: v * drift if k in ("time_s", "tmu_mbs") and v is not None else v
                   for k, v in base[n].figures().items()} for n in both}
    candidates = both if among is None else [n for n in both if n in among]
    past_line = [n for n in candidates if compare.suspect_metrics(head[n], figures[n], thresholds)]
    near_line = [n for n in candidates if n not in past_line and (
                 compare.suspect_metrics(head[n], figures[n], thresholds, False, margin)
                 or compare.suspect_metrics(head[n], figures[n], thresholds, True))]

    def first_runs(n: str) -> int:
        """FAR_RUNS for a change that two process pairs can decide, else NEAR_RUNS (in a duet, theirs)."""
        far, near = (DUET_FAR_RUNS, DUET_NEAR_RUNS) if cost.duet else (FAR_RUNS, NEAR_RUNS)
        t = thresholds.for_test(head[n])
        for metric in compare.suspect_metrics(head[n], figures[n], thresholds, True, compare.SUSPECT_MARGIN):
            h, b = head[n].figure(metric), figures[n][metric]
            if h and b and compare.pairs_needed(metric, max(h / b, b / h), t.limit(metric)) == 2:
                return far
        return near

    def distance(n: str) -> float:
        ratios = [h / b for h, b in ((head[n].figure(k), figures[n].get(k)) for k in GATED_METRICS) if h and b]
        return max((abs(math.log(r)) for r in ratios), default=0.0)

    # With suspects past the line there is a round anyway, and a test near it costs only its own runs.
    chosen = {n: runs or first_runs(n) for n in past_line}
    budget -= cost({}) if start_ups and not past_line else 0.0
    for n in sorted(near_line, key=distance, reverse=True):
        count = runs or first_runs(n)
        if cost.runs(n, count) <= budget:
            chosen[n] = count
            budget -= cost.runs(n, count)
    return chosen

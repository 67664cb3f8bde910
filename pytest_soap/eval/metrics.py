"""The paper's table, round by round: pass@1, ET, MU, TMU and their normalised forms NET, NMU, NTMU.

pass@1 counts every problem (its canonical solution passing): a problem whose code fails the hidden tests at a
round, or whose initial code failed the public tests, counts as failed there. The efficiency figures cover
the problems that pass at every round, so that each round is measured on the same problems, as the paper's
scripts do with the problems common to every step. ET, MU and TMU are means over those problems; NET, NMU
and NTMU are ratios of sums against the canonical solutions of the same problems (EffiLearner's
report_variant.py: total ET over total canonical ET), not means of per-problem ratios, which a single tiny
canonical time would dominate. The same computation serves both scorers (run.METRICS): exact and paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .run import ProblemResult, ProblemStatus

# The Score field behind each column: ET is time_s, MU the peak, TMU the area (the heap's, or paper mode's RSS).
FIELDS = {"et": "time_s", "mu": "peak_mb", "tmu": "tmu_mbs"}


@dataclass
class RoundRow:
    round: int
    passed: int  # problems whose code passes the hidden tests at this round
    problems: int  # every problem with a working canonical solution
    measured: int  # the problems the figures cover: passing at every round
    et: float | None = None  # s, mean
    mu: float | None = None  # MiB, mean of the peaks
    tmu: float | None = None  # MiB·s, mean
    net: float | None = None
    nmu: float | None = None
    ntmu: float | None = None

    @property
    def pass_at_1(self) -> float | None:
        return self.passed / self.problems if self.problems else None

    def to_dict(self) -> dict:
        return {**asdict(self), "pass_at_1": self.pass_at_1}


def table(results: list[ProblemResult]) -> list[RoundRow]:
    scored = [r for r in results if r.status != ProblemStatus.BROKEN]
    rounds = max((len(r.rounds) for r in scored), default=0)
    steady = [r for r in scored if len(r.rounds) == rounds and all(s.passed for s in r.rounds)]
    rows = []
    for k in range(rounds):
        row = RoundRow(k, sum(1 for r in scored if k < len(r.rounds) and r.rounds[k].passed), len(scored), len(steady))
        if steady:
            for column, name in FIELDS.items():
                values = [getattr(r.rounds[k], name) for r in steady]
                reference = sum(getattr(r.canonical, name) for r in steady)
                setattr(row, column, sum(values) / len(values))
                setattr(row, "n" + column, sum(values) / reference if reference > 0 else None)
        rows.append(row)
    return rows


def change(first: float | None, last: float | None) -> float | None:
    """The relative change from `first` to `last`, as the paper prints it (-0.871 for -87.1%)."""
    if first is None or last is None or first == 0:
        return None
    return last / first - 1

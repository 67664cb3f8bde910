"""The statistics of the gate: small exact tests on a handful of samples, no distribution assumed."""

from __future__ import annotations

import random
import statistics
from functools import cache
from math import comb


def sign_test_p(above: int, runs: int) -> float:
    """P(at least `above` of `runs` fair coin flips land heads): the one-sided sign test."""
    return sum(comb(runs, k) for k in range(above, runs + 1)) / 2**runs


@cache
def _arrangements(n: int, m: int, u: int) -> int:
    """How many orderings of n x-values and m y-values give exactly u (x, y) pairs with x > y."""
    if u < 0 or u > n * m:
        return 0
    if n == 0 or m == 0:
        return 1 if u == 0 else 0
    # The largest value is an x (beating all m y-values) or a y (beating none).
    return _arrangements(n - 1, m, u - m) + _arrangements(n, m - 1, u)


def mann_whitney_greater(x: list[float], y: list[float]) -> float:
    """One-sided p-value that x tends to be larger than y (Mann-Whitney U, exact; ties count half).

    Exact for the few samples a gate can afford: with 6 and 6 the smallest p is 1/924.
    """
    n, m = len(x), len(y)
    if not n or not m:
        return 1.0
    u = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    # A half from ties rounds down: a larger p, the cautious side.
    return sum(_arrangements(n, m, k) for k in range(int(u), n * m + 1)) / comb(n + m, n)


def ratio_interval(head: list[float], base: list[float], confidence: float = 0.95,
                   resamples: int = 2000) -> tuple[float, float] | None:
    """Bootstrap percentile interval of median(head) / median(base); seeded, so a report is reproducible."""
    if not head or not base:
        return None
    if len(head) == len(base) == 1:  # every resample is the same ratio; most tests of a gate have one run a side
        return (head[0] / base[0],) * 2 if base[0] > 0 else None
    rng = random.Random(0)
    ratios = []
    for _ in range(resamples):
        b = statistics.median(rng.choices(base, k=len(base)))
        if b > 0:
            ratios.append(statistics.median(rng.choices(head, k=len(head))) / b)
    if not ratios:
        return None
    ratios.sort()
    tail = (1 - confidence) / 2
    return ratios[int(tail * (len(ratios) - 1))], ratios[int((1 - tail) * (len(ratios) - 1))]

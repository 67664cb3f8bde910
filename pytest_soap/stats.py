"""The statistics of the gate: small exact tests on a handful of samples, no distribution assumed."""

from __future__ import annotations

import math
import random
import statistics
from fractions import Fraction
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


# Exact up to here: the DP is n steps over n(n+1)+1 doubled rank sums of big integers, about 20 ms at 100 with ties.
WILCOXON_EXACT_UP_TO = 100


def _doubled_ranks(magnitudes: list[float]) -> list[int]:
    """Twice the average rank of each magnitude: a tie over ranks i..j gets i + j, an integer, so sums stay exact."""
    order = sorted(range(len(magnitudes)), key=magnitudes.__getitem__)
    doubled = [0] * len(magnitudes)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and magnitudes[order[end + 1]] == magnitudes[order[start]]:
            end += 1
        for k in range(start, end + 1):
            doubled[order[k]] = (start + 1) + (end + 1)
        start = end + 1
    return doubled


def _signed_rank_counts(ranks: tuple[int, ...]) -> list[int]:
    """counts[s]: how many of the 2^n sign assignments give the positive ranks the sum s.

    The dynamic programme of a 0/1 knapsack, one rank at a time: n steps over sum(ranks) + 1 sums,
    where enumerating would be 2^n.
    """
    counts = [1]
    for r in ranks:
        grown = counts + [0] * r
        for s, c in enumerate(counts):
            grown[s + r] += c
        counts = grown
    return counts


@cache
def _untied_counts(n: int) -> tuple[int, ...]:
    """The signed-rank distribution without ties (ranks 1..n), shared by every untied sample of n."""
    return tuple(_signed_rank_counts(tuple(range(1, n + 1))))


def _at_least(count: int, total: int) -> float:
    """count / total as a float never below the exact fraction: division rounds to nearest, possibly down."""
    p = count / total
    return p if Fraction(p) >= Fraction(count, total) else math.nextafter(p, math.inf)


def _wilcoxon_exact_greater(ranks2: list[int], positive2: int) -> float:
    """P(doubled positive-rank sum >= positive2) over all 2^n equally likely sign assignments."""
    n = len(ranks2)
    if all(r == 2 * (k + 1) for k, r in enumerate(sorted(ranks2))):  # no ties: halve and use the cached table
        counts: tuple[int, ...] | list[int] = _untied_counts(n)
        at = positive2 // 2
    else:
        counts, at = _signed_rank_counts(tuple(ranks2)), positive2
    return _at_least(sum(counts[at:]), 2**n)


def _wilcoxon_normal_greater(ranks2: list[int], positive2: int) -> float:
    """The normal approximation to the same tail, for samples too large for the exact count.

    Mean and variance come from the (average) ranks themselves, which is the usual tie correction.
    The continuity correction is half a step of the statistic's lattice: half a rank without ties, more
    when every rank is a multiple of a larger step (all |d| tied, the test is the sign test in disguise).
    Not exact, so not guaranteed above the exact p: without ties it is above it wherever p < 0.04 (measured
    for n = 60..300; the platykurtic exact tail outweighs the normal's below 1 - Φ(√3) ≈ 0.042).
    """
    mean = sum(ranks2) / 4  # each rank is positive with chance 1/2: E = sum(r) / 2, in doubled ranks / 4
    sd = math.sqrt(sum(r * r for r in ranks2)) / 4  # Var = sum(r^2) / 4, in doubled ranks / 16
    step = math.gcd(*ranks2) / 2  # in ranks: 1 without ties
    z = (positive2 / 2 - max(0.5, step / 2) - mean) / sd
    return min(1.0, 0.5 * math.erfc(z / math.sqrt(2)))


def wilcoxon_greater(differences: list[float]) -> float:
    """One-sided p-value that paired differences tend to be greater than 0 (Wilcoxon signed-rank test).

    Fed log(head / base) of paired runs, it asks whether head is slower than base without assuming a
    distribution, only that under no change each difference is as likely positive as negative (symmetry),
    which pairing earns: whatever slowed the machine slowed both runs of a pair.
    Zero differences say nothing about the direction and are dropped (Wilcoxon's original rule);
    ties in |d| share their average rank. Exact up to WILCOXON_EXACT_UP_TO differences: with 5, all
    positive, the smallest p is 1/32; beyond, the normal approximation with tie and continuity corrections.
    """
    nonzero = [d for d in differences if d != 0]
    if not nonzero:
        return 1.0
    ranks2 = _doubled_ranks([abs(d) for d in nonzero])
    positive2 = sum(r for r, d in zip(ranks2, nonzero) if d > 0)
    if len(nonzero) <= WILCOXON_EXACT_UP_TO:
        return _wilcoxon_exact_greater(ranks2, positive2)
    return _wilcoxon_normal_greater(ranks2, positive2)


def paired_ratio_interval(head: list[float], base: list[float], confidence: float = 0.95,
                          resamples: int = 2000) -> tuple[float, float] | None:
    """Bootstrap percentile interval of the median of head[i] / base[i]; seeded, so a report is reproducible.

    Pairs are resampled together: noise the two runs of a pair share (a busy machine, a cold cache)
    cancels in their ratio, so the interval is as wide as the pairs disagree, not as the machine wanders.
    Pairs whose base is not positive have no ratio and are left out.
    """
    if len(head) != len(base):
        raise ValueError(f"paired runs need as many heads as bases, not {len(head)} and {len(base)}")
    ratios = [h / b for h, b in zip(head, base) if b > 0]
    if not ratios:
        return None
    if len(ratios) == 1:  # every resample is the same ratio
        return (ratios[0],) * 2
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return medians[int(tail * (len(medians) - 1))], medians[int((1 - tail) * (len(medians) - 1))]

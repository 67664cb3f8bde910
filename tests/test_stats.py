"""The paired statistics: the Wilcoxon signed-rank test and the paired ratio interval, judged by exact values."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from itertools import product

import pytest

from pytest_soap.stats import (
    WILCOXON_EXACT_UP_TO,
    _doubled_ranks,
    _signed_rank_counts,
    _wilcoxon_exact_greater,
    _wilcoxon_normal_greater,
    paired_ratio_interval,
    ratio_interval,
    wilcoxon_greater,
)


def brute_force_p(differences: list[float]) -> Fraction:
    """Every sign pattern written out: average ranks as Fractions, the share of patterns with W+ >= the observed."""
    d = [x for x in differences if x != 0]
    if not d:
        return Fraction(1)
    magnitudes = sorted(abs(x) for x in d)
    rank = {m: Fraction(sum(k + 1 for k, v in enumerate(magnitudes) if v == m), magnitudes.count(m))
            for m in magnitudes}
    ranks = [rank[abs(x)] for x in d]
    observed = sum(r for r, x in zip(ranks, d) if x > 0)
    hits = sum(1 for signs in product((0, 1), repeat=len(d)) if sum(r for r, s in zip(ranks, signs) if s) >= observed)
    return Fraction(hits, 2 ** len(d))


# --- wilcoxon_greater: exact values -----------------------------------------------------------------------------

def test_all_positive_five_is_one_in_32():
    assert wilcoxon_greater([0.1, 0.2, 0.3, 0.4, 0.5]) == 1 / 32


def test_one_positive_is_a_coin_flip():
    assert wilcoxon_greater([0.7]) == 0.5


def test_all_negative_is_one():
    assert wilcoxon_greater([-0.1, -0.2, -0.3, -0.4, -0.5]) == 1.0


def test_empty_and_all_zero_are_one():
    assert wilcoxon_greater([]) == 1.0
    assert wilcoxon_greater([0.0, 0.0, -0.0]) == 1.0


def test_a_small_case_by_hand():
    # d = 1, -2, 3, 4: ranks 1..4, W+ = 1 + 3 + 4 = 8. Subsets of {1,2,3,4} with sum >= 8:
    # {1,3,4}=8, {2,3,4}=9, {1,2,3,4}=10 -> 3 of 16.
    assert wilcoxon_greater([1.0, -2.0, 3.0, 4.0]) == 3 / 16


def test_a_tie_by_hand():
    # d = 1, -1, 2: |d| ranks 1.5, 1.5, 3 (doubled 3, 3, 6), W+ = 4.5. Sums over the 8 sign patterns:
    # 0, 1.5, 1.5, 3, 3, 4.5, 4.5, 6 -> 3 of 8 reach 4.5.
    assert wilcoxon_greater([1.0, -1.0, 2.0]) == 3 / 8


def test_zeros_are_dropped():
    assert wilcoxon_greater([0.0, 0.1, 0.2, 0.0, 0.3, 0.4, 0.5]) == 1 / 32


def test_doubled_ranks_stay_integers():
    assert _doubled_ranks([5.0, 1.0, 5.0, 3.0, 5.0]) == [8, 2, 8, 4, 8]  # ranks 4, 1, 4, 2, 4


def test_dp_counts_sign_patterns():
    assert _signed_rank_counts((1, 2, 3)) == [1, 1, 1, 2, 1, 1, 1]
    assert sum(_signed_rank_counts(tuple(range(1, 61)))) == 2**60  # exact at 60 without enumerating 2^60


# --- wilcoxon_greater: against brute force ----------------------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 13))
def test_dp_equals_brute_force(n):
    rng = random.Random(n)
    for trial in range(8):
        if trial % 2:  # small integers: plenty of ties in |d| and zeros
            d = [float(rng.randint(-3, 3)) for _ in range(n)]
        else:
            d = [round(rng.gauss(0.3, 1), 1) for _ in range(n)]
        exact = brute_force_p(d)
        p = wilcoxon_greater(d)
        assert p == float(exact) or (p > exact and math.nextafter(p, 0) < exact), (d, p, exact)


def test_p_is_never_below_the_exact_fraction():
    # 2^-60-scale counts do not divide exactly into floats; the rounding must go up, never down.
    for d in ([float(k) for k in range(1, 61)], [float(k) if k % 3 else -float(k) for k in range(1, 61)]):
        ranks2 = _doubled_ranks([abs(x) for x in d])
        positive2 = sum(r for r, x in zip(ranks2, d) if x > 0)
        counts = _signed_rank_counts(tuple(ranks2))
        assert Fraction(wilcoxon_greater(d)) >= Fraction(sum(counts[positive2:]), 2**60)


# --- the normal approximation beyond the exact range ------------------------------------------------------------

@pytest.mark.parametrize("levels", [None, 20, 3, 1])
def test_normal_within_001_of_exact_at_80(levels):
    """Every attainable statistic of n=80, without ties and with few, many and all |d| tied."""
    rng = random.Random(80)
    magnitudes = [rng.random() if levels is None else float(rng.randint(1, levels)) for _ in range(80)]
    ranks2 = _doubled_ranks(magnitudes)
    counts = _signed_rank_counts(tuple(ranks2))
    tail = 0
    for s in range(len(counts) - 1, -1, -1):
        tail += counts[s]
        if counts[s]:
            assert abs(_wilcoxon_normal_greater(ranks2, s) - tail / 2**80) <= 0.01, (s, tail / 2**80)
    middle = sum(ranks2) // 2
    assert _wilcoxon_exact_greater(ranks2, middle) == pytest.approx(sum(counts[middle:]) / 2**80)


def test_normal_is_cautious_where_a_gate_decides():
    ranks2 = list(range(2, 161, 2))  # n=80 without ties
    for s in range(0, len(_signed_rank_counts(tuple(ranks2))), 2):
        exact = _wilcoxon_exact_greater(ranks2, s)
        if exact < 0.04:
            assert _wilcoxon_normal_greater(ranks2, s) >= exact


def test_beyond_the_exact_range_the_normal_answers():
    n = WILCOXON_EXACT_UP_TO + 20
    rng = random.Random(7)
    d = [rng.gauss(0, 1) for _ in range(n)]
    ranks2 = _doubled_ranks([abs(x) for x in d])
    assert wilcoxon_greater(d) == _wilcoxon_normal_greater(ranks2, sum(r for r, x in zip(ranks2, d) if x > 0))
    assert wilcoxon_greater([abs(x) for x in d]) < 1e-20
    assert wilcoxon_greater([-abs(x) for x in d]) == pytest.approx(1.0)


# --- behaviour on synthetic samples -----------------------------------------------------------------------------

def test_size_under_the_null():
    """Symmetric around 0: p <= alpha in at most alpha of samples, allowing for 2000 draws' binomial spread."""
    rng = random.Random(0)
    ps = [wilcoxon_greater([rng.gauss(0, 0.05) for _ in range(9)]) for _ in range(2000)]
    assert sum(p <= 0.05 for p in ps) / len(ps) <= 0.065
    assert sum(p <= 0.01 for p in ps) / len(ps) <= 0.02


def test_power_against_a_20_percent_slowdown():
    rng = random.Random(1)
    shift = math.log(1.2)
    ps = [wilcoxon_greater([shift + rng.gauss(0, 0.05) for _ in range(9)]) for _ in range(500)]
    assert sum(p <= 0.01 for p in ps) / len(ps) >= 0.95


def test_scale_leaves_p_unchanged():
    rng = random.Random(2)
    for _ in range(50):
        d = [rng.gauss(0.02, 0.05) for _ in range(rng.randint(1, 15))]
        for c in (1e-6, 0.3, 7.0, 1e6):
            assert wilcoxon_greater([c * x for x in d]) == wilcoxon_greater(d)


def test_shift_up_never_raises_p():
    rng = random.Random(3)
    for _ in range(50):
        d = [rng.gauss(0, 0.05) for _ in range(10)]
        ps = [wilcoxon_greater([x + shift for x in d]) for shift in (-0.1, -0.02, 0.0, 0.02, 0.1)]
        assert ps == sorted(ps, reverse=True)


def test_a_limit_is_a_shift_of_the_log_ratios():
    # The gate asks "slower than the limit?" with log(head/base) - log(limit): a 20% slowdown passes a 30% limit.
    rng = random.Random(4)
    d = [math.log(1.2) + rng.gauss(0, 0.02) for _ in range(9)]
    assert wilcoxon_greater([x - math.log(1.1) for x in d]) == 1 / 512
    assert wilcoxon_greater([x - math.log(1.3) for x in d]) == 1.0


# --- paired_ratio_interval --------------------------------------------------------------------------------------

def shared_noise_pairs(n: int = 9, seed: int = 5) -> tuple[list[float], list[float]]:
    """base wanders by factors 0.5..2 (a busy machine); its paired head is 1.2x it with 2% noise of its own."""
    rng = random.Random(seed)
    base = [1.0 * 2 ** rng.uniform(-1, 1) for _ in range(n)]
    head = [b * 1.2 * math.exp(rng.gauss(0, 0.02)) for b in base]
    return head, base


def test_pairing_makes_the_interval_tight():
    head, base = shared_noise_pairs()
    paired = paired_ratio_interval(head, base)
    unpaired = ratio_interval(head, base)
    assert paired is not None and unpaired is not None
    assert 1.1 <= paired[0] <= 1.2 <= paired[1] <= 1.3
    # The same runs unpaired: the machine's wander is in the interval, which cannot tell 1.2 from 1.0.
    assert unpaired[1] - unpaired[0] > 5 * (paired[1] - paired[0])
    assert unpaired[0] < 1.0 < 1.2 < unpaired[1]


def test_paired_interval_edges():
    assert paired_ratio_interval([], []) is None
    assert paired_ratio_interval([1.0, 2.0], [0.0, -1.0]) is None
    assert paired_ratio_interval([3.0], [2.0]) == (1.5, 1.5)
    assert paired_ratio_interval([3.0, 5.0], [2.0, 0.0]) == (1.5, 1.5)  # a pair without a base ratio is left out
    with pytest.raises(ValueError):
        paired_ratio_interval([1.0, 2.0], [1.0])


def test_paired_interval_is_deterministic():
    head, base = shared_noise_pairs(seed=6)
    assert paired_ratio_interval(head, base) == paired_ratio_interval(head, base)

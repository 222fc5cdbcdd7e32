"""The paired ratio of two timings and its distribution-free interval (analysis.timing)."""

import math

import numpy as np
import pytest

from qpeft.analysis.timing import latency_figures, paired_ratio


def test_the_interval_of_fifteen_pairs_spans_the_fourth_to_the_twelfth_ratio():
    base = [2.0] * 15
    ours = [2.0 * (1 + i / 100) for i in (7, 3, 11, 0, 14, 5, 9, 1, 12, 6, 2, 13, 8, 4, 10)]  # shuffled
    ratio = paired_ratio(ours, base)
    assert ratio.pairs == 15
    assert ratio.median == pytest.approx(1.07)
    assert (ratio.low, ratio.high) == (pytest.approx(1.03), pytest.approx(1.11))
    tail = sum(math.comb(15, j) for j in range(4)) / 2**15  # P(Bin(15, 1/2) <= 3) = 576 / 32768
    assert ratio.coverage == pytest.approx(1 - 2 * tail)


def test_too_few_pairs_give_the_whole_range_with_its_own_lower_coverage():
    ratio = paired_ratio([1.0, 3.0, 2.0, 5.0, 4.0], [1.0] * 5)
    assert (ratio.low, ratio.median, ratio.high) == (1.0, 3.0, 5.0)
    assert ratio.coverage == pytest.approx(1 - 2 / 32)


def test_the_interval_holds_the_true_median_ratio_as_often_as_it_claims():
    # skewed, drifting timings: base and ours share each round's drift, ours is 1.03x base in median
    rng = np.random.default_rng(0)
    trials, covered, claimed = 4000, 0, []
    for _ in range(trials):
        drift = rng.lognormal(0.0, 0.2, 15)
        base = 2.0 * drift * rng.lognormal(0.0, 0.02, 15)
        ours = 2.0 * 1.03 * drift * rng.lognormal(0.0, 0.02, 15)
        ratio = paired_ratio(list(ours), list(base))
        covered += ratio.low <= 1.03 <= ratio.high
        claimed.append(ratio.coverage)
    assert set(claimed) == {claimed[0]} and claimed[0] >= 0.95
    # 0.965 claimed; the binomial spread over 4,000 trials is 0.003
    assert abs(covered / trials - claimed[0]) < 0.012


def test_unpaired_or_empty_timings_are_refused():
    with pytest.raises(ValueError, match="equally many"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="equally many"):
        paired_ratio([], [])
    with pytest.raises(ValueError, match="positive base"):
        paired_ratio([1.0], [0.0])


def test_a_shift_in_the_hosts_speed_mid_run_leaves_the_paired_ratio_in_place():
    # the pattern of one qaa_speed.py run here: the host ~10% faster from the 13th of 25 rounds on, ours 1.02x
    # base in every round, one slow step of ours in the fast stretch. The ratio of the two medians compares the
    # slowest fast-stretch step of each (1.061 here); the paired median stays at 1.02.
    rng = np.random.default_rng(1)
    speed = np.where(np.arange(25) < 12, 2.1, 1.9)
    base = speed * rng.uniform(0.995, 1.005, 25)
    ours = 1.02 * base
    ours[-1] *= 1.04
    ratio = paired_ratio(list(ours), list(base))
    assert np.median(ours) / np.median(base) > 1.04
    assert ratio.median == pytest.approx(1.02)
    assert ratio.low == pytest.approx(1.02) and ratio.high == pytest.approx(1.02)


def test_latency_figures_give_the_median_ratio_and_its_interval_from_the_pairs_ratios():
    ratios = [1.0, 1.2, 0.9, 1.1, 1.3, 1.05, 0.95]
    figures = latency_figures(ratios, 0.95)
    assert figures["latency_vs_base"] == pytest.approx(1.05)
    # 7 pairs: no ranks inside the range reach 95%, so the whole range at 1 - 2 / 2**7
    assert (figures["latency_vs_base_low"], figures["latency_vs_base_high"]) == (0.9, 1.3)
    assert figures["latency_vs_base_coverage"] == pytest.approx(1 - 2 / 128)
    assert figures["latency_ratios"] == ratios
    shuffled = latency_figures(list(reversed(ratios)), 0.95)
    assert {**shuffled, "latency_ratios": ratios} == figures  # the order of the pairs does not matter

"""The ratio of two things timed in pairs (one method's step or generation against another's, each pair back
to back): the median of the per-pair ratios and a distribution-free interval for it. Pure numbers, no torch,
so that the results and the report can pool and read them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any


@dataclass(frozen=True)
class PairedRatio:
    """The median of the per-pair ratios ours_i / base_i and an interval [low, high] that holds the true median
    ratio with probability ``coverage``, over ``pairs`` pairs."""

    median: float
    low: float
    high: float
    coverage: float
    pairs: int


def paired_ratio(ours: Sequence[float], base: Sequence[float], confidence: float = 0.95) -> PairedRatio:
    """The median of ours_i / base_i over timing pairs (the two taken back to back, so that drift in the
    machine's speed hits both alike) and the sign-test interval for that median: order statistics
    r_(k) .. r_(n + 1 - k) with the largest k whose binomial tail P(Bin(n, 1/2) < k) is at most (1 - confidence)
    / 2. It assumes only independent pairs, no distribution (timings are skewed by the host's bursts, so a
    normal interval would not hold), and its coverage is exact for the chosen ranks, reported as ``coverage``
    (at least ``confidence``; with n < 6 pairs no ranks reach 95% and the interval is min .. max with its own,
    lower, coverage).

    Written here rather than taken from scipy: qpeft's core does not depend on scipy.
    """
    return median_ratio(pair_ratios(ours, base), confidence)


def pair_ratios(ours: Sequence[float], base: Sequence[float]) -> list[float]:
    """ours_i / base_i for each timing pair."""
    if len(ours) != len(base) or not ours:
        raise ValueError(f"paired_ratio needs equally many timings, at least one: got {len(ours)} and {len(base)}")
    if min(base) <= 0 or min(ours) < 0:
        raise ValueError("paired_ratio needs positive base timings and non-negative timings of ours")
    return [o / b for o, b in zip(ours, base, strict=True)]


def median_ratio(ratios: Sequence[float], confidence: float = 0.95) -> PairedRatio:
    """``paired_ratio`` from the pairs' ratios themselves (pooled over seeds, say)."""
    if not ratios:
        raise ValueError("median_ratio needs at least one ratio")
    ratios = sorted(ratios)
    n = len(ratios)
    pmf = [math.comb(n, j) / 2**n for j in range(n + 1)]  # P(Bin(n, 1/2) = j)
    k, tail = 1, pmf[0]  # ranks k .. n + 1 - k, 1-based; tail = P(Bin < k)
    while k < (n + 1) / 2 and tail + pmf[k] <= (1 - confidence) / 2:
        tail += pmf[k]
        k += 1
    return PairedRatio(median(ratios), ratios[k - 1], ratios[n - k], 1 - 2 * tail, n)


def latency_figures(ratios: Sequence[float], confidence: float) -> dict[str, Any]:
    """A method's generation latency against the base model from its pairs' ratios (method / base, each pair
    timed back to back): ``latency_vs_base`` their median, ``latency_vs_base_low`` .. ``_high`` its
    distribution-free interval at ``latency_vs_base_coverage``, and the ratios themselves, so that the
    figures of several seeds can be pooled."""
    ratio = median_ratio(ratios, confidence)
    return {"latency_vs_base": ratio.median, "latency_vs_base_low": ratio.low, "latency_vs_base_high": ratio.high,
            "latency_vs_base_coverage": ratio.coverage, "latency_ratios": list(ratios)}

"""Generation latency of a model: wall time per generated token, timed alternately against the base model;
and the ratio of two methods' paired timings with a distribution-free interval."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

import torch


@torch.no_grad()
def generation_seconds(model: torch.nn.Module, ids: torch.Tensor, new_tokens: int) -> float:
    """Wall time of greedy generation of exactly ``new_tokens`` after each prompt of ``ids``."""
    model.eval()
    config = model.generation_config
    started = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                   pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def paired_generation_ms(
    model: torch.nn.Module, base_model: torch.nn.Module, ids: torch.Tensor, new_tokens: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Each repeat's (model, base model) milliseconds per generated token, the two timed one after the other
    (after one short warm-up run of each), so that the i-th entries of the two lists form a pair. The one that
    goes first alternates, so that neither always runs on the machine its partner has just warmed (or heated)."""
    generation_seconds(model, ids, 2)
    generation_seconds(base_model, ids, 2)
    ours, base = [], []
    per_token = 1000.0 / (ids.shape[0] * new_tokens)
    for repeat in range(repeats):
        for timings, timed in ((ours, model), (base, base_model))[:: 1 if repeat % 2 == 0 else -1]:
            timings.append(generation_seconds(timed, ids, new_tokens) * per_token)
    return ours, base


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
    if len(ours) != len(base) or not ours:
        raise ValueError(f"paired_ratio needs equally many timings, at least one: got {len(ours)} and {len(base)}")
    if min(base) <= 0 or min(ours) < 0:
        raise ValueError("paired_ratio needs positive base timings and non-negative timings of ours")
    return median_ratio([o / b for o, b in zip(ours, base, strict=True)], confidence)


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

"""Paired bootstrap over test items (and seeds): confidence intervals and p-values for every quality figure.

Every method, seed and metric is scored on the SAME resampled item indices, so the differences between
methods are paired and their noise largely cancels. The item indices are drawn exactly as
``sacrebleu.significance`` draws them (``default_rng(seed).choice(items, (resamples, items))``), and a
resample's BLEU is corpus BLEU of the summed per-item sufficient statistics, as sacrebleu computes it; with
``seed=12345`` (sacrebleu's default ``SACREBLEU_SEED``) and one seed per method the BLEU resamples and
intervals are sacrebleu's own (to the float32 precision in which sacrebleu sums the statistics).

The bootstrap is written here rather than taken from sacrebleu because sacrebleu covers neither
ROUGE/BERTScore (no sufficient statistics in its sense) nor resampling over training seeds, and because
its paired p-value centres the *absolute* differences and counts strictly greater ones, which gives
p = 1/(resamples+1) for a system compared with itself. Here the signed differences are centred and a
difference at least as extreme as the observed one counts, with sacrebleu's +1 correction.

With several seeds per method, each resample also draws seeds with replacement (the same seed positions
for every method: methods are paired by seed) and the resample's value is the mean over the drawn seeds of
the metric on the drawn items, so the intervals carry the seed-to-seed spread as well as the test-set one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qpeft.utils.errors import UsageError

GENERATION_METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1")
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "exact_match")
#: Each task's quality figures, its main one first (the one findings rank by and the cross-task summary shows).
TASK_METRICS = {"generation": GENERATION_METRICS, "classification": CLASSIFICATION_METRICS}
METRICS = GENERATION_METRICS
# sacrebleu's my_log: the log of a zero precision, floored so that the score becomes 0 without a warning
_LOG_ZERO = -9999999999.0


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference position; items with fewer references are padded with None."""
    depth = max(len(refs) for refs in references)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(depth)]


def bleu_statistics(predictions: list[str], references: list[list[str]]) -> np.ndarray:
    """Per-item BLEU sufficient statistics, shape (items, 10), as sacrebleu.significance resamples them.

    Columns: hypothesis length, closest reference length, matching 1..4-grams, total 1..4-grams. Summed over
    any set of items they give that set's corpus BLEU (``bleu`` is the sum over all items).
    """
    from sacrebleu.metrics import BLEU

    stats = BLEU()._extract_corpus_statistics(predictions, reference_streams(references))
    return np.asarray(stats, dtype=np.int64).reshape(len(predictions), -1)


@dataclass
class SystemScores:
    """One method's output for one seed: its predictions and their per-item scores (0-100)."""

    predictions: list[str]
    item_scores: dict[str, list[float]]  # rouge1, rouge2, rougeL, bertscore_f1 (when computed), one per item


def significant(p: float | None, alpha: float = 0.05) -> bool:
    """Whether a p-value rejects "no difference" at level ``alpha``; None (no comparison) never does."""
    return p is not None and p < alpha


def bleu_from_statistics(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0-100) of summed sufficient statistics (..., 2 + 2 * orders), vectorised over leading axes.

    Mirrors sacrebleu's ``BLEU.compute_bleu`` for the settings ``qpeft.evaluation.metrics.bleu`` uses ('exp' smoothing,
    no effective order): calling sacrebleu once per resample, method and seed in Python would dominate the
    bootstrap's time.
    """
    stats = np.asarray(stats, dtype=np.float64)
    orders = (stats.shape[-1] - 2) // 2
    sys_len, ref_len = stats[..., 0], stats[..., 1]
    correct, total = stats[..., 2 : 2 + orders], stats[..., 2 + orders :]
    with np.errstate(divide="ignore", invalid="ignore"):
        brevity = np.where(sys_len >= ref_len, 1.0, np.exp(1.0 - ref_len / sys_len))
        # 'exp' smoothing: the k-th order without a match gets precision 100 / (2^k * total)
        smoothed = 100.0 / (2.0 ** np.cumsum(correct == 0, axis=-1) * total)
        precision = np.where(correct == 0, smoothed, 100.0 * correct / total)
        # sacrebleu stops at the first order without n-grams, leaving it and the higher orders at 0
        precision = np.where(np.cumsum(total == 0, axis=-1) > 0, 0.0, precision)
        log_precision = np.where(precision > 0, np.log(precision), _LOG_ZERO)
    # summed order by order, as sacrebleu does, so that the full sample reproduces its score to the last digits
    log_sum = sum(log_precision[..., n] for n in range(orders))
    return np.where(correct.any(axis=-1), brevity * np.exp(log_sum / orders), 0.0)


def bootstrap_comparison(
    systems: dict[str, list[SystemScores]],
    references: list[list[str]],
    reference_method: str = "lora",
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    metrics: tuple[str, ...] = METRICS,
) -> dict[str, dict[str, Any]]:
    """Point estimate, percentile interval and paired p-value against ``reference_method`` for every metric.

    ``systems`` maps a method to one ``SystemScores`` per seed, in the same seed order for every method.
    Returns ``{method: {"point": {metric: value}, "ci": {metric: [low, high]}, "p_vs_reference": {metric: p}}}``;
    a metric a method lacks is left out of its entry, and p is None for the reference itself and for a metric
    the reference lacks.
    """
    _check(systems, references, reference_method)
    resampled = _resamples(systems, references, metrics, resamples, seed)
    baseline = resampled[reference_method]
    results: dict[str, dict[str, Any]] = {}
    for method, by_metric in resampled.items():
        entry: dict[str, Any] = {"point": {}, "ci": {}, "p_vs_reference": {}}
        for metric, (point, values) in by_metric.items():
            entry["point"][metric] = point
            entry["ci"][metric] = _interval(values, confidence)
            compare = method != reference_method and metric in baseline
            entry["p_vs_reference"][metric] = (
                paired_p_value(values - baseline[metric][1], point - baseline[metric][0]) if compare else None
            )
        results[method] = entry
    return results


def paired_p_value(differences: np.ndarray, observed: float) -> float:
    """Two-sided paired bootstrap p-value of an observed difference, given its resampled differences.

    The resampled differences are centred (the null hypothesis: no difference) and those at least as far from
    0 as the observed one are counted; the +1 keeps the test from rejecting more often than its level.
    """
    centred = differences - differences.mean()
    extreme = int(np.count_nonzero(np.abs(centred) >= abs(observed)))
    return (extreme + 1) / (len(differences) + 1)


def _check(systems: dict[str, list[SystemScores]], references: list[list[str]], reference_method: str) -> None:
    """Refuse inputs that cannot be paired: a missing reference method, unequal seed or item counts."""
    if reference_method not in systems:
        raise UsageError(f"the reference method {reference_method!r} is not among {sorted(systems)}")
    seed_counts = {method: len(runs) for method, runs in systems.items()}
    if len(set(seed_counts.values())) != 1 or 0 in seed_counts.values():
        raise UsageError(f"paired resampling needs the same number of seeds for every method, got {seed_counts}")
    for method, runs in systems.items():
        for run in runs:
            lengths = {len(run.predictions), *(len(values) for values in run.item_scores.values())}
            if lengths != {len(references)}:
                raise UsageError(f"{method}: {sorted(lengths)} items scored, the test set has {len(references)}")


def _resamples(
    systems: dict[str, list[SystemScores]],
    references: list[list[str]],
    metrics: tuple[str, ...],
    resamples: int,
    seed: int,
) -> dict[str, dict[str, tuple[float, np.ndarray]]]:
    """{method: {metric: (point estimate, its value on each resample)}} on one shared draw of items and seeds."""
    items, seeds = len(references), len(next(iter(systems.values())))
    rng = np.random.default_rng(seed)
    # drawn first and in sacrebleu's way, so that one seed per method reproduces sacrebleu's resamples
    item_draws = rng.choice(items, size=(resamples, items), replace=True)
    seed_draws = rng.choice(seeds, size=(resamples, seeds), replace=True)
    # how often each item is drawn in each resample: sums and means over a resample become one matrix product
    offsets = items * np.arange(resamples)[:, None]
    counts = np.bincount((item_draws + offsets).ravel(), minlength=resamples * items)
    counts = counts.reshape(resamples, items).astype(np.float64)
    resampled = {}
    for method, runs in systems.items():
        by_metric = {}
        for metric in metrics:
            per_seed = _per_seed(runs, references, metric, counts)
            if per_seed is not None:
                points, values = per_seed
                by_metric[metric] = (float(points.mean()), np.take_along_axis(values, seed_draws, axis=1).mean(1))
        resampled[method] = by_metric
    return resampled


def _per_seed(
    runs: list[SystemScores], references: list[list[str]], metric: str, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(full-sample value per seed, (resamples, seeds) value per resample and seed), None if a seed lacks it."""
    if metric == "bleu":
        from sacrebleu.metrics import BLEU

        stats = np.stack([bleu_statistics(run.predictions, references) for run in runs], axis=1)  # items, seeds, 10
        # the point estimate is sacrebleu's own score of the full sums, i.e. sacrebleu.corpus_bleu
        points = np.array([BLEU()._compute_score_from_stats(total.tolist()).score for total in stats.sum(0)])
        sums = (counts @ stats.reshape(len(references), -1)).reshape(len(counts), len(runs), -1)
        return points, bleu_from_statistics(sums)
    if metric == "macro_f1":
        gold = [refs[0] for refs in references]
        points = np.array([macro_f1_of_counts(np.ones((1, len(gold))), run.predictions, gold)[0] for run in runs])
        return points, np.stack([macro_f1_of_counts(counts, run.predictions, gold) for run in runs], axis=1)
    if any(metric not in run.item_scores for run in runs):
        return None
    scores = np.array([run.item_scores[metric] for run in runs], dtype=np.float64)  # seeds, items
    return scores.mean(1), counts @ scores.T / scores.shape[1]


def macro_f1_of_counts(counts: np.ndarray, predictions: list[str], gold: list[str]) -> np.ndarray:
    """Macro-F1 (0-100) of each resample, given how often it draws each item (resamples, items).

    As ``evaluation.classification.macro_f1``: the mean F1 over the labels that occur, as gold or predicted,
    in the resample; F1 = 2 TP / (predicted + gold) per label.
    """
    labels = sorted(set(gold) | set(predictions))
    predicted = np.array([[p == label for p in predictions] for label in labels], dtype=np.float64)  # labels, items
    actual = np.array([[g == label for g in gold] for label in labels], dtype=np.float64)
    hits, shown, present = counts @ (predicted * actual).T, counts @ predicted.T, counts @ actual.T
    occurring = (shown + present) > 0
    f1 = np.where(occurring, 200.0 * hits / np.where(occurring, shown + present, 1.0), 0.0)
    return f1.sum(1) / occurring.sum(1)


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    """Percentile interval with sacrebleu's order statistics (at 95 %: the (n//40)-th from either end)."""
    ordered = np.sort(values)
    # the small epsilon keeps e.g. 1000 * (1 - 0.9) / 2 = 49.999... from flooring to 49
    lower = int(np.floor(len(ordered) * (1.0 - confidence) / 2.0 + 1e-9))
    return [float(ordered[lower]), float(ordered[len(ordered) - lower - 1])]

"""Convergence and gradient-flow figures of one training log.

Pure functions of the per-step rows of ``train_log.csv`` (columns step, loss,
learning_rate, grad_norm, elapsed_s, tokens_seen, plus method extras).

Smoothing: a **centred moving average** over an odd window of about 5% of the logged
steps (at least 3; ``smoothing_window``). It is centred rather than an exponential
moving average because an EMA lags the raw curve, which would push every "step at which
the loss got there" later by a method-independent delay; near both ends the window
shrinks to the steps that exist. Non-finite losses are left out of every average.

Figures (``convergence_figures``):

- ``best_smoothed_loss``: the lowest value of the smoothed curve; ``loss_drop_pct``: how far
  it lies below the first smoothed value, in percent of that value (a run whose loss
  barely moved "converges" at once by the next figure, and this one says so);
- ``steps_to_margin``: the first logged step whose smoothed loss is within ``margin``
  (default 5%) of that best, i.e. <= best + margin * |best|; ``steps_to_margin_pct`` is the
  same as a percentage of the run's steps. It measures how fast a method reaches *its
  own* plateau, so read it together with the plateau's height;
- ``loss_at_25pct``, ``loss_at_50pct``: the smoothed loss at the first logged step at or
  after that fraction of the run;
- ``final_smoothed_loss``: the smoothed loss at the last step;
- ``loss_tail_std``: the sample standard deviation of the raw loss over the last 10% of
  the logged steps (at least 2 steps): how much the loss still moves at the end;
- ``grad_norm_median``, ``grad_norm_p95``, ``grad_norm_max``: over steps with a finite
  gradient norm (the norm before clipping, as the Trainer logs it); p95 by linear
  interpolation between order statistics;
- ``non_finite_steps``: steps whose loss or gradient norm is not finite.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_MARGIN = 0.05
DEFAULT_FRACTIONS = (0.25, 0.5)
DEFAULT_TAIL = 0.1


def read_log(path: Path) -> dict[str, list[float]]:
    """The numeric columns of a ``train_log.csv`` (missing or unparsable cells become NaN)."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for name in rows[0] if rows else []:
        values = []
        for row in rows:
            try:
                values.append(float(row[name]))
            except (TypeError, ValueError):
                values.append(math.nan)
        columns[name] = values
    return columns


def finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def smoothing_window(count: int) -> int:
    """An odd window of about 5% of ``count`` steps, at least 3 (or ``count`` when shorter)."""
    window = max(3, 2 * round(0.025 * count) + 1)
    if count < window:
        window = count if count % 2 else max(count - 1, 1)
    return window


def smooth(values: Sequence[float], window: int | None = None) -> list[float]:
    """Centred moving average over ``window`` (odd) steps; non-finite values are skipped.

    A position whose whole window is non-finite stays NaN.
    """
    count = len(values)
    if count == 0:
        return []
    window = smoothing_window(count) if window is None else window
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the smoothing window must be a positive odd number, got {window}")
    half = window // 2
    # Prefix sums over the finite values, so every window costs O(1).
    sums, counts = [0.0], [0]
    for value in values:
        ok = math.isfinite(value)
        sums.append(sums[-1] + (value if ok else 0.0))
        counts.append(counts[-1] + ok)
    out = []
    for i in range(count):
        lo, hi = max(0, i - half), min(count, i + half + 1)
        n = counts[hi] - counts[lo]
        out.append((sums[hi] - sums[lo]) / n if n else math.nan)
    return out


def steps_to_margin(steps: Sequence[float], smoothed: Sequence[float], margin: float = DEFAULT_MARGIN) -> int | None:
    """The first step at which ``smoothed`` is within ``margin`` of its own minimum."""
    pairs = [(s, v) for s, v in zip(steps, smoothed, strict=True) if math.isfinite(v)]
    if not pairs:
        return None
    best = min(v for _, v in pairs)
    threshold = best + margin * abs(best)
    return int(next(s for s, v in pairs if v <= threshold))


def value_at_fraction(steps: Sequence[float], values: Sequence[float], fraction: float,
                      total_steps: float | None = None) -> float | None:
    """The value at the first step at or after ``fraction`` of ``total_steps`` (default: the last step)."""
    if not steps:
        return None
    total = steps[-1] if total_steps is None else total_steps
    target = fraction * total
    for step, value in zip(steps, values, strict=True):
        if step >= target - 1e-9:
            return value if math.isfinite(value) else None
    return None


def tail_std(values: Sequence[float], fraction: float = DEFAULT_TAIL) -> float | None:
    """Sample standard deviation of the finite values in the last ``fraction`` of the run (>= 2 values)."""
    if not values:
        return None
    size = max(2, math.ceil(fraction * len(values)))
    tail = finite(values[-size:])
    if len(tail) < 2:
        return None
    mean = sum(tail) / len(tail)
    return math.sqrt(sum((v - mean) ** 2 for v in tail) / (len(tail) - 1))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation (NumPy's default)."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(position), math.ceil(position)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)


def gradient_stats(grad_norms: Sequence[float]) -> dict[str, float | None]:
    """Median, 95th percentile and maximum of the finite gradient norms."""
    ok = finite(grad_norms)
    return {
        "grad_norm_median": percentile(ok, 50),
        "grad_norm_p95": percentile(ok, 95),
        "grad_norm_max": max(ok) if ok else None,
    }


def non_finite_steps(losses: Sequence[float], grad_norms: Sequence[float] | None = None) -> int:
    """Steps whose loss, or gradient norm, is NaN or infinite."""
    grads = grad_norms if grad_norms is not None else [0.0] * len(losses)
    return sum(1 for loss, grad in zip(losses, grads, strict=True)
               if not (math.isfinite(loss) and math.isfinite(grad)))


def fraction_key(fraction: float) -> str:
    return f"loss_at_{round(100 * fraction):d}pct"


def convergence_figures(
    log: dict[str, list[float]],
    margin: float = DEFAULT_MARGIN,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    tail: float = DEFAULT_TAIL,
    window: int | None = None,
    total_steps: int | None = None,
) -> dict[str, Any]:
    """Every scalar figure of one run's log (see the module docstring)."""
    steps, losses = log.get("step", []), log.get("loss", [])
    grads = log.get("grad_norm", [math.nan] * len(losses))
    smoothed = smooth(losses, window)
    total = total_steps if total_steps is not None else (steps[-1] if steps else None)
    reached = steps_to_margin(steps, smoothed, margin)
    finite_smoothed = finite(smoothed)
    best = min(finite_smoothed) if finite_smoothed else None
    first = finite_smoothed[0] if finite_smoothed else None
    figures: dict[str, Any] = {
        "logged_steps": len(steps),
        "best_smoothed_loss": best,
        "loss_drop_pct": 100.0 * (first - best) / abs(first) if first else None,
        "steps_to_margin": reached,
        "steps_to_margin_pct": 100.0 * reached / total if reached is not None and total else None,
    }
    for fraction in fractions:
        figures[fraction_key(fraction)] = value_at_fraction(steps, smoothed, fraction, total)
    figures["final_smoothed_loss"] = smoothed[-1] if smoothed and math.isfinite(smoothed[-1]) else None
    figures["loss_tail_std"] = tail_std(losses, tail)
    figures.update(gradient_stats(grads))
    figures["non_finite_steps"] = non_finite_steps(losses, grads)
    return figures


def loss_curve(log: dict[str, list[float]], window: int | None = None) -> dict[str, Any]:
    """The curves a report plots: steps, raw and smoothed loss, gradient norm, elapsed seconds, and the
    validation loss (null at the steps where it was not measured)."""
    losses = log.get("loss", [])
    window = smoothing_window(len(losses)) if window is None else window
    return {
        "step": [int(s) for s in log.get("step", [])],
        "loss": [_json_number(v) for v in losses],
        "smoothed": [_json_number(v) for v in smooth(losses, window)],
        "grad_norm": [_json_number(v) for v in log.get("grad_norm", [])],
        "elapsed_s": [_json_number(v) for v in log.get("elapsed_s", [])],
        "validation_loss": [_json_number(v) for v in log.get("validation_loss", [math.nan] * len(losses))],
        "smoothing_window": window,
    }


def _json_number(value: float) -> float | None:
    """JSON has no NaN: non-finite values become null."""
    return value if math.isfinite(value) else None

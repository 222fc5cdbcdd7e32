"""Mean and spread of every figure over seeds.

A figure is a number, or a dict / list of figures (e.g. QAA's robustness settings), and
the same figure from several seeds is aggregated leaf by leaf: numbers by their mean and
sample standard deviation (n - 1 in the denominator; undefined, None, for one seed).
Booleans, strings and None are not averaged: a value that agrees across seeds is kept,
one that differs becomes None. Non-finite numbers and missing values are left out of the
statistics and ``n`` says how many seeds a number came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MISSING = object()


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def mean_std(values: Sequence[Any]) -> dict[str, Any]:
    """{"mean", "std", "min", "max", "n"} of the finite numbers among ``values``."""
    numbers = [float(v) for v in values if is_number(v) and math.isfinite(v)]
    n = len(numbers)
    if not n:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = sum(numbers) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in numbers) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "min": min(numbers), "max": max(numbers), "n": n}


def _present(values: Sequence[Any]) -> list[Any]:
    return [v for v in values if v is not MISSING]


def mean_value(values: Sequence[Any]) -> Any:
    """The mean-structure of one figure over seeds (a number whose seeds agree keeps its type)."""
    values = _present(values)
    if not values:
        return None
    if all(is_number(v) or v is None for v in values) and any(is_number(v) for v in values):
        numbers = [v for v in values if is_number(v)]
        if all(v == numbers[0] for v in numbers):
            return numbers[0]
        return mean_std(numbers)["mean"]
    if all(isinstance(v, dict) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: mean_value([v.get(k, MISSING) for v in values]) for k in keys}
    if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:
        return [mean_value(list(items)) for items in zip(*values, strict=True)]
    return values[0] if all(v == values[0] for v in values) else None


def spread_value(values: Sequence[Any]) -> Any:
    """``mean_std`` at every numeric leaf of one figure over seeds; None where nothing is numeric."""
    values = _present(values)
    if not values:
        return None
    if all(is_number(v) or v is None for v in values) and any(is_number(v) for v in values):
        return mean_std(values)
    if all(isinstance(v, dict) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        out = {k: spread_value([v.get(k, MISSING) for v in values]) for k in keys}
        out = {k: v for k, v in out.items() if v is not None}
        return out or None
    if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:
        items = [spread_value(list(items)) for items in zip(*values, strict=True)]
        return items if any(item is not None for item in items) else None
    return None


def aggregate_methods(per_seed: dict[str, dict[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """From {seed: {method: figures}} to ({method: mean figures}, {method: {figure: mean_std}})."""
    methods = list(dict.fromkeys(name for seed in per_seed.values() for name in seed))
    means, spread = {}, {}
    for name in methods:
        values = [seed.get(name, MISSING) for seed in per_seed.values()]
        means[name] = mean_value(values) or {}
        spread[name] = spread_value(values) or {}
    return means, spread

"""Reading a ``results.json`` payload: the one copy of the accessors the tables, findings and plots share."""

from __future__ import annotations

import math
from typing import Any

from qpeft.experiment.results import BASELINES, FAILED
from qpeft.settings import AnalysisSettings


def number(raw: Any) -> float | None:
    """``raw`` as a float when it is a finite number (not a bool), else None."""
    return float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw) else None


def significance_level(payload: dict[str, Any]) -> float:
    """The comparison's alpha; a missing or malformed one (not a number in (0, 1)) is the default's."""
    analysis = payload.get("analysis")
    raw = number(analysis.get("alpha")) if isinstance(analysis, dict) else None
    return raw if raw is not None and 0 < raw < 1 else AnalysisSettings.alpha


def value(payload: dict[str, Any], method: str, key: str) -> float | None:
    """A finite number from the (mean) figures of ``method``, else None."""
    return number(payload["methods"].get(method, {}).get(key))


def interval(payload: dict[str, Any], method: str, key: str) -> tuple[float, float] | None:
    """(low, high) of a figure measured with its own interval (``<key>_low`` / ``_high``), else None."""
    low, high = value(payload, method, f"{key}_low"), value(payload, method, f"{key}_high")
    return None if low is None or high is None else (low, high)


def std(payload: dict[str, Any], method: str, key: str) -> float | None:
    """The sample standard deviation over seeds (None with one seed)."""
    stats = payload.get("aggregate", {}).get(method, {}).get(key)
    result = stats.get("std") if isinstance(stats, dict) else None
    return float(result) if isinstance(result, (int, float)) and math.isfinite(result) else None


def task_of(payload: dict[str, Any]) -> str:
    """``generation`` or ``classification`` (a payload from before tasks had types is generation)."""
    return payload.get("task") or "generation"


def multi_seed(payload: dict[str, Any]) -> bool:
    return len(payload.get("seeds", [])) > 1


def trained(payload: dict[str, Any]) -> list[str]:
    """The methods that trained and finished (not the baselines, not failed ones)."""
    return [name for name, figures in payload["methods"].items()
            if name not in BASELINES and figures.get("status") != FAILED]


def robustness_sets(payload: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Methods whose figures hold a ``robustness`` list (QAA under shots and noise)."""
    return {name: figures["robustness"] for name, figures in payload["methods"].items()
            if isinstance(figures.get("robustness"), list) and figures["robustness"]}


def seeds_phrase(payload: dict[str, Any]) -> str:
    seeds = payload.get("seeds") or [payload["experiment"]["seed"]]
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(str(s) for s in seeds)} (mean ± sample std over seeds)"

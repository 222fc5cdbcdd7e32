"""What the report says about learning rates: tuned or not, every trial, and how wide each method's good window is."""

from __future__ import annotations

import math
from typing import Any

from qpeft.report.payload import number


def is_tuned(payload: dict[str, Any]) -> bool:
    """Whether every method's learning rates were chosen on the validation loss (older payloads say nothing: no)."""
    return bool((payload.get("learning_rates") or {}).get("tuned"))


def _factor(factor: float) -> str:
    return f"×{factor:.3g}"


def learning_rate_sentence(payload: dict[str, Any]) -> str:
    """The one sentence every report carries: were the learning rates tuned, and how."""
    if not is_tuned(payload):
        return ("Learning rates untuned (not chosen on validation in this comparison: each method's configured "
                "rate, its default unless set): differences between methods may be learning-rate differences.")
    grid = payload["learning_rates"].get("grid") or []
    points = f"{len(grid)} points, {_factor(grid[0])} to {_factor(grid[-1])} of each method's default" if grid else ""
    record = payload["learning_rates"].get("record")
    source = f"; the trials are recorded in {record}" if record else ""
    extend = payload["learning_rates"].get("extend") or 0
    beyond = (f", and up to {extend} more past an end of it while a method's best was there" if extend else "")
    return (f"Learning rates tuned on validation (grid {points}{beyond}; every trial a full run at this budget and "
            f"seed, the rate with the lowest validation loss chosen, the test set unused{source}).")


def at_an_end(payload: dict[str, Any]) -> dict[str, str]:
    """Tuned method -> "highest" or "lowest": its best validation loss is at that end of the rates it tried."""
    edges = (payload.get("learning_rates") or {}).get("edges") or {}
    return {name: end for name, end in edges.items() if end in ("highest", "lowest")}


def end_sentence(name: str, end: str) -> str:
    """Why a method chosen at an end of its rates may be under-tuned."""
    direction = "higher" if end == "highest" else "lower"
    return (f"**{name}**'s lowest validation loss is at the {end} learning rate tried: its best rate may be "
            f"{direction} still, so its figures may understate it (a wider --lr-grid or more --lr-extend would tell).")


def tuning_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per trial: method, learning rate, validation loss (or how the trial ended), chosen or not, and
    whether it lay past the grid (tried because the method's best was at an end)."""
    headers = ["method", "learning rate", "validation loss", "chosen", "past the grid"]
    grid = [f for f in (number(g) for g in (payload.get("learning_rates") or {}).get("grid") or []) if f is not None]
    rows = []
    for name, trials in (payload.get("tuning") or {}).items():
        chosen = number(payload["methods"].get(name, {}).get("learning_rate"))
        for trial in trials:
            rate, loss, factor = (number(trial.get(key)) for key in ("learning_rate", "validation_loss", "factor"))
            past = factor is not None and bool(grid) and not any(math.isclose(factor, g) for g in grid)
            rows.append([name, f"{rate:.3g}" if rate is not None else "–",
                         f"{loss:.4f}" if loss is not None else str(trial.get("status", "–")),
                         "yes" if rate is not None and rate == chosen else "", "yes" if past else ""])
    return headers, rows


def window_sentences(payload: dict[str, Any]) -> list[str]:
    """Per tuned method: the range of learning rates within the window share of its best validation loss."""
    settings = payload.get("learning_rates") or {}
    share = settings.get("window_share", 0.05)
    sentences, ends = [], at_an_end(payload)
    for name, window in (settings.get("windows") or {}).items():
        if not window:
            sentences.append(f"**{name}**: no learning rate of the grid trained without diverging.")
            continue
        low, high = window["low"], window["high"]
        span = f"{low:.3g} to {high:.3g} (a factor of {high / low:.3g})" if high > low else f"only {low:.3g}"
        sentences.append(f"**{name}**: learning rates within {share:.0%} of its best validation loss: {span}, "
                         f"{window['points']} of {window['of']} rates tried.")
        if name in ends:
            sentences[-1] += " " + end_sentence(name, ends[name])
    return sentences

"""What the report says about learning rates: tuned or not, every trial, and how wide each method's good window is."""

from __future__ import annotations

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
    return (f"Learning rates tuned on validation (grid {points}; every trial a full run at this budget and seed, "
            f"the rate with the lowest validation loss chosen, the test set unused{source}).")


def tuning_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per trial: method, learning rate, validation loss (or how the trial ended), chosen or not."""
    headers = ["method", "learning rate", "validation loss", "chosen"]
    rows = []
    for name, trials in (payload.get("tuning") or {}).items():
        chosen = number(payload["methods"].get(name, {}).get("learning_rate"))
        for trial in trials:
            rate, loss = number(trial.get("learning_rate")), number(trial.get("validation_loss"))
            rows.append([name, f"{rate:.3g}" if rate is not None else "–",
                         f"{loss:.4f}" if loss is not None else str(trial.get("status", "–")),
                         "yes" if rate is not None and rate == chosen else ""])
    return headers, rows


def window_sentences(payload: dict[str, Any]) -> list[str]:
    """Per tuned method: the range of learning rates within the window share of its best validation loss."""
    settings = payload.get("learning_rates") or {}
    share = settings.get("window_share", 0.05)
    sentences = []
    for name, window in (settings.get("windows") or {}).items():
        if not window:
            sentences.append(f"**{name}**: no learning rate of the grid trained without diverging.")
            continue
        low, high = window["low"], window["high"]
        span = f"{low:.3g} to {high:.3g} (a factor of {high / low:.3g})" if high > low else f"only {low:.3g}"
        sentences.append(f"**{name}**: learning rates within {share:.0%} of its best validation loss: {span}, "
                         f"{window['points']} of {window['of']} grid points.")
    return sentences

"""``train_log.csv``: one row per optimizer step, written while training and read back after it.

Columns: step, loss, learning_rate, grad_norm, elapsed_s, tokens_seen, the method's own
(``Method.step_log``) and, at validation steps, validation_loss. ``read_train_log`` is the one
reader of the raw rows; ``qpeft.analysis.convergence.read_log`` turns a log into numbers.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

from transformers import ProgressCallback, TrainerCallback

from qpeft.methods.base import Method
from qpeft.training.validation import ValidationLoss
from qpeft.utils.atomic import write_csv, write_text_atomic


class StepLogger(TrainerCallback):
    """Appends one CSV row per optimizer step; survives resume by trimming rows past the checkpoint."""

    def __init__(self, path: Path, method: Method, validation: ValidationLoss | None = None) -> None:
        self.path = path
        self.method = method
        self.validation = validation
        self.columns: list[str] | None = None
        self.elapsed_offset = 0.0
        self.non_finite_step: int | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        kept = [row for row in read_train_log(self.path) if int(row["step"]) <= state.global_step]
        self.elapsed_offset = float(kept[-1]["elapsed_s"]) if kept else 0.0
        self.columns = list(kept[0]) if kept else None
        if state.is_world_process_zero:
            self._rewrite(kept)
        self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):  # noqa: ANN001
        if not logs or "loss" not in logs:
            return
        row: dict[str, Any] = {
            "step": state.global_step,
            "loss": logs["loss"],
            "learning_rate": logs.get("learning_rate", float("nan")),
            "grad_norm": logs.get("grad_norm", float("nan")),
            "elapsed_s": round(self.elapsed_offset + time.perf_counter() - self.started, 4),
            "tokens_seen": state.num_input_tokens_seen,
        }
        row.update(self.method.step_log(model))
        if self.validation is not None:
            row["validation_loss"] = self.validation.at_step(state.global_step, model)
        if not (math.isfinite(row["loss"]) and math.isfinite(float(row["grad_norm"]))):
            self.non_finite_step = state.global_step
            control.should_training_stop = True
        if state.is_world_process_zero:
            self._append(row)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            write_csv(self.path, rows, list(rows[0]))
        else:
            write_text_atomic(self.path, "")

    def _append(self, row: dict[str, Any]) -> None:
        new_file = self.columns is None
        self.columns = self.columns or list(row)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)


def read_train_log(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def tokens_per_step(rows: list[dict[str, str]]) -> float | None:
    """Tokens per optimiser step as the run measured them: tokens_seen / steps of the last log row."""
    if not rows:
        return None
    steps, tokens = int(rows[-1]["step"]), float(rows[-1]["tokens_seen"])
    return tokens / steps if steps > 0 and tokens > 0 else None


def final_validation_loss(rows: list[dict[str, str]]) -> float | None:
    """The validation loss measured at the last step that has one."""
    values = [row.get("validation_loss") for row in rows]
    values = [float(v) for v in values if v not in (None, "")]
    return values[-1] if values else None


def final_loss(rows: list[dict[str, str]], share: float = 0.05) -> float:
    """Mean training loss over the last 5% of steps (at least one): one step alone is too noisy."""
    tail = rows[-max(1, math.ceil(share * len(rows))):]
    return sum(float(row["loss"]) for row in tail) / len(tail)


class StepProgress(ProgressCallback):
    """The Trainer's progress bar, showing the loss in the bar instead of printing a dict per step."""

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

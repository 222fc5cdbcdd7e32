"""SoRA's optimiser: AdamW followed by a proximal L1 (soft-threshold) step on the gates.

The gates live in a param group of their own, flagged ``sora_gate``, with no weight
decay. That group also carries the sparsity schedule and its step counter
(``prox_steps``), so the Trainer's checkpoints save and restore them with the rest of
the optimiser state and a resumed run follows the same schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

SCHEDULES = ("constant", "linear", "log-linear", "exponential")
#: Curvature k of the ``exponential`` schedule (see ``sparsity_at``).
EXPONENTIAL_CURVATURE = 5.0


def soft_threshold(values: torch.Tensor, threshold: float) -> torch.Tensor:
    """sign(x) * max(|x| - threshold, 0): the proximal operator of ``threshold * |x|``.

    Entries with |x| <= threshold become exactly (positive) zero; the others move
    ``threshold`` towards zero and keep their sign, so no entry ever crosses zero.
    """
    magnitude = (values.abs() - threshold).clamp(min=0)
    return torch.where(magnitude > 0, values.sign() * magnitude, torch.zeros_like(values))


@torch.no_grad()
def soft_threshold_(values: torch.Tensor, threshold: float) -> torch.Tensor:
    """In-place ``soft_threshold``."""
    return values.copy_(soft_threshold(values, threshold))


def sparsity_at(schedule: str, start: float, end: float, step: int, total_steps: int) -> float:
    """The sparsity strength λ_t at optimiser step ``step`` (0 for the first step).

    With progress p = t / (T - 1) clipped to [0, 1] (p = 1 when T <= 1), so that the first
    step uses λ_0 and the last of the T steps uses λ_max:

    - ``constant``:    λ_t = λ_0 (``end`` is ignored);
    - ``linear``:      λ_t = λ_0 + (λ_max - λ_0) p;
    - ``log-linear``:  λ_t = exp((1 - p) log λ_0 + p log λ_max) = λ_0 (λ_max / λ_0)^p, the
      geometric interpolation (λ multiplies by the same factor every step; needs λ_0 > 0);
    - ``exponential``: λ_t = λ_0 + (λ_max - λ_0) (e^(k p) - 1) / (e^k - 1) with k = 5: an
      exponential ramp of fixed curvature that stays near λ_0 for most of the run and rises
      steeply at the end (about 8 % of the way at mid-run); unlike log-linear it starts from
      λ_0 = 0 too.
    """
    if schedule == "constant":
        return start
    progress = 1.0 if total_steps <= 1 else min(max(step / (total_steps - 1), 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "log-linear":
        return math.exp((1 - progress) * math.log(start) + progress * math.log(end))
    if schedule == "exponential":
        k = EXPONENTIAL_CURVATURE
        return start + (end - start) * math.expm1(k * progress) / math.expm1(k)
    raise ValueError(f"unknown sparsity schedule {schedule!r}")


class SoRAAdamW(torch.optim.AdamW):
    """AdamW; then, on every group flagged ``sora_gate``, g <- soft_threshold(g, lr_t * λ_t).

    lr_t is the group's current ``lr`` (the Trainer's scheduler scales it), λ_t comes from
    the group's ``schedule``, ``sparsity``, ``sparsity_max`` and ``total_steps`` at its
    ``prox_steps`` counter, which advances by one per call of ``step()``: once per optimiser
    step, however many micro-batches were accumulated. A step skipped by a GradScaler (fp16
    overflow) never reaches ``step()`` and applies no prox either.
    """

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = super().step(closure)
        for group in self.param_groups:
            if not group.get("sora_gate"):
                continue
            strength = sparsity_at(
                group["schedule"], group["sparsity"], group["sparsity_max"], group["prox_steps"], group["total_steps"]
            )
            threshold = float(group["lr"]) * strength
            if threshold > 0:
                for param in group["params"]:
                    soft_threshold_(param, threshold)
            group["prox_steps"] += 1
        return loss


def gate_group(
    gates: Iterable[nn.Parameter],
    lr: float,
    sparsity: float,
    sparsity_max: float,
    schedule: str,
    total_steps: int,
) -> dict:
    """The param group of the gates: its own lr, no weight decay, the schedule and its counter."""
    return {
        "params": list(gates),
        "lr": lr,
        "weight_decay": 0.0,
        "sora_gate": True,
        "sparsity": sparsity,
        "sparsity_max": sparsity_max,
        "schedule": schedule,
        "total_steps": total_steps,
        "prox_steps": 0,
    }

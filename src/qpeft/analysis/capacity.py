"""How expressive a learned update is.

One measure is common to every method with a per-token update (full fine-tuning, LoRA,
SoRA, QAA), so that they can be compared like with like:

- the **update Jacobian rank**: the numerical rank of the Jacobian of the update
  Δ(x) = f(x) - f_0(x) with respect to the layer input x, on sample activations.
  For a linear update Δ(x) = ΔW x the Jacobian is ΔW at every input, so the figure is the
  numerical rank of ΔW (``linear_capacity``); for a non-linear update (QAA's measured
  circuit) it varies with x and is the median over the samples (``jacobian_rank``).

A second measure exists for linear updates only and is compared only among them:

- the **effective rank** of ΔW (out x in) (Roy and Vetterli, 2007): with the singular values
  σ_1..σ_K normalised to a distribution p_k = σ_k / Σ_j σ_j, the effective rank is
  exp(H(p)), where H(p) = -Σ_k p_k log p_k is the Shannon entropy (natural log,
  0 log 0 = 0). It is 1 for a rank-1 matrix, n for an n x n identity (or any matrix with n
  equal singular values), lies between 1 and the numerical rank otherwise, does not change
  when ΔW is scaled, and is defined here as 0 for ΔW = 0 (no update has no spectrum).

The *numerical rank* of a matrix counts its singular values above ``tol * σ_max``, with
``tol`` by default ``max(m, n) * eps`` of the computation's dtype (NumPy's
``matrix_rank`` convention).

Schema of a method's ``capacity()`` result (module name -> entry), as stored in
``results.json``: an entry is either ``linear_capacity(ΔW)`` (``kind == "linear"``) or
``jacobian_rank(...)`` (``kind == "jacobian"``), and both carry ``update_jacobian_rank``;
``summarise_capacity`` turns the entries of one method into scalar figures (min / median /
max over modules).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import median
from typing import Any

import torch

TOP_K = 64  # singular values kept per module in results.json


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """All singular values of a 2-D tensor, descending, in float64."""
    if matrix.dim() != 2:
        raise ValueError(f"expected a matrix, got a tensor of shape {tuple(matrix.shape)}")
    return torch.linalg.svdvals(matrix.detach().to(torch.float64).cpu())


def effective_rank(values: torch.Tensor) -> float:
    """exp of the Shannon entropy of the normalised singular values; 0 when all are zero."""
    values = values.to(torch.float64).abs()
    total = values.sum()
    if not torch.isfinite(total):
        return math.nan
    if total <= 0:
        return 0.0
    p = values[values > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def default_tolerance(shape: tuple[int, ...], dtype: torch.dtype) -> float:
    """``max(m, n) * eps``: the relative threshold below which a singular value counts as zero."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float32).eps
    return max(shape) * eps


def numerical_rank(values: torch.Tensor, shape: tuple[int, ...], tol: float | None = None,
                   dtype: torch.dtype = torch.float32) -> int:
    """Singular values above ``tol * σ_max`` (``tol`` defaults to ``max(m, n) * eps(dtype)``)."""
    if values.numel() == 0:
        return 0
    largest = float(values.max())
    if not largest > 0:
        return 0
    tol = default_tolerance(shape, dtype) if tol is None else tol
    return int((values > tol * largest).sum())


def linear_capacity(delta: torch.Tensor, top_k: int = TOP_K) -> dict[str, Any]:
    """Spectrum figures of one linear update ΔW (out x in).

    ``update_jacobian_rank`` is the numerical rank of ΔW: the Jacobian of x -> ΔW x is ΔW at
    every input, so this is the figure ``jacobian_rank`` would give on any sample.
    ``singular_values`` holds the largest ``top_k`` only (``singular_values_total`` says how
    many there are); the effective rank, numerical rank and norms use all of them.
    """
    values = singular_values(delta)
    return {
        "kind": "linear",
        "shape": list(delta.shape),
        "effective_rank": effective_rank(values),
        "update_jacobian_rank": numerical_rank(values, tuple(delta.shape), dtype=delta.dtype),
        "frobenius_norm": float(values.pow(2).sum().sqrt()),
        "spectral_norm": float(values[0]) if values.numel() else 0.0,
        "singular_values": [float(v) for v in values[:top_k]],
        "singular_values_total": int(values.numel()),
    }


def _jacobians(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(N, out, in) Jacobians of ``fn`` at each row of ``x`` (vectorised when ``fn`` allows)."""
    try:
        return torch.func.vmap(torch.func.jacrev(fn))(x)
    except Exception:  # noqa: BLE001 - data-dependent control flow etc.: fall back to one sample at a time
        rows = [torch.autograd.functional.jacobian(fn, sample) for sample in x]
        return torch.stack([row.reshape(row.shape[0] if row.dim() > 1 else 1, -1) for row in rows])


def jacobian_rank(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  tol: float | None = None) -> dict[str, Any]:
    """Numerical rank of the Jacobian of ``fn: R^d -> R^n`` at each sample row of ``x`` (N x d).

    ``tol`` is relative to each Jacobian's largest singular value (default
    ``max(n, d) * eps`` of ``x``'s dtype). The rank can never exceed ``bound = min(n, d)``.
    When ``fn`` is a module's update, ``update_jacobian_rank`` (the median over the samples)
    is the figure compared with the other methods' (``linear_capacity``).
    """
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"samples must be an N x d matrix, got shape {tuple(x.shape)}")
    jacobians = _jacobians(fn, x.detach())
    if jacobians.dim() == 2:  # a scalar function: one row per sample
        jacobians = jacobians.unsqueeze(1)
    out_dim, in_dim = jacobians.shape[1], jacobians.shape[2]
    ranks = [numerical_rank(singular_values(j), (out_dim, in_dim), tol, x.dtype) for j in jacobians]
    return {
        "kind": "jacobian",
        "ranks": ranks,
        "samples": len(ranks),
        "min": min(ranks),
        "median": float(median(ranks)),
        "max": max(ranks),
        "update_jacobian_rank": float(median(ranks)),
        "mean": sum(ranks) / len(ranks),
        "bound": min(out_dim, in_dim),
        "shape": [out_dim, in_dim],
        "tol": tol if tol is not None else default_tolerance((out_dim, in_dim), x.dtype),
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarise_capacity(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Scalar figures over one method's modules: min / median / max of each measure.

    ``update_jacobian_rank_*`` for every per-token update (with ``update_jacobian_rank_bound``
    where the entries state one, as QAA's qubit count); ``effective_rank_*`` for linear
    updates only. Keys appear only for what the entries hold, so a method without a
    per-token update (Prefix tuning) gets an empty summary.
    """
    summary: dict[str, Any] = {}
    if not entries:
        return summary
    summary["capacity_modules"] = len(entries)
    ranks = [e["update_jacobian_rank"] for e in entries.values() if _is_number(e.get("update_jacobian_rank"))]
    if ranks:
        summary.update(update_jacobian_rank_min=min(ranks), update_jacobian_rank_median=float(median(ranks)),
                       update_jacobian_rank_max=max(ranks))
        bounds = [e["bound"] for e in entries.values() if _is_number(e.get("bound"))]
        if bounds:
            summary["update_jacobian_rank_bound"] = max(bounds)
    linear = [e for e in entries.values() if e.get("kind") == "linear" and _is_number(e.get("effective_rank"))]
    if linear:
        eranks = [e["effective_rank"] for e in linear]
        summary.update(effective_rank_min=min(eranks), effective_rank_median=float(median(eranks)),
                       effective_rank_max=max(eranks))
        shares = [e["effective_rank"] / min(e["shape"]) for e in linear if min(e["shape"]) > 0]
        if shares:
            summary["effective_rank_share_median"] = float(median(shares))
    return summary

"""What a trained QAA adapter costs on quantum hardware, and how expressive its update is."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qpeft.methods.qaa.layer import QAALinear
from qpeft.quantum import resources, simulate


def tokens_per_step(train_log: Path) -> float | None:
    """Tokens per optimiser step as the run measured them: tokens_seen / steps of the last log row."""
    from qpeft.training import read_train_log

    rows = read_train_log(Path(train_log))
    if not rows:
        return None
    steps, tokens = int(rows[-1]["step"]), float(rows[-1]["tokens_seen"])
    return tokens / steps if steps > 0 and tokens > 0 else None


def resource_figures(layers: dict[str, QAALinear], step_tokens: float | None) -> dict[str, Any]:
    """``metrics.json`` figures: quantum resources per adapter and in total, per token and per step.

    One token through the model runs every adapter's circuit once, each on a freshly prepared
    amplitude-embedded state; a training step does that for every token of the batch (forward
    pass only: gradients on hardware would need further runs, e.g. two per angle by parameter
    shift). Counts are per circuit run; multiply by shots for executions on hardware.
    """
    if not layers:
        return {}
    per_adapter = {}
    for name, layer in layers.items():
        with quiet_qiskit():
            figures = resources(layer.spec)
        per_adapter[name] = {**figures, "in_features": layer.in_features, "out_features": layer.out_features,
                             "readout": layer.spec.readout, "ansatz": layer.spec.ansatz}
    entries = list(per_adapter.values())
    total: dict[str, Any] = {
        "adapters": len(entries),
        "qubits_max": max(e["qubits"] for e in entries),
        "qubits_total": sum(e["qubits"] for e in entries),
        "depth_max": max(e["depth"] for e in entries),
        "circuit_runs_per_token": len(entries),
        "rotations_per_token": sum(e["rotations"] for e in entries),
        "cnots_per_token": sum(e["cnots"] for e in entries),
        "state_prep_cnots_per_token": sum(e["state_prep"]["cnots"] for e in entries),
        "state_prep_single_qubit_per_token": sum(e["state_prep"]["single_qubit"] for e in entries),
        "state_prep_depth_max": max(e["state_prep"]["depth"] for e in entries),
        "tokens_per_step": step_tokens,
    }
    if step_tokens is not None:
        for key in ("circuit_runs", "rotations", "cnots", "state_prep_cnots", "state_prep_single_qubit"):
            total[f"{key}_per_step"] = step_tokens * total[f"{key}_per_token"]
    first = entries[0]
    return {
        "qaa_adapters": total["adapters"],
        "qaa_qubits": total["qubits_max"],
        "qaa_circuit_depth": total["depth_max"],
        "qaa_rotations_per_circuit": first["rotations"] if _uniform(entries, "rotations") else None,
        "qaa_cnots_per_circuit": first["cnots"] if _uniform(entries, "cnots") else None,
        "qaa_state_prep_cnots_per_circuit": max(e["state_prep"]["cnots"] for e in entries),
        "qaa_state_prep_cnots_per_token": total["state_prep_cnots_per_token"],
        "qaa_tokens_per_step": step_tokens,
        "qaa_circuit_runs_per_step": total.get("circuit_runs_per_step"),
        "qaa_state_prep_cnots_per_step": total.get("state_prep_cnots_per_step"),
        "qaa_resources": {"total": total, "per_adapter": per_adapter},
    }


@contextlib.contextmanager
def quiet_qiskit() -> Iterator[None]:
    """Qiskit's transpiler logs every pass at INFO, which the CLI's logging would print."""
    logger = logging.getLogger("qiskit")
    previous = logger.level
    logger.setLevel(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _uniform(entries: list[dict[str, Any]], key: str) -> bool:
    return len({e[key] for e in entries}) == 1


def capture_inputs(model: nn.Module, layers: dict[str, QAALinear], ids: Tensor) -> dict[str, Tensor]:
    """The input of every QAA layer (tokens x in_features) when ``ids`` run through the model."""
    captured: dict[str, list[Tensor]] = {name: [] for name in layers}

    def hook(name: str):
        def record(module: nn.Module, args: tuple) -> None:
            captured[name].append(args[0].detach().reshape(-1, module.in_features))
        return record

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(input_ids=ids.to(device), attention_mask=torch.ones_like(ids, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in captured.items() if parts}


def spread_rows(x: Tensor, count: int) -> Tensor:
    """Up to ``count`` non-zero rows of ``x``, evenly spaced over it."""
    x = x[x.norm(dim=-1) > 0]
    if x.shape[0] <= count:
        return x
    return x[torch.linspace(0, x.shape[0] - 1, count).round().long()]


def update_function(layer: QAALinear, dtype: torch.dtype = torch.float32):
    """x -> s (W_up z(x) + b) of one layer with its current parameters, differentiable and vmap-able."""
    angles = layer.qaa_angles.detach().to(dtype)
    up = layer.qaa_up.detach().to(dtype) * layer.scale
    bias = None if layer.qaa_bias is None else layer.qaa_bias.detach().to(dtype) * layer.scale
    spec = layer.spec

    def update(x: Tensor) -> Tensor:
        # plain autograd: the memory-lean backward is an autograd.Function without a vmap rule
        return F.linear(simulate(x, angles, spec, memory_lean=False), up, bias)

    return update


def jacobian_capacity(
    model: nn.Module, layers: dict[str, QAALinear], sample_ids: Tensor, samples: int
) -> dict[str, dict[str, Any]]:
    """Per module: ``jacobian_rank`` of its update on ``samples`` of its real input activations.

    ``update_jacobian_rank`` is the median rank over the samples, measured as the linear
    methods' rank(ΔW) is (their Jacobian); ``max`` is the generic rank of the analytic map (it
    drops only on a measure-zero set), ``bound`` the largest possible (n for the z readout).
    """
    from qpeft.analysis.capacity import jacobian_rank

    inputs = capture_inputs(model, layers, sample_ids)
    out = {}
    for name, layer in layers.items():
        if name not in inputs:
            continue
        x = spread_rows(inputs[name].float(), samples)
        if x.shape[0] == 0:
            continue
        entry = jacobian_rank(update_function(layer), x)
        entry.update(bound=layer.jacobian_bound(), n_qubits=layer.n_qubits, readout=layer.spec.readout)
        out[name] = entry
    return out

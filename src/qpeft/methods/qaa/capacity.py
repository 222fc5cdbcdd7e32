"""How expressive a trained QAA update is: the rank of its Jacobian on real activations."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qpeft.analysis.capacity import jacobian_rank
from qpeft.methods.qaa.layer import QAALinear
from qpeft.quantum import simulate


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

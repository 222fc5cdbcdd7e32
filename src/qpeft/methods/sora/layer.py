"""The SoRA layer: a frozen linear layer plus a gated low-rank update, and its injection."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from qpeft.methods.targets import adapter_layers, linear_shape, wrap_linear_modules
from qpeft.utils.errors import UsageError

GATE_INITS = ("ones", "normal")


class SoRALinear(nn.Module):
    """y = W0 x + (alpha / r) B (g ⊙ A x), around a frozen ``nn.Linear`` or GPT-2 ``Conv1D``.

    A (r x in) is initialised like PEFT's LoRA (Kaiming-uniform, a = sqrt(5)), B (out x r)
    with zeros so that the model starts exactly at the base model, and the gate g (r) with
    ones or, as the official SoRA code does, a standard normal draw.
    """

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, dropout: float, gate_init: str) -> None:
        super().__init__()
        if gate_init not in GATE_INITS:
            raise UsageError(f"gate_init must be one of {', '.join(GATE_INITS)}, got {gate_init!r}")
        self.base_layer = base_layer
        self.in_features, self.out_features = linear_shape(base_layer)
        self.is_conv1d = isinstance(base_layer, Conv1D)
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        weight = base_layer.weight
        dtype = weight.dtype if weight.is_floating_point() else torch.float32
        factory = {"device": weight.device, "dtype": dtype}
        self.sora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))
        nn.init.kaiming_uniform_(self.sora_A, a=math.sqrt(5))
        self.sora_B = nn.Parameter(torch.zeros(self.out_features, r, **factory))
        gate = torch.ones(r, **factory) if gate_init == "ones" else torch.randn(r, **factory)
        self.sora_gate = nn.Parameter(gate)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        hidden = F.linear(self.dropout(x.to(self.sora_A.dtype)), self.sora_A)
        update = F.linear(hidden * (self.sora_gate * self.scaling), self.sora_B)
        return result + update.to(result.dtype)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (alpha / r) B diag(g) A, shape (out, in)."""
        return (self.scaling * self.sora_B * self.sora_gate) @ self.sora_A

    def rank(self) -> int:
        """Ranks whose gate is not exactly zero."""
        return int(torch.count_nonzero(self.sora_gate.detach()))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, scaling={self.scaling:g}"


def sora_layers(model: nn.Module) -> Iterator[tuple[str, SoRALinear]]:
    """(name, layer) for every SoRA layer of ``model``; the name is that of the wrapped module."""
    return adapter_layers(model, SoRALinear)


def inject(
    model: nn.Module,
    r: int,
    alpha: float,
    dropout: float,
    gate_init: str,
    target_modules: str = "auto",
    names: list[str] | None = None,
) -> dict[str, SoRALinear]:
    """Wrap the target linear layers (by ``target_modules`` rules, or exactly ``names``) in place."""
    return wrap_linear_modules(
        model, target_modules, names, lambda module: SoRALinear(module, r, alpha, dropout, gate_init), "SoRA"
    )

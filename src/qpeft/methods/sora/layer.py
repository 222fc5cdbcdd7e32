"""The SoRA layer: a frozen linear layer plus a gated low-rank update (injection and files are in ``model``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qpeft.methods.base import AdapterLayer
from qpeft.methods.sora.config import GATE_INITS, SoRAConfig
from qpeft.utils.errors import UsageError


class SoRALinear(nn.Module, AdapterLayer):
    """y = W0 x + (alpha / r) B (g ⊙ A x), around a frozen ``nn.Linear`` or GPT-2 ``Conv1D``.

    A (r x in) is initialised like PEFT's LoRA (Kaiming-uniform, a = sqrt(5)), B (out x r)
    with zeros so that the model starts exactly at the base model, and the gate g (r) with
    ones or, as the official SoRA code does, a standard normal draw. The update is linear:
    ``get_delta_weight`` is ΔW, and ``merge`` folds it into the base weight.
    """

    adapter_param_names = ("sora_A", "sora_B", "sora_gate")
    label = "SoRA"

    def __init__(
        self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0, gate_init: str = "ones"
    ) -> None:
        super().__init__()
        if gate_init not in GATE_INITS:
            raise UsageError(f"gate_init must be one of {', '.join(GATE_INITS)}, got {gate_init!r}")
        self._wrap_base_layer(base_layer)
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
        self.merged = False

    @classmethod
    def from_config(cls, base_layer: nn.Module, config: SoRAConfig) -> SoRALinear:
        return cls(base_layer, config.r, config.alpha, config.dropout, config.gate_init)

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        hidden = F.linear(self.dropout(x.to(self.sora_A.dtype)), self.sora_A)
        update = F.linear(hidden * (self.sora_gate * self.scaling), self.sora_B)
        return result + update.to(result.dtype)

    def get_delta_weight(self) -> torch.Tensor:
        """ΔW = (alpha / r) B diag(g) A, shape (out, in)."""
        return (self.scaling * self.sora_B * self.sora_gate) @ self.sora_A

    def _base_weight_delta(self) -> torch.Tensor:
        """ΔW in the base weight's layout and dtype (GPT-2's Conv1D stores the weight in x out)."""
        delta = self.get_delta_weight().detach()
        return (delta.T if self.is_conv1d else delta).to(self.base_layer.weight.dtype)

    def merge(self) -> None:
        """Fold ΔW into the base weight (W0 <- W0 + ΔW): the forward pass is then the base layer's alone."""
        if not self.merged:
            with torch.no_grad():
                self.base_layer.weight.add_(self._base_weight_delta())
            self.merged = True

    def unmerge(self) -> None:
        """Take ΔW out of the base weight again (W0 <- W0 - ΔW)."""
        if self.merged:
            with torch.no_grad():
                self.base_layer.weight.sub_(self._base_weight_delta())
            self.merged = False

    def rank(self) -> int:
        """Ranks whose gate is not exactly zero."""
        return int(torch.count_nonzero(self.sora_gate.detach()))

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, scaling={self.scaling:g}"
                + (", merged" if self.merged else ""))

"""GPT-2's fused query/key/value projection ``c_attn`` as three projections ``c_attn.q``, ``c_attn.k`` and
``c_attn.v`` with the same outputs (``--split-qkv``), so that an adapter can target queries and values
alone, as the LoRA paper does: PEFT has no per-slice target for a fused projection.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


class SplitQKV(nn.Module):
    """A fused query/key/value Conv1D as three Conv1Ds ``q``, ``k``, ``v``, their outputs concatenated.

    The weights are the fused module's column slices, so the outputs equal the fused module's.
    """

    def __init__(self, fused: Conv1D) -> None:
        super().__init__()
        width = fused.nf // 3
        parts = []
        for index in range(3):
            part = Conv1D(width, fused.nx).to(fused.weight.device, fused.weight.dtype)
            with torch.no_grad():
                part.weight.copy_(fused.weight[:, index * width : (index + 1) * width])
                part.bias.copy_(fused.bias[index * width : (index + 1) * width])
            parts.append(part)
        self.q, self.k, self.v = parts

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(hidden), self.k(hidden), self.v(hidden)], dim=-1)


def split_fused_qkv(model: nn.Module) -> int:
    """Replace every GPT-2-style fused ``c_attn`` (a Conv1D of width 3 d) by a ``SplitQKV``; returns how many."""
    fused = [(name, module) for name, module in model.named_modules()
             if name.rpartition(".")[2] == "c_attn" and isinstance(module, Conv1D) and module.nf % 3 == 0]
    for name, module in fused:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, SplitQKV(module))
    return len(fused)


def has_split_qkv(model: nn.Module) -> bool:
    return any(isinstance(module, SplitQKV) for module in model.modules())


def fused_qkv_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every ``SplitQKV`` written back as the fused ``c_attn`` it came from."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, SplitQKV):
            prefix = f"{name}." if name else ""
            for kind, dim in (("weight", 1), ("bias", 0)):
                parts = [state.pop(f"{prefix}{part}.{kind}") for part in ("q", "k", "v")]
                state[f"{prefix}{kind}"] = torch.cat(parts, dim=dim)
    return state

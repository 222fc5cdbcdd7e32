"""Full fine-tuning: every weight trains. The reference for quality, memory and time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from qpeft.methods.base import Method, MethodConfig
from qpeft.methods.targets import find_target_modules


@dataclass
class FullConfig(MethodConfig):
    # Full fine-tuning needs a far smaller step than adapters (Li and Liang 2021 use 5e-5 on E2E).
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate of every weight"})


class FullFineTuning(Method):
    name = "full"
    description = "full fine-tuning of every weight"
    config_class = FullConfig

    def prepare(self, model: nn.Module, config: MethodConfig) -> nn.Module:
        model.requires_grad_(True)
        return model

    def save(self, model: nn.Module, config: MethodConfig, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        return AutoModelForCausalLM.from_pretrained(adapter_dir, dtype=base_model.dtype)

    def delta_weights(self, model: nn.Module, base_model: nn.Module) -> dict[str, torch.Tensor]:
        """Trained minus base weight (out x in) on the modules LoRA adapts by default."""
        base_modules = dict(base_model.named_modules())
        deltas = {}
        for name, module in find_target_modules(model, "auto").items():
            delta = module.weight.detach().float().cpu() - base_modules[name].weight.detach().float().cpu()
            deltas[name] = delta.T if isinstance(module, Conv1D) else delta  # Conv1D stores in x out
        return deltas

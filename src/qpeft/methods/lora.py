"""LoRA (Hu et al., 2021) through Hugging Face PEFT."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from qpeft.methods.base import Method, MethodConfig
from qpeft.methods.serialization import load_peft_adapter
from qpeft.methods.targets import find_target_modules, peft_target_modules
from qpeft.utils.errors import UsageError


@dataclass
class LoRAConfig(MethodConfig):
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate (Hu et al., E2E with GPT-2)"})
    r: int = field(default=8, metadata={"help": "rank of the update B A"})
    alpha: float = field(default=16.0, metadata={"help": "scaling numerator: the update is (alpha / r) B A"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter's input, in [0, 1)"})
    target_modules: str = field(
        default="auto", metadata={"help": "'auto' (PEFT's per-architecture targets), 'all-linear' or module names"}
    )

    def validate(self) -> None:
        super().validate()
        if self.r <= 0:
            raise UsageError(f"LoRA rank r must be positive, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}")


class LoRA(Method):
    name = "lora"
    description = "low-rank adaptation (PEFT)"
    config_class = LoRAConfig

    def prepare(self, model: nn.Module, config: LoRAConfig) -> nn.Module:
        find_target_modules(model, config.target_modules)  # a clear error when nothing matches
        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=peft_target_modules(model, config.target_modules),
        )
        return get_peft_model(model, peft_config)

    def save(self, model: nn.Module, config: MethodConfig, out_dir: Path) -> None:
        model.save_pretrained(out_dir)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        return load_peft_adapter(base_model, adapter_dir, "LORA", "LoRA")

    def delta_weights(self, model: nn.Module, base_model: nn.Module) -> dict[str, torch.Tensor]:
        """scaling * B @ A of every LoRA layer, out x in (also for GPT-2's transposed Conv1D).

        Names are the base model's module names, as ``full`` reports them.
        """
        deltas = {}
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            for adapter in module.active_adapters:
                if adapter not in module.lora_A:
                    continue
                a = module.lora_A[adapter].weight.detach().float().cpu()  # r x in
                b = module.lora_B[adapter].weight.detach().float().cpu()  # out x r
                deltas[name.removeprefix("base_model.model.")] = module.scaling[adapter] * (b @ a)
        return deltas

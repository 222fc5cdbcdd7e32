"""Prefix tuning (Li and Liang, 2021) through Hugging Face PEFT."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel, PrefixTuningConfig, get_peft_model
from torch import nn

from qpeft.errors import UsageError
from qpeft.methods.base import Method, MethodConfig


@dataclass
class PrefixConfig(MethodConfig):
    # Prefixes need a large step on short budgets; PEFT's own prefix-tuning examples use 1e-2.
    learning_rate: float = 1e-2
    num_virtual_tokens: int = 10  # Li and Liang's E2E prefix length
    projection: bool = False  # Li and Liang's reparameterisation MLP
    projection_hidden_size: int = 512

    def validate(self) -> None:
        super().validate()
        if self.num_virtual_tokens <= 0:
            raise UsageError(f"num_virtual_tokens must be positive, got {self.num_virtual_tokens}")


class PrefixTuning(Method):
    name = "prefix"
    description = "prefix tuning (PEFT)"
    config_class = PrefixConfig
    supports_gradient_checkpointing = False

    def prepare(self, model: nn.Module, config: PrefixConfig) -> nn.Module:
        peft_config = PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=config.num_virtual_tokens,
            prefix_projection=config.projection,
            encoder_hidden_size=config.projection_hidden_size,
        )
        return get_peft_model(model, peft_config)

    def save(self, model: nn.Module, config: MethodConfig, out_dir: Path) -> None:
        model.save_pretrained(out_dir)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        return PeftModel.from_pretrained(base_model, adapter_dir)

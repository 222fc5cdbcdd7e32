"""SoRA on a model: inject the layers, find them, and save and load the adapter folder.

``run_dir/adapter`` holds PEFT's two files (see ``qpeft.methods.serialization``):
``adapter_config.json`` (the method config and the adapted modules) and
``adapter_model.safetensors`` (A, B and gate of each module). Runs saved before that layout
(``sora_config.json`` + ``sora_adapter.safetensors``) load as well. ``export.export_lora``
turns an adapter into a plain PEFT LoRA adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from qpeft.methods.serialization import AdapterFormat, SavedAdapter, check_shape
from qpeft.methods.sora.config import SoRAConfig
from qpeft.methods.sora.layer import SoRALinear


@dataclass
class ModuleWeights:
    A: torch.Tensor  # r x in
    B: torch.Tensor  # out x r
    gate: torch.Tensor  # r
    conv1d: bool = False

    fact_types: ClassVar[dict[str, type]] = {"in_features": int, "out_features": int, "conv1d": bool}

    @classmethod
    def from_layer(cls, layer: SoRALinear) -> ModuleWeights:
        state = layer.adapter_state()
        return cls(state["sora_A"], state["sora_B"], state["sora_gate"], layer.is_conv1d)

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> ModuleWeights:
        """The module from checked facts (``fact_types``); tensors whose shapes the facts contradict are refused."""
        rank = tensors["sora_gate"].numel()
        check_shape("sora_gate", tensors["sora_gate"], (rank,))
        check_shape("sora_A", tensors["sora_A"], (rank, facts["in_features"]))
        check_shape("sora_B", tensors["sora_B"], (facts["out_features"], rank))
        return cls(tensors["sora_A"], tensors["sora_B"], tensors["sora_gate"], facts["conv1d"])

    def state(self) -> dict[str, torch.Tensor | None]:
        """The tensors under the layer's parameter names (``SoRALinear.adapter_param_names``)."""
        return {"sora_A": self.A, "sora_B": self.B, "sora_gate": self.gate}

    def facts(self) -> dict[str, Any]:
        return {"in_features": self.A.shape[1], "out_features": self.B.shape[0], "conv1d": self.conv1d}

    @property
    def rank(self) -> int:
        return int(torch.count_nonzero(self.gate))

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A', B') over the surviving ranks, the gate folded into B': B' A' = B diag(g) A."""
        keep = torch.nonzero(self.gate, as_tuple=True)[0]
        return self.A[keep].contiguous(), (self.B[:, keep] * self.gate[keep]).contiguous()


@dataclass
class SoRAAdapter(SavedAdapter):
    """Everything needed to rebuild or export a trained SoRA adapter, without the base model."""

    modules: dict[str, ModuleWeights]

    layer_class = SoRALinear
    module_class = ModuleWeights
    adapter_format = AdapterFormat("sora", "qpeft-sora/1", "SoRA")
    config_class = SoRAConfig

    @property
    def r(self) -> int:
        return int(self.config["r"])

    @property
    def alpha(self) -> float:
        return float(self.config["alpha"])

    def ranks(self) -> dict[str, int]:
        return {name: weights.rank for name, weights in self.modules.items()}

    def params_before_pruning(self) -> int:
        """Trainable parameters of the SoRA adapter: A, B and the gate of every module."""
        return sum(w.A.numel() + w.B.numel() + w.gate.numel() for w in self.modules.values())

    def params_after_pruning(self) -> int:
        """Parameters of the exported LoRA adapter: r_new * (in + out) per module."""
        return sum(w.rank * (w.A.shape[1] + w.B.shape[0]) for w in self.modules.values())


#: (name, layer) for every SoRALinear of a model; the name is that of the wrapped module.
sora_layers = SoRALinear.layers_in
#: Wrap a model's target linear layers (by ``config.target_modules``, or exactly ``names``) in place.
inject = SoRALinear.inject
adapter_from_model = SoRAAdapter.from_model
read_adapter = SoRAAdapter.read
write_adapter = SoRAAdapter.write


def from_pretrained(base_model: nn.Module, adapter_dir: Path) -> nn.Module:
    """The trained model rebuilt on ``base_model`` from an adapter folder, frozen, in eval mode (PEFT's verb)."""
    read_adapter(adapter_dir).load_into(base_model, dropout=0.0)
    return base_model.eval()

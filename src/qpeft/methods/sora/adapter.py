"""SoRA's own adapter files: A, B and gate of every adapted module.

``run_dir/adapter`` holds ``sora_config.json`` (the method config and the adapted
modules) and ``sora_adapter.safetensors`` (A, B and gate of each module); ``SoRA.load``
reads them back, ``export.export_lora`` turns them into a plain PEFT LoRA adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qpeft.methods.serialization import (
    base_model_name,
    detached,
    flat_tensors,
    module_tensors,
    read_adapter_files,
    trained_layers,
    write_adapter_files,
)
from qpeft.methods.sora.layer import sora_layers

CONFIG_FILE = "sora_config.json"
WEIGHTS_FILE = "sora_adapter.safetensors"
FORMAT = "qpeft-sora/1"
#: The tensors of one module in the weights file (``<module>.<name>``).
TENSORS = ("sora_A", "sora_B", "sora_gate")


@dataclass
class ModuleWeights:
    A: torch.Tensor  # r x in
    B: torch.Tensor  # out x r
    gate: torch.Tensor  # r
    conv1d: bool = False

    @property
    def rank(self) -> int:
        return int(torch.count_nonzero(self.gate))

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A', B') over the surviving ranks, the gate folded into B': B' A' = B diag(g) A."""
        keep = torch.nonzero(self.gate, as_tuple=True)[0]
        return self.A[keep].contiguous(), (self.B[:, keep] * self.gate[keep]).contiguous()


@dataclass
class SoRAAdapter:
    """Everything needed to rebuild or export a trained SoRA adapter, without the base model."""

    config: dict[str, Any]
    modules: dict[str, ModuleWeights]
    base_model_name_or_path: str | None = None

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


def adapter_from_model(model: nn.Module, config: dict[str, Any]) -> SoRAAdapter:
    modules = {}
    for name, layer in trained_layers(sora_layers(model), "SoRA").items():
        tensors = detached(layer, TENSORS)
        modules[name] = ModuleWeights(tensors["sora_A"], tensors["sora_B"], tensors["sora_gate"], layer.is_conv1d)
    return SoRAAdapter(dict(config), modules, base_model_name(model))


def module_state(weights: ModuleWeights) -> dict[str, torch.Tensor]:
    """The tensors of one module under their parameter names (what ``SoRA.load`` copies into the layer)."""
    return {"sora_A": weights.A, "sora_B": weights.B, "sora_gate": weights.gate}


def write_adapter(adapter: SoRAAdapter, out_dir: Path) -> None:
    tensors = flat_tensors({name: module_state(weights) for name, weights in adapter.modules.items()})
    modules = {name: {"in_features": w.A.shape[1], "out_features": w.B.shape[0], "conv1d": w.conv1d}
               for name, w in adapter.modules.items()}
    write_adapter_files(out_dir, WEIGHTS_FILE, CONFIG_FILE, FORMAT, adapter.config, adapter.base_model_name_or_path,
                        modules, tensors)


def read_adapter(adapter_dir: Path) -> SoRAAdapter:
    meta, tensors = read_adapter_files(adapter_dir, WEIGHTS_FILE, CONFIG_FILE, FORMAT, "SoRA")
    modules = {}
    for name, info in meta["modules"].items():
        values = module_tensors(tensors, name, TENSORS, adapter_dir, WEIGHTS_FILE)
        modules[name] = ModuleWeights(values["sora_A"], values["sora_B"], values["sora_gate"], bool(info["conv1d"]))
    return SoRAAdapter(meta["config"], modules, meta.get("base_model_name_or_path"))

"""The SoRA method: the recipe hooks of the method contract.

Its config is in ``config``, the adapter on a model (inject, save, load) in ``model``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qpeft.methods.base import Method
from qpeft.methods.sora.config import SoRAConfig
from qpeft.methods.sora.export import AllRanksPruned, export_lora
from qpeft.methods.sora.model import adapter_from_model, from_pretrained, inject, sora_layers, write_adapter
from qpeft.methods.sora.optim import SoRAAdamW, gate_group

log = logging.getLogger(__name__)

LORA_EXPORT_DIR = "adapter_lora"


class SoRA(Method):
    name = "sora"
    description = "sparse low-rank adaptation: LoRA with L1-gated, prunable ranks"
    config_class = SoRAConfig

    def prepare(self, model: nn.Module, config: SoRAConfig) -> nn.Module:
        model.requires_grad_(False)
        inject(model, config)
        return model

    def save(self, model: nn.Module, config: SoRAConfig, out_dir: Path) -> None:
        write_adapter(adapter_from_model(model, config.to_dict()), out_dir)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        return from_pretrained(base_model, adapter_dir)

    def create_optimizer(
        self, model: nn.Module, config: SoRAConfig, weight_decay: float, max_steps: int
    ) -> torch.optim.Optimizer:
        gates = [layer.sora_gate for _, layer in sora_layers(model)]
        gate_ids = {id(gate) for gate in gates}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
        groups = [
            {"params": others, "weight_decay": weight_decay},
            gate_group(gates, config.gate_lr(), config.sparsity, config.sparsity_max, config.schedule, max_steps),
        ]
        return SoRAAdamW(groups, lr=config.learning_rate)

    def step_log(self, model: nn.Module) -> dict[str, float]:
        if model is None:
            return {}
        ranks, zeros, total = [], 0, 0
        for _, layer in sora_layers(model):
            rank = layer.rank()
            ranks.append(rank)
            zeros += layer.r - rank
            total += layer.r
        if not ranks:
            return {}
        return {"gate_zero_fraction": zeros / total, "mean_rank": sum(ranks) / len(ranks)}

    def finalize(
        self, model: nn.Module, config: SoRAConfig, run_dir: Path, tokens_per_step: float | None = None
    ) -> dict[str, Any]:
        adapter = adapter_from_model(model, config.to_dict())
        ranks = adapter.ranks()
        total = sum(w.gate.numel() for w in adapter.modules.values())
        figures: dict[str, Any] = {
            "sora_gate_zero_fraction": 1 - sum(ranks.values()) / total,
            "sora_mean_rank": sum(ranks.values()) / len(ranks),
            "sora_dead_modules": sum(rank == 0 for rank in ranks.values()),
            "sora_params_before_pruning": adapter.params_before_pruning(),
            "sora_params_after_pruning": adapter.params_after_pruning(),
            "sora_ranks": ranks,
        }
        try:
            export_lora(adapter, Path(run_dir) / LORA_EXPORT_DIR)
            figures["sora_lora_adapter"] = LORA_EXPORT_DIR
            figures["sora_lora_adapter_bytes"] = sum(
                f.stat().st_size for f in (Path(run_dir) / LORA_EXPORT_DIR).iterdir() if f.is_file()
            )
        except AllRanksPruned as error:
            log.warning("SoRA: %s", error)
            figures["sora_lora_adapter"] = None
            figures["sora_note"] = str(error)
        return figures

    def delta_weights(self, model: nn.Module, base_model: nn.Module) -> dict[str, torch.Tensor]:
        """(alpha / r) B diag(g) A of every SoRA layer, out x in: with the gates, so a pruned rank does not count."""
        with torch.no_grad():
            return {name: layer.get_delta_weight().detach().float().cpu() for name, layer in sora_layers(model)}

"""The SoRA method: config, hooks of the method contract."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qpeft.methods.base import Method, MethodConfig
from qpeft.methods.serialization import load_adapter_tensors
from qpeft.methods.sora.adapter import adapter_from_model, module_state, read_adapter, write_adapter
from qpeft.methods.sora.export import AllRanksPruned, export_lora
from qpeft.methods.sora.layer import GATE_INITS, inject, sora_layers
from qpeft.methods.sora.optim import SCHEDULES, SoRAAdamW, gate_group
from qpeft.utils.errors import UsageError

log = logging.getLogger(__name__)

LORA_EXPORT_DIR = "adapter_lora"


@dataclass
class SoRAConfig(MethodConfig):
    # As LoRA: Hu et al. (2021) train GPT-2 on E2E at 2e-4, and qpeft's LoRA uses the same.
    learning_rate: float = 2e-4
    r: int = 8  # r_max of the paper: the rank every module starts with
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str = "auto"
    # The gates need a far larger step than A and B to move within a short budget: over the
    # 60-step demo the learning rates sum to about 30 x lr, so at lr = 2e-4 a gate moves by
    # at most ~0.006 through AdamW and the prox would have to do all the work (λ ~ 170): every
    # gate then dies at the same step or none does. At 0.1 the gates' own AdamW steps differ
    # enough for the prox to select among them. 0 gives the gates the method's learning_rate.
    gate_learning_rate: float = 0.1
    # λ_0. AdamW's step is about lr whatever the gradient's size, so λ compares against the
    # consistency of a gate's gradient: a gate shrinks when λ exceeds its mean normalised step
    # (about 0..1). In 60-step runs on SmolLM2-135M / E2E (batch 8, gate lr 0.1) those steps
    # were 0.62-1.06 at λ = 0.5 and rose to 0.8-1.09 at λ = 1.1 (a shrinking gate's gradient
    # pushes it back out), and λ = 1.1 left every gate alive; with the prox summing to
    # 0.1 x 30 x λ over the run, 1.4 is where the weaker gates reach zero within 60 steps.
    # Longer runs prune more (every rank dies eventually when λ > 1): for those take λ < 1;
    # the official GLUE setting (threshold 3e-4 per step at lr 8e-4, ~10^4 steps) is λ ≈ 0.4.
    sparsity: float = 1.4
    sparsity_max: float = 1.4  # λ_max, reached at the last step; ignored by the constant schedule
    schedule: str = "constant"  # constant | linear | log-linear | exponential
    gate_init: str = "ones"  # ones | normal (the official code's draw)

    def gate_lr(self) -> float:
        return self.gate_learning_rate or self.learning_rate

    def validate(self) -> None:
        super().validate()
        if self.r <= 0:
            raise UsageError(f"SoRA rank r must be positive, got {self.r}")
        if not self.alpha > 0:
            raise UsageError(f"SoRA alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.gate_learning_rate < 0:
            raise UsageError(f"gate_learning_rate must be positive (or 0: same as learning_rate), "
                             f"got {self.gate_learning_rate}")
        if self.sparsity < 0 or self.sparsity_max < 0:
            raise UsageError(f"sparsity strengths must be >= 0, got sparsity={self.sparsity}, "
                             f"sparsity_max={self.sparsity_max}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown SoRA schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})")
        if self.gate_init not in GATE_INITS:
            raise UsageError(f"unknown SoRA gate_init {self.gate_init!r} (choose from {', '.join(GATE_INITS)})")
        if self.schedule != "constant" and self.sparsity_max < self.sparsity:
            raise UsageError(f"sparsity_max ({self.sparsity_max}) must be >= sparsity ({self.sparsity}) "
                             f"for the {self.schedule} schedule")
        if self.schedule == "log-linear" and self.sparsity <= 0:
            raise UsageError("the log-linear schedule needs sparsity > 0 (it interpolates log λ)")


class SoRA(Method):
    name = "sora"
    description = "sparse low-rank adaptation: LoRA with L1-gated, prunable ranks"
    config_class = SoRAConfig

    def prepare(self, model: nn.Module, config: SoRAConfig) -> nn.Module:
        model.requires_grad_(False)
        inject(model, config.r, config.alpha, config.dropout, config.gate_init, config.target_modules)
        return model

    def save(self, model: nn.Module, config: SoRAConfig, out_dir: Path) -> None:
        write_adapter(adapter_from_model(model, config.to_dict()), out_dir)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        adapter = read_adapter(adapter_dir)
        config = SoRAConfig.from_dict(adapter.config)
        base_model.requires_grad_(False)
        layers = inject(base_model, config.r, config.alpha, 0.0, config.gate_init, names=list(adapter.modules))
        load_adapter_tensors(layers, {name: module_state(w) for name, w in adapter.modules.items()}, "SoRA")
        return base_model.eval()

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
            return {name: layer.delta_weight().detach().float().cpu() for name, layer in sora_layers(model)}

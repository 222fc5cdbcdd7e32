"""The QAA method: config, eval options, and the hooks of the method contract."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qpeft.methods.base import EvalOptions, Method, MethodConfig
from qpeft.methods.qaa.adapter import adapter_from_model, module_state, read_adapter, write_adapter
from qpeft.methods.qaa.capacity import jacobian_capacity
from qpeft.methods.qaa.layer import ANGLE_INITS, inject, qaa_layers
from qpeft.methods.qaa.resources import resource_figures
from qpeft.methods.serialization import load_adapter_tensors
from qpeft.quantum.circuit import ANSATZE, READOUTS
from qpeft.utils.errors import UsageError


@dataclass
class QAAConfig(MethodConfig):
    # W_up and b. Measured on SmolLM2-135M / E2E at the demo budget (see README, "QAA"):
    # LoRA's 2e-4 barely moves a zero-initialised W_up whose inputs are bounded readouts.
    learning_rate: float = 2e-3
    # The angles' own rate (0: the same as learning_rate); they are periodic, so no weight decay.
    angle_learning_rate: float = 2e-2
    layers: int = 2
    ansatz: str = "ry"  # ry | ry_rz
    readout: str = "z"  # z (n Pauli-Z expectations) | probs (2**n basis probabilities)
    # z lies in [-1, 1]^n, like a unit-scale hidden state: no rescaling is needed, and the
    # learning rate alone sets how fast the update grows (as LoRA's alpha / r = 2 with its lr).
    scale: float = 1.0
    bias: bool = True
    angle_init: str = "uniform"  # uniform in [0, 2π) | normal (N(0, 0.1²)) | zeros
    target_modules: str = "auto"
    memory_lean: bool = True

    def angle_lr(self) -> float:
        return self.angle_learning_rate or self.learning_rate

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.layers, int) or self.layers < 1:
            raise UsageError(f"QAA needs at least one circuit layer, got layers={self.layers}")
        if self.ansatz not in ANSATZE:
            raise UsageError(f"unknown QAA ansatz {self.ansatz!r} (choose from {', '.join(ANSATZE)})")
        if self.readout not in READOUTS:
            raise UsageError(f"unknown QAA readout {self.readout!r} (choose from {', '.join(READOUTS)})")
        if self.angle_init not in ANGLE_INITS:
            raise UsageError(f"unknown QAA angle_init {self.angle_init!r} (choose from {', '.join(ANGLE_INITS)})")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise UsageError(f"QAA scale must be a positive number, got {self.scale}")
        if not self.angle_learning_rate >= 0:
            raise UsageError(f"angle_learning_rate must be positive (or 0: same as learning_rate), "
                             f"got {self.angle_learning_rate}")
        if not self.target_modules.strip():
            raise UsageError("QAA target_modules: give 'auto', 'all-linear' or comma-separated module names")


@dataclass
class QAAEvalOptions(EvalOptions):
    """How the circuits are read at evaluation: ``qpeft evaluate --qaa-shots N --qaa-depolarizing p``."""

    shots: int = 0  # 0: exact expectation values; N: estimated from N measurements per token
    depolarizing: float = 0.0  # strength p of rho -> (1 - p) rho + p I/2 on every qubit after every layer
    noise_seed: int = 0  # seeds the shot draws (each adapted module gets noise_seed + its index)

    def validate(self) -> None:
        if not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 0:
            raise UsageError(f"--qaa-shots must be a non-negative integer (0: exact), got {self.shots!r}")
        if not 0.0 <= self.depolarizing <= 1.0:
            raise UsageError(f"--qaa-depolarizing must lie in [0, 1], got {self.depolarizing}")

    def describe(self) -> dict[str, Any]:
        return {"shots": self.shots or None, "depolarizing": float(self.depolarizing), "noise_seed": self.noise_seed}

    def tag(self) -> str:
        parts = [f"shots{self.shots}"] if self.shots else []
        parts += [f"dep{self.depolarizing:g}"] if self.depolarizing else []
        parts += [f"seed{self.noise_seed}"] if self.noise_seed else []
        return "_".join(parts) or "exact"


#: What ``qpeft compare`` re-evaluates a QAA run under (each is a full test-set evaluation).
ROBUSTNESS_GRID = (
    QAAEvalOptions(shots=100),
    QAAEvalOptions(shots=1000),
    QAAEvalOptions(depolarizing=0.01),
    QAAEvalOptions(depolarizing=0.05),
)


class QAA(Method):
    name = "qaa"
    description = "quantum-amplitude embedded adaptation: a measured parameterised circuit per projection"
    config_class = QAAConfig
    eval_options_class = QAAEvalOptions
    #: Token activations per module whose Jacobian the capacity hook ranks.
    capacity_samples = 8

    def prepare(self, model: nn.Module, config: QAAConfig) -> nn.Module:
        config.validate()
        model.requires_grad_(False)
        inject(model, config.layers, config.ansatz, config.readout, config.scale, config.bias, config.angle_init,
               config.memory_lean, config.target_modules)
        return model

    def save(self, model: nn.Module, config: QAAConfig, out_dir: Path) -> None:
        write_adapter(adapter_from_model(model, config.to_dict()), out_dir)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        """The trained model in its merged, inference-only form."""
        adapter = read_adapter(adapter_dir)
        config = QAAConfig.from_dict(adapter.config)
        base_model.requires_grad_(False)
        layers = inject(base_model, config.layers, config.ansatz, config.readout, config.scale, config.bias,
                        "zeros", config.memory_lean, names=list(adapter.modules))
        load_adapter_tensors(layers, {name: module_state(m) for name, m in adapter.modules.items()}, "QAA")
        for layer in layers.values():
            layer.merge()
        return base_model.requires_grad_(False).eval()

    def create_optimizer(
        self, model: nn.Module, config: QAAConfig, weight_decay: float, max_steps: int
    ) -> torch.optim.Optimizer:
        """AdamW: W_up with the run's weight decay, b without, the angles at their own rate without."""
        layers = [layer for _, layer in qaa_layers(model)]
        angles = [layer.qaa_angles for layer in layers if layer.qaa_angles.requires_grad]
        ups = [layer.qaa_up for layer in layers if layer.qaa_up.requires_grad]
        biases = [layer.qaa_bias for layer in layers if layer.qaa_bias is not None and layer.qaa_bias.requires_grad]
        known = {id(p) for p in angles + ups + biases}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in known]
        groups = [
            {"params": ups + others, "weight_decay": weight_decay},
            {"params": biases, "weight_decay": 0.0},
            {"params": angles, "weight_decay": 0.0, "lr": config.angle_lr()},
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate)

    def step_log(self, model: nn.Module) -> dict[str, float]:
        if model is None:
            return {}
        squares = [layer.qaa_up.detach().float().pow(2).sum() for _, layer in qaa_layers(model)]
        return {"qaa_up_norm": float(torch.stack(squares).sum().sqrt())} if squares else {}

    def finalize(
        self, model: nn.Module, config: QAAConfig, run_dir: Path, tokens_per_step: float | None = None
    ) -> dict[str, Any]:
        return resource_figures(dict(qaa_layers(model)), tokens_per_step)

    def set_eval_options(self, model: nn.Module, options: EvalOptions) -> None:
        if not isinstance(options, QAAEvalOptions):
            raise UsageError(f"QAA takes QAAEvalOptions, got {type(options).__name__}")
        options.validate()
        layers = list(qaa_layers(model))
        if not layers:
            raise UsageError("this model carries no QAA adapter")
        for index, (_, layer) in enumerate(layers):
            layer.set_noise(options.shots or None, float(options.depolarizing), options.noise_seed + index)

    def robustness_grid(self) -> list[EvalOptions]:
        return list(ROBUSTNESS_GRID)

    def capacity(
        self, model: nn.Module, base_model: nn.Module, sample_ids: torch.Tensor
    ) -> dict[str, dict[str, Any]]:
        """Rank of the Jacobian in x of each module's update s (W_up z(x) + b) on real activations."""
        return jacobian_capacity(model, dict(qaa_layers(model)), sample_ids, self.capacity_samples)

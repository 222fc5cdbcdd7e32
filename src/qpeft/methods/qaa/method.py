"""The QAA method: the recipe hooks of the method contract.

Its config, eval options and robustness grid are in ``config``, the adapter on a model in ``model``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qpeft.methods.base import EvalOptions, Method
from qpeft.methods.qaa.capacity import jacobian_capacity
from qpeft.methods.qaa.config import ROBUSTNESS_GRID, QAAConfig, QAAEvalOptions
from qpeft.methods.qaa.model import adapter_from_model, from_pretrained, inject, qaa_layers, write_adapter
from qpeft.methods.qaa.resources import quiet_qiskit, resource_figures
from qpeft.utils.errors import UsageError
from qpeft.utils.extras import QUANTUM_INSTALL, is_available

log = logging.getLogger(__name__)


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
        inject(model, config)
        for _, layer in qaa_layers(model):
            layer.qaa_angles.requires_grad_(config.train_angles)
        return model

    def save(self, model: nn.Module, config: QAAConfig, out_dir: Path) -> None:
        write_adapter(adapter_from_model(model, config.to_dict()), out_dir)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        """The trained model in its inference-only form (``QAALinear.to_inference``)."""
        return from_pretrained(base_model, adapter_dir)

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
        with quiet_qiskit():  # the hardware model transpiles each circuit shape once, and Qiskit logs every pass
            for index, (_, layer) in enumerate(layers):
                layer.set_noise(options.shots or None, float(options.depolarizing), options.noise_seed + index,
                                options.hardware())

    def robustness_grid(self) -> list[EvalOptions]:
        """The grid; its hardware settings only where Qiskit, which counts the device's gates, is installed."""
        if is_available("qiskit"):
            return list(ROBUSTNESS_GRID)
        log.info("QAA's hardware-noise re-evaluations skipped: they count gates with Qiskit (%s)", QUANTUM_INSTALL)
        return [options for options in ROBUSTNESS_GRID if options.hardware() is None]

    def capacity(
        self, model: nn.Module, base_model: nn.Module, sample_ids: torch.Tensor
    ) -> dict[str, dict[str, Any]]:
        """Rank of the Jacobian in x of each module's update s (W_up z(x) + b) on real activations."""
        return jacobian_capacity(model, dict(qaa_layers(model)), sample_ids, self.capacity_samples)

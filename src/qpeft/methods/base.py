"""The contract every fine-tuning method implements.

A method is one name in the registry (see ``qpeft.methods``), a config dataclass
whose fields become CLI flags (``--<method>-<field>``, with the field's
``metadata["help"]`` as their help), and the hooks below. The training loop,
evaluation and reports only ever talk to this interface, so a new method plugs in
by adding one module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from qpeft.analysis.capacity import linear_capacity
from qpeft.utils.errors import UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from qpeft.data.types import Example


@dataclass
class MethodConfig:
    """Fields shared by every method; subclasses add their own with defaults."""

    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})

    def validate(self) -> None:
        """Raise ``qpeft.utils.errors.UsageError`` for impossible values."""
        if not self.learning_rate > 0:
            raise UsageError(f"learning_rate must be positive, got {self.learning_rate}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MethodConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class EvalOptions:
    """Inference-time options of a method (e.g. QAA's shots); none by default."""

    def describe(self) -> dict[str, Any]:
        """The options as they go into results (e.g. beside a robustness re-evaluation)."""
        return asdict(self)

    def tag(self) -> str:
        """A short file-name tag for an evaluation under these options (``metrics_<tag>.json``)."""
        return "_".join(f"{key}{value}" for key, value in asdict(self).items()) or "default"


class Method:
    """Base class: override ``prepare``, ``save`` and ``load``; the rest is optional."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    eval_options_class: ClassVar[type[EvalOptions]] = EvalOptions
    #: False for methods (Prefix tuning) that cannot run with gradient checkpointing.
    supports_gradient_checkpointing: ClassVar[bool] = True

    def prepare(self, model: nn.Module, config: MethodConfig) -> nn.Module:
        """Freeze what must stay frozen, inject the adapter, return the model to train."""
        raise NotImplementedError

    def save(self, model: nn.Module, config: MethodConfig, out_dir: Path) -> None:
        """Write the trained adapter (weights as safetensors) into ``out_dir``."""
        raise NotImplementedError

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        """Rebuild the trained model for inference from a base model and a saved adapter."""
        raise NotImplementedError

    # Optional hooks -------------------------------------------------------------

    def initialise(
        self, model: nn.Module, config: MethodConfig, tokenizer: PreTrainedTokenizerBase, examples: list[Example]
    ) -> None:
        """Data-dependent initialisation after ``prepare`` (e.g. Prefix tuning's real-token prefix); default no-op.

        ``prepare`` sees no tokenizer or data; this runs right after it in training, before the first step
        (and before a resumed checkpoint overwrites the weights). ``examples`` are the training examples.
        """

    def create_optimizer(
        self, model: nn.Module, config: MethodConfig, weight_decay: float, max_steps: int
    ) -> torch.optim.Optimizer | None:
        """An optimizer of the method's own (SoRA's proximal gate step), or None for the Trainer's AdamW.

        The Trainer saves and restores its state with every checkpoint and builds the
        learning-rate schedule on it, so whatever the method adds to ``step()`` runs the
        same under gradient accumulation, DDP and resume.
        """
        return None

    def step_log(self, model: nn.Module) -> dict[str, float]:
        """Extra columns for ``train_log.csv`` at every logged step."""
        return {}

    def finalize(
        self, model: nn.Module, config: MethodConfig, run_dir: Path, tokens_per_step: float | None = None
    ) -> dict[str, Any]:
        """Runs once after training; returns extra figures for ``metrics.json``.

        ``tokens_per_step`` is what training measured (tokens seen per optimizer step; None when unknown).
        """
        return {}

    def set_eval_options(self, model: nn.Module, options: EvalOptions) -> None:
        """Apply inference-time options (no-op unless the method defines some)."""

    def robustness_grid(self) -> list[EvalOptions]:
        """Inference settings under which ``qpeft compare`` re-evaluates the method (e.g. QAA's shots and noise).

        Each is a full re-evaluation of the test set; empty (the default) for methods without eval options.
        """
        return []

    def delta_weights(self, model: nn.Module, base_model: nn.Module) -> dict[str, torch.Tensor]:
        """The learned update ΔW (out x in) of every adapted linear module, for the capacity analysis.

        Empty for methods whose update is not a weight matrix (Prefix tuning, QAA).
        """
        return {}

    def capacity(
        self, model: nn.Module, base_model: nn.Module, sample_ids: torch.Tensor
    ) -> dict[str, dict[str, Any]]:
        """How expressive the learned update is, per adapted module.

        Every entry of a per-token update carries ``update_jacobian_rank``, the rank of the
        update's Jacobian in the layer input, the one figure compared across methods. A linear
        update (from ``delta_weights``) has the Jacobian ΔW at every input, so its entry gives
        rank(ΔW) beside ΔW's singular values and effective rank; a method with a non-linear
        update (QAA) overrides this with the Jacobian's rank on activations from ``sample_ids``.
        Empty for a method without a per-token update (Prefix tuning).
        """
        return {name: linear_capacity(delta) for name, delta in self.delta_weights(model, base_model).items()}


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""The contract every fine-tuning method implements.

A method is one name in the registry (see ``qpeft.methods``), a config dataclass
whose fields become CLI flags (``--<method>-<field>``, with the field's
``metadata["help"]`` as their help), and the hooks below. The training loop,
evaluation and reports only ever talk to this interface, so a new method plugs in
by adding one module.

The hand-written adapters (SoRA, QAA) also share ``AdapterLayer``, the layer contract
after PEFT's ``BaseTunerLayer``: declared parameter names, a layer built from its config,
``get_delta_weight`` where the update is linear, and ``inject`` / ``load_saved`` to put
layers onto a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from qpeft.analysis.capacity import linear_capacity
from qpeft.methods.targets import adapter_layers, linear_shape, wrap_linear_modules
from qpeft.utils.errors import UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from qpeft.data.types import Example


@dataclass
class MethodConfig:
    """Fields shared by every method; subclasses add their own with defaults."""

    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})

    #: The learning rates a learning-rate search scales together, keeping their ratios (a rate that sets
    #: something else, as SoRA's gates' sets its sparsity, stays out).
    learning_rate_fields: ClassVar[tuple[str, ...]] = ("learning_rate",)

    def with_learning_rates_scaled(self, factor: float) -> MethodConfig:
        """A copy with every learning rate times ``factor`` (one point of a learning-rate grid)."""
        return replace(self, **{name: getattr(self, name) * factor for name in self.learning_rate_fields})

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

    def draws_samples(self) -> bool:
        """Whether the model's outputs are sampled under these options (QAA's shots): its test loss is then a
        Monte Carlo estimate that costs more than the rest of the evaluation together."""
        return False


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


# The layer contract of the hand-written adapters (SoRA, QAA) -----------------------------------------------------


class AdapterLayer:
    """Mixin of a hand-written adapter layer around a frozen ``nn.Linear`` or GPT-2 ``Conv1D``.

    After PEFT's ``BaseTunerLayer``: ``adapter_param_names`` are the layer's own tensors (PEFT's
    ``adapter_layer_names``), under which they appear in state dicts and adapter files;
    ``from_config`` builds the layer from the method's config object; ``get_delta_weight`` is
    ΔW (out x in) where the update is linear. ``merge``/``unmerge`` exist only where merging
    means folding ΔW into the base weight (SoRA), never for a non-linear update (QAA).
    """

    #: The layer's adapter tensors (an absent one, such as a switched-off bias, is None).
    adapter_param_names: ClassVar[tuple[str, ...]] = ()
    #: The method's name in messages ("SoRA", "QAA").
    label: ClassVar[str] = "adapter"

    base_layer: nn.Module
    in_features: int
    out_features: int
    is_conv1d: bool

    def _wrap_base_layer(self, base_layer: nn.Module) -> None:
        """Hold the frozen base layer and read its shape (call after ``nn.Module.__init__``)."""
        self.base_layer = base_layer
        self.in_features, self.out_features = linear_shape(base_layer)
        self.is_conv1d = isinstance(base_layer, Conv1D)

    @classmethod
    def from_config(cls: type[Layer], base_layer: nn.Module, config: Any) -> Layer:
        """The layer around ``base_layer`` with the options of the method's config."""
        raise NotImplementedError

    @classmethod
    def inject(cls: type[Layer], model: nn.Module, config: Any, names: list[str] | None = None) -> dict[str, Layer]:
        """Wrap the target linear layers of ``model`` in ``from_config(layer, config)``, in place; name -> layer.

        Targets follow ``config.target_modules``, or are exactly ``names`` when a saved adapter is
        put back onto a base model.
        """
        return wrap_linear_modules(model, config.target_modules, names,
                                   lambda module: cls.from_config(module, config), cls.label)

    @classmethod
    def layers_in(cls: type[Layer], model: nn.Module) -> Iterator[tuple[str, Layer]]:
        """(name, layer) for every layer of this class in ``model``; the name is that of the wrapped module."""
        return adapter_layers(model, cls)

    @classmethod
    def load_saved(
        cls: type[Layer], base_model: nn.Module, config: Any, saved: dict[str, dict[str, torch.Tensor | None]]
    ) -> dict[str, Layer]:
        """Freeze ``base_model``, inject a layer at every saved module and copy the saved tensors in.

        Every module's tensors are checked before any is copied, so a mismatch leaves no layer half loaded.
        """
        base_model.requires_grad_(False)
        layers = cls.inject(base_model, config, list(saved))
        for name, layer in layers.items():
            layer.check_adapter_state(saved[name], name)
        for name, layer in layers.items():
            layer.load_adapter_state(saved[name], name)
        return layers

    def get_delta_weight(self) -> torch.Tensor:
        """ΔW (out x in) of a linear update; a non-linear one has none."""
        raise NotImplementedError(f"{type(self).__name__}'s update is not linear: it has no ΔW")

    def adapter_state(self) -> dict[str, torch.Tensor | None]:
        """CPU copies of the adapter tensors, by parameter name (None for an absent one)."""
        values = {}
        for name in self.adapter_param_names:
            tensor = getattr(self, name)
            values[name] = None if tensor is None else tensor.detach().cpu().clone()
        return values

    def check_adapter_state(self, saved: dict[str, torch.Tensor | None], module: str) -> None:
        """The saved tensors fit the layer's parameters of the same name: present where they are, of their shape.

        A tensor absent (None, or left out) in ``saved`` must be absent in the layer.
        """
        for key in self.adapter_param_names:
            param, value = getattr(self, key), saved.get(key)
            if (param is None) != (value is None):
                raise UsageError(f"{self.label} adapter module {module!r}: {key} does not match the config")
            if value is not None and param.shape != value.shape:
                raise UsageError(f"{self.label} adapter module {module!r}: {key} has shape {tuple(value.shape)}, "
                                 f"the layer's is {tuple(param.shape)}")

    def load_adapter_state(self, saved: dict[str, torch.Tensor | None], module: str) -> None:
        """Copy saved tensors into the parameters of the same name, after ``check_adapter_state``."""
        self.check_adapter_state(saved, module)
        with torch.no_grad():
            for key in self.adapter_param_names:
                if saved.get(key) is not None:
                    getattr(self, key).copy_(saved[key])


Layer = TypeVar("Layer", bound=AdapterLayer)

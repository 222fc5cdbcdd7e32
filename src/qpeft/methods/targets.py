"""Which linear modules an adapter wraps: the same rules for LoRA, SoRA and QAA.

``auto`` takes PEFT's per-architecture default (``q_proj``/``v_proj`` for Llama,
``c_attn`` for GPT-2; ``c_attn.q``/``c_attn.v`` for GPT-2 with ``--split-qkv``); ``all-linear``
every Linear/Conv1D outside the output head; otherwise a comma-separated list of module-name
suffixes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn
from transformers.pytorch_utils import Conv1D

from qpeft.methods.fused_qkv import has_split_qkv
from qpeft.utils.errors import UsageError

LINEAR_TYPES = (nn.Linear, Conv1D)
#: ``auto`` on a model whose fused ``c_attn`` was split (``models.split_fused_qkv``): queries and values.
SPLIT_QKV_DEFAULT = ("c_attn.q", "c_attn.v")


def peft_target_modules(model: nn.Module, spec: str) -> list[str] | str:
    """The ``target_modules`` value for a PEFT config."""
    if spec == "all-linear":
        return spec
    if spec == "auto":
        if has_split_qkv(model):
            return list(SPLIT_QKV_DEFAULT)  # queries and values, as PEFT's default for Llama's q_proj, v_proj
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        default = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        if default is None:
            raise UsageError(f"no default target modules for model type {model_type!r}: name them explicitly")
        return list(default)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UsageError("target modules: give 'auto', 'all-linear' or comma-separated module names")
    return names


def find_target_modules(model: nn.Module, spec: str) -> dict[str, nn.Module]:
    """Full name -> module for every linear layer the spec selects; an empty match is an error."""
    wanted = peft_target_modules(model, spec)
    output_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, LINEAR_TYPES) or module is output_head:
            continue
        if wanted == "all-linear" or any(name == w or name.endswith("." + w) for w in wanted):
            found[name] = module
    if not found:
        raise UsageError(f"target modules {spec!r} match no linear layer of this model")
    return found


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or GPT-2's transposed Conv1D."""
    if isinstance(module, Conv1D):
        in_features, out_features = module.weight.shape
        return in_features, out_features
    return module.in_features, module.out_features


def wrap_linear_modules(
    model: nn.Module,
    target_modules: str,
    names: list[str] | None,
    wrap: Callable[[nn.Module], nn.Module],
    label: str,
) -> dict[str, nn.Module]:
    """Replace each target linear layer by ``wrap(layer)``, in place; returns name -> wrapper.

    Targets follow the ``target_modules`` rules, or are exactly ``names`` when a saved adapter
    is put back onto a base model. Shared by the hand-written adapters (SoRA, QAA).
    """
    if names is None:
        targets = find_target_modules(model, target_modules)
    else:
        try:
            targets = {name: model.get_submodule(name) for name in names}
        except AttributeError as error:
            raise UsageError(f"the {label} adapter does not fit this model: {error}") from None
    wrapped = {}
    for name, module in targets.items():
        if not isinstance(module, LINEAR_TYPES):
            raise UsageError(f"the {label} adapter does not fit this model: {name!r} is not a plain linear layer")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped[name] = wrap(module)
        setattr(parent, child, wrapped[name])
    return wrapped


def adapter_layers(model: nn.Module, layer_class: type[nn.Module]) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) for every ``layer_class`` module of ``model``; the name is that of the wrapped module."""
    for name, module in model.named_modules():
        if isinstance(module, layer_class):
            yield name, module

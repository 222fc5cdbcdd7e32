"""Full fine-tuning: every weight trains. The reference for quality, memory and time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from qpeft.methods.base import Method, MethodConfig
from qpeft.methods.fused_qkv import fused_qkv_state_dict, has_split_qkv, split_fused_qkv
from qpeft.methods.serialization import CONFIG_FILE, check_float, one_line, tensor_headers
from qpeft.methods.targets import find_target_modules
from qpeft.utils.errors import UsageError


@dataclass
class FullConfig(MethodConfig):
    # Full fine-tuning needs a far smaller step than adapters (Li and Liang 2021 use 5e-5 on E2E).
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate of every weight"})


class FullFineTuning(Method):
    name = "full"
    description = "full fine-tuning of every weight"
    config_class = FullConfig

    def prepare(self, model: nn.Module, config: MethodConfig) -> nn.Module:
        model.requires_grad_(True)
        return model

    def save(self, model: nn.Module, config: MethodConfig, out_dir: Path) -> None:
        # a split c_attn (--split-qkv) is written fused: the folder is a plain checkpoint of the architecture
        model.save_pretrained(out_dir, safe_serialization=True, state_dict=fused_qkv_state_dict(model))

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        """The fine-tuned model of ``adapter_dir``, which must be whole and of the base model's shape.

        Safetensors only (never a pickled ``pytorch_model.bin``) and transformers' own code only (never the
        folder's). transformers fills a missing weight with random values and casts an integer one, so
        both are checked: the files before loading, the loading report and the shapes after.
        """
        adapter_dir = Path(adapter_dir)
        check_model_files(adapter_dir, base_model)
        try:
            model, report = AutoModelForCausalLM.from_pretrained(
                adapter_dir, dtype=base_model.dtype, use_safetensors=True, trust_remote_code=False,
                output_loading_info=True)
        except LOAD_ERRORS as error:
            raise UsageError(f"{adapter_dir} holds no loadable fine-tuned model: {one_line(error)}") from None
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            if report[kind]:
                raise UsageError(f"{adapter_dir} does not match its config.json: {kind.replace('_', ' ')} "
                                 f"{sorted(report[kind])[:3]}")
        if has_split_qkv(base_model):
            split_fused_qkv(model)
        check_same_shapes(model, base_model, adapter_dir)
        return model

    def delta_weights(self, model: nn.Module, base_model: nn.Module) -> dict[str, torch.Tensor]:
        """Trained minus base weight (out x in) on the modules LoRA adapts by default."""
        base_modules = dict(base_model.named_modules())
        deltas = {}
        for name, module in find_target_modules(model, "auto").items():
            delta = module.weight.detach().float().cpu() - base_modules[name].weight.detach().float().cpu()
            deltas[name] = delta.T if isinstance(module, Conv1D) else delta  # Conv1D stores in x out
        return deltas


#: What transformers raises on a folder it cannot load (no safetensors weights, a config it cannot read, sizes that
#: do not fit, a truncated file).
LOAD_ERRORS = (OSError, ValueError, RuntimeError, SafetensorError, StrictDataclassError)


def check_model_files(adapter_dir: Path, base_model: nn.Module) -> None:
    """A model's folder, without a PEFT adapter; every safetensors file of it whole, and each of its tensors that
    the base model has of that shape and, where the base model's is floating point, floating point too."""
    if not (adapter_dir / "config.json").is_file():
        raise UsageError(f"{adapter_dir} holds no fine-tuned model (no config.json)")
    if (adapter_dir / CONFIG_FILE).exists():  # transformers would load it on top, or its base model from its name
        raise UsageError(f"{adapter_dir} holds a PEFT adapter ({CONFIG_FILE}), not a fully fine-tuned model")
    base = base_model.state_dict()
    for path in sorted(adapter_dir.glob("*.safetensors")):
        for key, (dtype, shape) in sorted(tensor_headers(path).items()):
            if key not in base:  # transformers reports what no weight of the model takes
                continue
            if tuple(shape) != tuple(base[key].shape):
                raise UsageError(f"{path}: tensor {key} has shape {tuple(shape)}, the base model's is "
                                 f"{tuple(base[key].shape)}")
            if base[key].is_floating_point():
                check_float(path, key, dtype)


def check_same_shapes(model: nn.Module, base_model: nn.Module, adapter_dir: Path) -> None:
    """The loaded model has the base model's tensors: its config.json describes the same architecture."""
    found = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    expected = {key: tuple(value.shape) for key, value in base_model.state_dict().items()}
    differing = sorted(key for key in found.keys() | expected.keys() if found.get(key) != expected.get(key))
    if differing:
        raise UsageError(f"{adapter_dir} is not a fine-tuned copy of this base model (it differs at {differing[0]!r})")

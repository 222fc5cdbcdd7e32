"""SoRA's own adapter files, and pruning + export to a standard PEFT LoRA adapter.

``run_dir/adapter`` holds ``sora_config.json`` (the method config and the adapted
modules) and ``sora_adapter.safetensors`` (A, B and gate of each module); ``SoRA.load``
reads them back. ``export_lora`` prunes every rank whose gate is exactly zero, folds the
surviving gate values into B and writes ``adapter_config.json`` +
``adapter_model.safetensors``, which ``peft.PeftModel.from_pretrained(base, dir)`` loads
with no qpeft import. The per-module rank goes into PEFT's ``rank_pattern``; since PEFT
scales a module by ``alpha / r`` of that module, ``alpha_pattern`` gets
``alpha * r_new / r`` so that the scale stays the trained ``alpha / r``. A module whose
every rank died is left out of the adapter (PEFT then leaves it as the base layer, which
is what SoRA computes there). If every module died there is nothing to export: the
trained model *is* the base model, and ``export_lora`` raises ``AllRanksPruned``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from qpeft.errors import UsageError
from qpeft.io import read_json
from qpeft.methods.adapter_files import missing_tensor, read_adapter_files, write_adapter_files
from qpeft.methods.sora.layer import sora_layers

CONFIG_FILE = "sora_config.json"
WEIGHTS_FILE = "sora_adapter.safetensors"
FORMAT = "qpeft-sora/1"


class AllRanksPruned(UsageError):
    """Every gate of every module is zero: the trained model equals the base model."""


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
    extra: dict[str, Any] = field(default_factory=dict)

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
    modules = {
        name: ModuleWeights(
            A=layer.sora_A.detach().cpu().clone(),
            B=layer.sora_B.detach().cpu().clone(),
            gate=layer.sora_gate.detach().cpu().clone(),
            conv1d=layer.is_conv1d,
        )
        for name, layer in sora_layers(model)
    }
    if not modules:
        raise UsageError("this model carries no SoRA adapter")
    model_config = getattr(model, "config", None)
    return SoRAAdapter(dict(config), modules, getattr(model_config, "name_or_path", None) or None)


def write_adapter(adapter: SoRAAdapter, out_dir: Path) -> None:
    tensors = {}
    for name, weights in adapter.modules.items():
        tensors[f"{name}.sora_A"] = weights.A
        tensors[f"{name}.sora_B"] = weights.B
        tensors[f"{name}.sora_gate"] = weights.gate
    write_adapter_files(out_dir, WEIGHTS_FILE, CONFIG_FILE, {
        "format": FORMAT,
        "config": adapter.config,
        "base_model_name_or_path": adapter.base_model_name_or_path,
        "modules": {name: {"in_features": w.A.shape[1], "out_features": w.B.shape[0], "conv1d": w.conv1d}
                    for name, w in adapter.modules.items()},
    }, tensors)


def read_adapter(adapter_dir: Path) -> SoRAAdapter:
    meta, tensors = read_adapter_files(adapter_dir, WEIGHTS_FILE, CONFIG_FILE, FORMAT, "SoRA")
    modules = {}
    for name, info in meta["modules"].items():
        try:
            modules[name] = ModuleWeights(tensors[f"{name}.sora_A"], tensors[f"{name}.sora_B"],
                                          tensors[f"{name}.sora_gate"], bool(info["conv1d"]))
        except KeyError as error:
            raise missing_tensor(adapter_dir, WEIGHTS_FILE, error) from None
    return SoRAAdapter(meta["config"], modules, meta.get("base_model_name_or_path"))


def pattern_key(module_name: str) -> str:
    """A ``rank_pattern`` / ``alpha_pattern`` key that matches exactly this module.

    PEFT matches a key as the regular expression ``(.*\\.)?(key)$`` against the module's
    full name and takes the first key that matches; the escaped full name matches only
    the module itself (``layers.1`` never matches ``layers.11``).
    """
    return re.escape(module_name)


def export_lora(adapter: SoRAAdapter, out_dir: Path) -> dict[str, Any]:
    """Prune, fold and write a PEFT LoRA adapter into ``out_dir``; returns a summary.

    Raises ``AllRanksPruned`` (and writes nothing) when every gate is zero.
    """
    from peft import LoraConfig

    r, alpha = adapter.r, adapter.alpha
    tensors: dict[str, torch.Tensor] = {}
    targets: list[str] = []
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    for name, weights in adapter.modules.items():
        new_rank = weights.rank
        if new_rank == 0:
            continue
        lora_A, lora_B = weights.lora_factors()
        tensors[f"base_model.model.{name}.lora_A.weight"] = lora_A
        tensors[f"base_model.model.{name}.lora_B.weight"] = lora_B
        targets.append(name)
        if new_rank != r:
            rank_pattern[pattern_key(name)] = new_rank
            alpha_pattern[pattern_key(name)] = alpha * new_rank / r
    if not targets:
        raise AllRanksPruned(
            f"every rank of all {len(adapter.modules)} SoRA modules was pruned (all gates are zero): the trained "
            "model equals the base model and there is no LoRA adapter to export"
        )
    lora_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=float(adapter.config.get("dropout", 0.0)),
        target_modules=targets,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        fan_in_fan_out=all(adapter.modules[name].conv1d for name in targets),
        base_model_name_or_path=adapter.base_model_name_or_path,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lora_config.save_pretrained(str(out_dir))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    ranks = adapter.ranks()
    summary = {
        "modules_kept": len(targets),
        "modules_dropped": [name for name, rank in ranks.items() if rank == 0],
        "params_before_pruning": adapter.params_before_pruning(),
        "params_after_pruning": adapter.params_after_pruning(),
        "ranks": ranks,
    }
    (out_dir / "sora_export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def export_run(run_dir: Path, out_dir: Path) -> dict[str, Any]:
    """``qpeft sora-export``: the LoRA adapter of a trained SoRA run folder."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise UsageError(f"{run_dir} is not a qpeft run folder (no config.json)")
    method = read_json(config_path).get("method")
    if method != "sora":
        raise UsageError(f"{run_dir} is a {method!r} run, not a SoRA run")
    if not (run_dir / "adapter").exists():
        raise UsageError(f"{run_dir} has no trained adapter yet; run training to the end first")
    return export_lora(read_adapter(run_dir / "adapter"), out_dir)

"""Pruning a trained SoRA adapter and exporting it as a standard PEFT LoRA adapter.

``export_lora`` prunes every rank whose gate is exactly zero, folds the
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
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from qpeft.methods.sora.model import SoRAAdapter
from qpeft.utils.errors import UsageError


class AllRanksPruned(UsageError):
    """Every gate of every module is zero: the trained model equals the base model."""


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

"""SoRA — sparse low-rank adaptation (Ding et al., EMNLP 2023).

Each target linear layer becomes y = W0 x + (alpha / r) B (g ⊙ A x) with a gate g in
R^r. After every optimiser step (AdamW on A, B and g) the gate takes a proximal step for
an L1 penalty, g <- sign(g) max(|g| - η_t λ_t, 0), with η_t the gate's current learning
rate and λ_t the sparsity strength (constant or rising on a schedule, see
``optim.sparsity_at``). Ranks whose gate reaches exactly zero are dead; after training
they are pruned, the surviving gates are folded into B, and the result is exported as an
ordinary PEFT LoRA adapter with a per-module rank (``export``).

Where qpeft differs from the official code (github.com/TsinghuaC3I/SoRA): that code never
prunes (it only counts zero gates), and its threshold step is not a true soft-threshold
(it subtracts the threshold from the entries above it and then zeroes every entry that
is *now* below it, so entries between the threshold and twice the threshold die too; the
threshold is λ itself, not learning rate x λ). qpeft applies the exact
proximal operator, scaled by the gate's scheduled learning rate, prunes dead ranks and
exports a standard LoRA adapter.

Files, as in every PEFT tuner: ``config`` (the options), ``layer`` (``SoRALinear``),
``model`` (inject, find layers, save and load the adapter folder), plus ``optim`` (the
proximal optimiser), ``export`` (to a PEFT LoRA adapter) and ``method`` (the recipe hooks).
"""

from qpeft.methods.sora.config import SoRAConfig
from qpeft.methods.sora.export import AllRanksPruned, export_lora
from qpeft.methods.sora.layer import SoRALinear
from qpeft.methods.sora.method import SoRA
from qpeft.methods.sora.model import SoRAAdapter, from_pretrained, inject, read_adapter, sora_layers
from qpeft.methods.sora.optim import SCHEDULES, SoRAAdamW, soft_threshold, soft_threshold_, sparsity_at

__all__ = [
    "SCHEDULES", "AllRanksPruned", "SoRA", "SoRAAdamW", "SoRAAdapter", "SoRAConfig", "SoRALinear", "export_lora",
    "from_pretrained", "inject", "read_adapter", "soft_threshold", "soft_threshold_", "sora_layers", "sparsity_at",
]

"""SoRA's config: every option of ``--method sora`` (``--sora-<field>``), with its help and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field

from qpeft.methods.base import MethodConfig
from qpeft.methods.sora.optim import SCHEDULES
from qpeft.utils.errors import UsageError

#: How the gates start (``gate_init``).
GATE_INITS = ("ones", "normal")


@dataclass
class SoRAConfig(MethodConfig):
    # As LoRA: Hu et al. (2021) train GPT-2 on E2E at 2e-4, and qpeft's LoRA uses the same.
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate of A and B"})
    r: int = field(default=8, metadata={"help": "r_max of the paper: the rank every module starts with"})
    alpha: float = field(default=16.0, metadata={"help": "scaling numerator: the update is (alpha / r) B (g ⊙ A x)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter's input, in [0, 1)"})
    target_modules: str = field(
        default="auto", metadata={"help": "'auto' (PEFT's per-architecture targets), 'all-linear' or module names"}
    )
    # The gates need a far larger step than A and B to move within a short budget: over the
    # 60-step demo the learning rates sum to about 30 x lr, so at lr = 2e-4 a gate moves by
    # at most ~0.006 through AdamW and the prox would have to do all the work (λ ~ 170): every
    # gate then dies at the same step or none does. At 0.1 the gates' own AdamW steps differ
    # enough for the prox to select among them.
    gate_learning_rate: float = field(
        default=0.1, metadata={"help": "the gates' AdamW learning rate (0: the same as learning_rate)"}
    )
    # AdamW's step is about lr whatever the gradient's size, so λ compares against the
    # consistency of a gate's gradient: a gate shrinks when λ exceeds its mean normalised step
    # (about 0..1), and above 1 every gate dies eventually. The default is the official GLUE
    # setting in these terms (threshold 3e-4 per step at lr 8e-4: λ ≈ 0.4). Validation losses
    # of 40-step runs on SmolLM2-135M / E2E (the demo's budget, A and B at 2e-3): λ = 0 1.662
    # (no gate zero), 0.5 1.710 (2% of gates zero), 1.0 1.792 (27%, 4 of 60 modules dead),
    # 1.4 2.233 (57%, 19 dead): the former default, 1.4, had SoRA at the base model's BLEU.
    sparsity: float = field(default=0.4, metadata={"help": "λ_0, the strength of the L1 penalty on the gates"})
    sparsity_max: float = field(
        default=0.4, metadata={"help": "λ_max, reached at the last step; ignored by the constant schedule"}
    )
    schedule: str = field(
        default="constant", metadata={"help": f"how λ goes from λ_0 to λ_max: {' | '.join(SCHEDULES)}"}
    )
    gate_init: str = field(
        default="ones", metadata={"help": "the gates' start: ones, or normal (the official code's draw)"}
    )

    #: A learning-rate search scales A and B's rate alone. The gates' rate is a sparsity setting: with λ it sets
    #: the prox's threshold (η_gate λ a step), so scaling it with the grid moved the sparsity, not the learning
    #: rate: in the demo's search (both scaled) every gate was pruned from x3.16 up, which held A and B at x0.32.
    learning_rate_fields = ("learning_rate",)

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

"""What an experiment is made of: every setting the CLI fills in and ``config.json`` records.

``Experiment`` is what every method of a comparison shares: the model, the data, and the
``TrainSettings`` and ``EvalSettings`` of each run. ``AnalysisSettings`` says how ``qpeft
compare`` analyses the finished runs; it is not part of the experiment, so changing it only
re-analyses. These classes sit below training and evaluation, which take them as arguments.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from qpeft.analysis.convergence import DEFAULT_FRACTIONS, DEFAULT_MARGIN, DEFAULT_TAIL
from qpeft.data import DataSplits, Example, load_splits
from qpeft.utils.errors import UsageError

#: The base model when ``--model`` is not given: SmolLM2-135M-Instruct (a GGUF alias of ``qpeft.models``).
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_DATASET = "e2e"
#: The BERTScore model when ``--bertscore-model`` is not given (an alias of ``qpeft.evaluation.metrics``).
DEFAULT_BERTSCORE_MODEL = "all-minilm-l6-v2"
PRECISIONS = ("fp32", "bf16", "fp16")
STOP_MODES = ("auto", "on", "off")


@dataclass
class TrainSettings:
    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 128
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    save_steps: int = 50
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    template: str = "plain"
    eval_steps: int = 0  # validation loss every N steps and at the end; 0: four times per run
    validation_items: int = 256  # (input, target) pairs of the validation split scored each time (seeded sample)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "max_length", "save_steps"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("eval_steps", "validation_items"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be 0 or positive, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")

    def validation_steps(self) -> set[int]:
        """The optimizer steps after which the validation loss is measured (the last one always)."""
        every = self.eval_steps or max(1, math.ceil(self.steps / 4))
        return {*range(every, self.steps + 1, every), self.steps}


@dataclass
class EvalSettings:
    max_new_tokens: int = 64
    num_beams: int = 1
    batch_size: int = 16
    max_test_items: int = 0  # 0: the whole test set; N: a seeded random sample of N items
    sample_seed: int | None = None  # seed of that sample; None: the experiment's seed
    bertscore_model: str = DEFAULT_BERTSCORE_MODEL  # "none" to skip BERTScore
    test_loss: bool = True  # False: skip the teacher-forced loss over every reference (reported as None)
    # "auto": cut each output at its first newline when no training target holds one (the model has
    # never been shown a target that goes on after a line break, so what follows one is rambling).
    stop_at_newline: str = "auto"
    fewshot_examples: int = 3  # k training examples in the prompt of the base-fewshot row (0: no such row)

    def validate(self) -> None:
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_test_items < 0:
            raise UsageError("--max-test-items must be 0 (all) or positive")
        if self.stop_at_newline not in STOP_MODES:
            raise UsageError(f"--stop-at-newline must be one of {', '.join(STOP_MODES)}, got {self.stop_at_newline!r}")
        if self.fewshot_examples < 0:
            raise UsageError(f"--fewshot-examples must be 0 (no few-shot row) or positive, got {self.fewshot_examples}")

    def sample_indices(self, count: int, seed: int) -> list[int]:
        """Indices of the test items to score: all, or a seeded random sample of ``max_test_items``.

        Never the first N: a test file may be sorted (E2E's is, by the number of attributes).
        """
        if not self.max_test_items or self.max_test_items >= count:
            return list(range(count))
        return sorted(random.Random(seed).sample(range(count), self.max_test_items))

    def stops_at_newline(self, train: list[Example]) -> bool:
        if self.stop_at_newline == "auto":
            return not any("\n" in example.target for example in train)
        return self.stop_at_newline == "on"


@dataclass
class Experiment:
    """What every method of a comparison shares."""

    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    input_column: str = "input"
    target_column: str = "target"
    validation_fraction: float = 0.05
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def validate(self) -> None:
        self.train.validate()
        self.eval.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Experiment:
        values = dict(values)
        train_settings = TrainSettings(**values.pop("train"))
        eval_settings = EvalSettings(**values.pop("eval"))
        return cls(**values, train=train_settings, eval=eval_settings)

    def load_data(self, data_dir: str | None) -> DataSplits:
        return load_splits(
            self.dataset, data_dir, self.input_column, self.target_column, self.validation_fraction, self.seed
        )


@dataclass
class AnalysisSettings:
    """How ``compare`` analyses finished runs (not part of the experiment: changing it re-analyses)."""

    convergence_margin: float = DEFAULT_MARGIN
    loss_fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    tail_fraction: float = DEFAULT_TAIL
    sample_prompts: int = 8  # test prompts given to the capacity hooks and the latency measurement
    latency_new_tokens: int = 16
    latency_repeats: int = 3
    reference: str = "lora"  # the method every p-value is against (the base model when it is not in the comparison)
    bootstrap_resamples: int = 1000  # paired bootstrap over test items (and seeds), the same draws for every row
    confidence: float = 0.95
    alpha: float = 0.05  # a finding calls one row better than another only when p < alpha

    def validate(self) -> None:
        if not 0 < self.convergence_margin < 1:
            raise UsageError(f"--convergence-margin must be in (0, 1), got {self.convergence_margin}")
        if not all(0 < f <= 1 for f in self.loss_fractions) or not 0 < self.tail_fraction <= 1:
            raise UsageError("loss fractions and the tail fraction must be in (0, 1]")
        for name in ("sample_prompts", "latency_new_tokens", "latency_repeats", "bootstrap_resamples"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive")
        if not 0 < self.confidence < 1 or not 0 < self.alpha < 1:
            raise UsageError("the confidence level and alpha must be in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["loss_fractions"] = list(self.loss_fractions)
        return values

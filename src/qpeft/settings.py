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
from qpeft.data import BUILTIN_TASKS, TASK_TYPES, DataSplits, Example, load_splits
from qpeft.utils.errors import UsageError

#: The base model when ``--model`` is not given: SmolLM2-135M-Instruct (a GGUF alias of ``qpeft.models``).
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_DATASET = "e2e"
METRIC_PROFILES = ("auto", "default", "e2e")
#: The BERTScore model when ``--bertscore-model`` is not given (an alias of ``qpeft.evaluation.metrics``).
DEFAULT_BERTSCORE_MODEL = "all-minilm-l6-v2"
PRECISIONS = ("fp32", "bf16", "fp16")
STOP_MODES = ("auto", "on", "off")


@dataclass
class TrainSettings:
    steps: int = field(default=200, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "examples per batch and process (before --grad-accum)"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation: batches per optimizer step"})
    max_length: int = field(default=128, metadata={"help": "tokens per example; longer ones are cut, with a warning"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of the steps the linear schedule warms up over"})
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "epsilon: the training loss is (1 - epsilon) x the target token's negative log-likelihood "
                          "+ epsilon x its mean over the vocabulary (validation and test losses stay unsmoothed)"},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint interval in optimizer steps (resume point)"})
    precision: str = field(default="fp32", metadata={"help": "fp32, or bf16 / fp16 mixed precision"})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in the backward (not for prefix)"}
    )
    template: str = field(
        default="plain", metadata={"help": "prompt format: plain 'Input: ...\\nOutput:' or the model's chat template"}
    )
    eval_steps: int = field(
        default=0, metadata={"help": "validation loss every N optimizer steps and at the end (0: four times a run)"}
    )
    validation_items: int = field(
        default=256, metadata={"help": "validation (input, target) pairs scored each time, a fixed seeded sample"}
    )

    def validate(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "max_length", "save_steps"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("eval_steps", "validation_items"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be 0 or positive, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")

    def validation_steps(self) -> set[int]:
        """The optimizer steps after which the validation loss is measured (the last one always)."""
        every = self.eval_steps or max(1, math.ceil(self.steps / 4))
        return {*range(every, self.steps + 1, every), self.steps}


@dataclass
class EvalSettings:
    max_new_tokens: int = field(default=64, metadata={"help": "tokens generated per test item at most"})
    num_beams: int = field(default=1, metadata={"help": "beam width (1: greedy decoding)"})
    length_penalty: float = field(
        default=1.0, metadata={"help": "beam search's exponent on the output length (below 1 favours shorter outputs)"}
    )
    no_repeat_ngram_size: int = field(
        default=0, metadata={"help": "never generate an n-gram of this size twice in one output (0: allowed)"}
    )
    batch_size: int = field(default=16, metadata={"help": "test prompts generated at once"})
    max_test_items: int = field(
        default=0, metadata={"help": "score a random sample of N test items, drawn with the seed (0: all)"}
    )
    sample_seed: int | None = field(
        default=None, metadata={"help": "seed of that sample (None: the experiment's seed)"}
    )
    bertscore_model: str = field(
        default=DEFAULT_BERTSCORE_MODEL, metadata={"help": "model id or path for BERTScore, or 'none' to skip it"}
    )
    bertscore_num_layers: int | None = field(
        default=None,
        metadata={"help": "the BERTScore model's layer to score with (needed for a local path; None: bert-score's "
                          "table for known model ids, 6 for the default)"},
    )
    test_loss: bool = field(
        default=True, metadata={"help": "the teacher-forced loss over every reference (False: skipped, None)"}
    )
    # "auto" because a model never shown a target that goes on after a line break rambles after one.
    stop_at_newline: str = field(
        default="auto",
        metadata={"help": "cut each output at its first line break after text begins (blank lines first are "
                          "skipped): on, off or auto (when no training target has one)"},
    )
    metrics: str = field(
        default="auto",
        metadata={"help": "metric profile: default (BLEU, ROUGE, BERTScore), e2e (also the E2E challenge's BLEU, "
                          "NIST, METEOR, ROUGE-L and CIDEr, as its official script computes them), or auto (e2e "
                          "on the e2e data set)"},
    )
    fewshot_examples: int = field(
        default=3, metadata={"help": "solved training examples in the prompt of the base-fewshot row (0: no such row)"}
    )

    def validate(self) -> None:
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.no_repeat_ngram_size < 0:
            raise UsageError(f"--no-repeat-ngram-size must be 0 (off) or positive, got {self.no_repeat_ngram_size}")
        if not math.isfinite(self.length_penalty):
            raise UsageError(f"--length-penalty must be a number, got {self.length_penalty}")
        if self.max_test_items < 0:
            raise UsageError("--max-test-items must be 0 (all) or positive")
        if self.stop_at_newline not in STOP_MODES:
            raise UsageError(f"--stop-at-newline must be one of {', '.join(STOP_MODES)}, got {self.stop_at_newline!r}")
        if self.metrics not in METRIC_PROFILES:
            raise UsageError(f"--metrics must be one of {', '.join(METRIC_PROFILES)}, got {self.metrics!r}")
        if self.fewshot_examples < 0:
            raise UsageError(f"--fewshot-examples must be 0 (no few-shot row) or positive, got {self.fewshot_examples}")
        if self.bertscore_num_layers is not None and self.bertscore_num_layers <= 0:
            raise UsageError(f"--bertscore-num-layers must be positive, got {self.bertscore_num_layers}")

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

    model: str = field(
        default=DEFAULT_MODEL, metadata={"help": "Hugging Face model id, local directory, or the alias smollm2-135m"}
    )
    split_qkv: bool = field(
        default=False,
        metadata={"help": "split GPT-2's fused c_attn into c_attn.q, c_attn.k and c_attn.v (the same outputs), so that "
                          "methods can adapt queries and values alone, as the LoRA paper does; target modules 'auto' "
                          "then means c_attn.q, c_attn.v"},
    )
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": f"{', '.join(BUILTIN_TASKS)} (read from --data-dir), or a .jsonl/.csv file, or a folder "
                          "with train.* and test.*"},
    )
    task: str = field(
        default="auto",
        metadata={"help": "generation (BLEU, ROUGE, BERTScore) or classification (accuracy and macro-F1 by ranking "
                          "every label's likelihood, and the generated text's exact match); auto: the built-in "
                          "data set's own task, generation for a file or folder"},
    )
    input_column: str = field(default="input", metadata={"help": "input column of a user data set"})
    target_column: str = field(default="target", metadata={"help": "target column of a user data set"})
    validation_fraction: float = field(
        default=0.05, metadata={"help": "share of the training inputs held out for the validation loss"}
    )
    seed: int = field(
        default=0, metadata={"help": "adapter init, data order, validation split, test sample, few-shot examples"}
    )
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def validate(self) -> None:
        if self.task not in ("auto", *TASK_TYPES):
            raise UsageError(f"--task must be one of auto, {', '.join(TASK_TYPES)}, got {self.task!r}")
        if not 0 < self.validation_fraction < 1:
            raise UsageError(f"--validation-fraction must be strictly between 0 and 1, got {self.validation_fraction}")
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

    def task_type(self) -> str:
        """``generation`` or ``classification``: ``--task``, or the built-in data set's own (generation for a file)."""
        if self.task == "auto":
            return BUILTIN_TASKS.get(self.dataset, "generation")
        return self.task

    def metric_profile(self) -> str:
        """``default`` or ``e2e``: what ``--metrics`` resolves to on this experiment's data set."""
        if self.eval.metrics == "auto":
            return "e2e" if self.dataset == DEFAULT_DATASET else "default"
        return self.eval.metrics

    def load_data(self, data_dir: str | None) -> DataSplits:
        return load_splits(
            self.dataset, data_dir, self.input_column, self.target_column, self.validation_fraction, self.seed
        )


@dataclass
class AnalysisSettings:
    """How ``compare`` analyses finished runs (not part of the experiment: changing it re-analyses)."""

    convergence_margin: float = field(
        default=DEFAULT_MARGIN,
        metadata={"help": "a method has converged when its smoothed loss is within this fraction of its best"},
    )
    loss_fractions: tuple[float, ...] = field(
        default=DEFAULT_FRACTIONS, metadata={"help": "shares of the budget after which the smoothed loss is reported"}
    )
    tail_fraction: float = field(
        default=DEFAULT_TAIL, metadata={"help": "last share of the steps whose raw loss spread is reported"}
    )
    sample_prompts: int = field(
        default=8, metadata={"help": "test prompts given to the capacity hooks and the latency measurement"}
    )
    latency_new_tokens: int = field(default=16, metadata={"help": "tokens generated per prompt when timing latency"})
    latency_repeats: int = field(
        default=7, metadata={"help": "timed pairs per method (the method and the base model back to back, the one "
                                     "that goes first alternating); 6 or more give the latency ratio an interval of "
                                     "at least 95% coverage"}
    )
    robustness: str = field(
        default="default",
        metadata={"help": "re-evaluations of methods with inference options: 'default' (each method's own grid; "
                          "QAA: 100 to 1,000,000 shots, four per-gate error rates, each device profile and its "
                          "circuit's constant output, depolarizing=1), 'none', or OPTION=VALUE,... one "
                          "re-evaluation each (e.g. shots=1000,depolarizing=0.01)"},
    )
    reference: str = field(
        default="lora", metadata={"help": "the row every p-value is against (the base model when it is absent)"}
    )
    bootstrap_resamples: int = field(
        default=1000,
        metadata={"help": "paired bootstrap resamples of the test items (and seeds), the same draws for every row"},
    )
    confidence: float = field(default=0.95, metadata={"help": "confidence level of the bootstrap intervals"})
    alpha: float = field(
        default=0.05, metadata={"help": "a finding calls one row better than another only when p < alpha"}
    )

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


@dataclass
class TuneSettings:
    """How ``qpeft tune`` and ``compare --tune`` search every method's learning rate (the same grid for each)."""

    lr_grid: str = field(
        default="5",
        metadata={"help": "learning rates tried per method: N points a factor of √10 apart centred on its default "
                          "learning rate, or the factors themselves (e.g. 0.1,1,10)"},
    )
    lr_extend: int = field(
        default=2,
        metadata={"help": "rates tried past an end of the grid, one at a time at the grid's spacing there, while a "
                          "method's lowest validation loss is at the highest (or lowest) rate tried: at most N past "
                          "each end (0: the grid alone)"},
    )
    storage: str | None = field(
        default=None,
        metadata={"help": "Optuna storage the workers share: any URL Optuna accepts (default: the journal file "
                          "OUTPUT/tuning/optuna.log)"},
    )

    def factors(self) -> list[float]:
        """The grid as factors of each method's default learning rate, smallest first."""
        text = self.lr_grid.strip()
        if "," not in text and text.isdigit():
            points = int(text)
            if points < 1:
                raise UsageError(f"--lr-grid: give at least one point, got {text}")
            return [10 ** (0.5 * (i - (points - 1) / 2)) for i in range(points)]
        try:
            factors = sorted(float(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise UsageError(f"--lr-grid: give a number of points or comma-separated factors, got {text!r}") from None
        if not factors or not all(math.isfinite(f) and f > 0 for f in factors) or len(set(factors)) != len(factors):
            raise UsageError(f"--lr-grid: factors must be distinct positive numbers, got {text!r}")
        return factors

    def beyond_grid(self) -> tuple[list[float], list[float]]:
        """The factors past the grid's top and past its bottom that tuning may try, nearest first: each end's
        own spacing continued (none for a grid of one point, which has no spacing)."""
        grid = self.factors()
        if len(grid) < 2:
            return [], []
        up, down = grid[-1] / grid[-2], grid[1] / grid[0]
        steps = range(1, self.lr_extend + 1)
        return [grid[-1] * up ** k for k in steps], [grid[0] / down ** k for k in steps]

    def validate(self) -> None:
        self.factors()
        if isinstance(self.lr_extend, bool) or not isinstance(self.lr_extend, int) or self.lr_extend < 0:
            raise UsageError(f"--lr-extend: give a whole number of rates, 0 or more, got {self.lr_extend!r}")

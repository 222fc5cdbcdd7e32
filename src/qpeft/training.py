"""Training one method with the transformers Trainer.

The Trainer brings checkpointing, resume, gradient accumulation, mixed precision and
DDP/FSDP under ``accelerate launch`` or ``torchrun``; qpeft adds a per-step CSV log, the
method's own optimizer where it has one (SoRA), and peak-memory / throughput figures.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerBase,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from qpeft.data import DataSplits, Example
from qpeft.data.prompts import encode_examples
from qpeft.errors import UsageError
from qpeft.memory import PeakMemory
from qpeft.methods.base import Method, MethodConfig, trainable_parameter_count

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
LOG_COLUMNS = ["step", "loss", "learning_rate", "grad_norm", "elapsed_s", "tokens_seen"]


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


class TrainingDiverged(UsageError):
    """The loss or gradient norm became non-finite; the log up to that step is kept."""


class StepLogger(TrainerCallback):
    """Appends one CSV row per optimizer step; survives resume by trimming rows past the checkpoint."""

    def __init__(self, path: Path, method: Method, validation: ValidationLoss | None = None) -> None:
        self.path = path
        self.method = method
        self.validation = validation
        self.columns: list[str] | None = None
        self.elapsed_offset = 0.0
        self.non_finite_step: int | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        kept = [row for row in read_train_log(self.path) if int(row["step"]) <= state.global_step]
        self.elapsed_offset = float(kept[-1]["elapsed_s"]) if kept else 0.0
        self.columns = list(kept[0]) if kept else None
        if state.is_world_process_zero:
            self._rewrite(kept)
        self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):  # noqa: ANN001
        if not logs or "loss" not in logs:
            return
        row: dict[str, Any] = {
            "step": state.global_step,
            "loss": logs["loss"],
            "learning_rate": logs.get("learning_rate", float("nan")),
            "grad_norm": logs.get("grad_norm", float("nan")),
            "elapsed_s": round(self.elapsed_offset + time.perf_counter() - self.started, 4),
            "tokens_seen": state.num_input_tokens_seen,
        }
        row.update(self.method.step_log(model))
        if self.validation is not None:
            row["validation_loss"] = self.validation.at_step(state.global_step, model)
        if not (math.isfinite(row["loss"]) and math.isfinite(float(row["grad_norm"]))):
            self.non_finite_step = state.global_step
            control.should_training_stop = True
        if state.is_world_process_zero:
            self._append(row)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            if rows:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        tmp.replace(self.path)

    def _append(self, row: dict[str, Any]) -> None:
        new_file = self.columns is None
        self.columns = self.columns or list(row)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)


class ValidationLoss:
    """The mean target-token loss on a fixed validation sample, at the steps of ``validation_steps``."""

    def __init__(self, encoded: list[dict[str, list[int]]], tokenizer: PreTrainedTokenizerBase,
                 steps: set[int], batch_size: int) -> None:
        self.encoded, self.tokenizer, self.steps, self.batch_size = encoded, tokenizer, steps, batch_size
        self.last: float | None = None

    def at_step(self, step: int, model: torch.nn.Module) -> float | None:
        """The loss at a validation step (None at any other); uses no random numbers, so training is unchanged."""
        if step not in self.steps:
            return None
        from qpeft.evaluation import mean_target_loss

        self.last = mean_target_loss(model, self.tokenizer, self.encoded, self.batch_size)
        return self.last


def validation_sample(examples: list[Example], count: int, seed: int) -> list[Example]:
    """A fixed seeded sample of ``count`` validation pairs (all of them when there are fewer)."""
    if len(examples) <= count:
        return list(examples)
    return random.Random(seed).sample(examples, count)


def read_train_log(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


class StepProgress(ProgressCallback):
    """The Trainer's progress bar, showing the loss in the bar instead of printing a dict per step."""

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)


class MethodTrainer(Trainer):
    """The Trainer, with the method's own optimizer when it defines one."""

    def __init__(self, *args: Any, method: Method, method_config: MethodConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method = method
        self.method_config = method_config

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # A checkpoint needs what training changes. PEFT models already save only their adapter;
        # for qpeft's own adapters (SoRA, QAA) the Trainer would save the whole frozen model too
        # (about 520 MB for SmolLM2-135M), so save the trainable tensors alone.
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if state_dict is None and not isinstance(model, PeftModel):
            params = dict(model.named_parameters())
            if not all(p.requires_grad for p in params.values()):
                state_dict = {name: p.detach() for name, p in params.items() if p.requires_grad}
        super()._save(output_dir, state_dict)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # Such a checkpoint lacks the frozen weights (tied ones included) on purpose: only a missing
        # trainable tensor is news.
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        missing = [key for key in load_result.missing_keys if key in trainable]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:  # noqa: ARG002
        if self.optimizer is None:
            self.optimizer = self.method.create_optimizer(
                self.model, self.method_config, self.args.weight_decay, self.args.max_steps
            )
        if self.optimizer is None:
            return super().create_optimizer()
        return self.optimizer


def training_arguments(
    checkpoint_dir: Path, settings: TrainSettings, config: MethodConfig, seed: int
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=config.learning_rate,
        warmup_steps=int(settings.warmup_ratio * settings.steps),
        weight_decay=settings.weight_decay,
        logging_steps=1,
        logging_nan_inf_filter=False,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=1,
        seed=seed,
        data_seed=seed,
        report_to=[],
        include_num_input_tokens_seen="non_padding",
        bf16=settings.precision == "bf16",
        fp16=settings.precision == "fp16",
        activation_checkpointing=settings.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        disable_tqdm=False,
    )


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint that was written to the end, or None.

    The Trainer writes ``trainer_state.json`` last and deletes older checkpoints only after
    that, so a run killed while saving still has its previous checkpoint to resume from.
    """
    complete = []
    for folder in checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        try:
            complete.append((checkpoint_step(folder), folder))
        except (OSError, ValueError, KeyError):
            continue
    return str(max(complete)[1]) if complete else None


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimizer step a checkpoint was saved at (from its trainer state, written last)."""
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]


def check_compatible(method: Method, settings: TrainSettings) -> None:
    if settings.gradient_checkpointing and not method.supports_gradient_checkpointing:
        raise UsageError(f"method {method.name!r} cannot train with --gradient-checkpointing")


def train(
    run_dir: Path,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    method: Method,
    config: MethodConfig,
    splits: DataSplits,
    settings: TrainSettings,
    seed: int,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train ``method`` on ``model`` (the base model, modified in place) and save its adapter.

    Resumes from the newest checkpoint under ``run_dir/checkpoints`` when there is one.
    Returns the trained model and the training figures for ``metrics.json``.
    """
    check_compatible(method, settings)
    set_seed(seed)
    base_params = sum(p.numel() for p in model.parameters())
    model = method.prepare(model, config)
    method.initialise(model, config, tokenizer, splits.train)
    trainable = trainable_parameter_count(model)
    checkpoint_dir = run_dir / "checkpoints"
    logger = StepLogger(run_dir / "train_log.csv", method, validation_loss(splits, tokenizer, settings, seed))
    trainer = MethodTrainer(
        model=model,
        args=training_arguments(checkpoint_dir, settings, config, seed),
        train_dataset=encode_examples(splits.train, tokenizer, settings.template, settings.max_length),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[logger],
        method=method,
        method_config=config,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StepProgress())
    resume = last_complete_checkpoint(checkpoint_dir)
    with PeakMemory() as memory:
        if resume is not None and checkpoint_step(resume) >= settings.steps:
            # Killed after the last step but before the run was recorded. Resumed there, the
            # Trainer (transformers 5) would take one step past max_steps, so only restore the weights.
            trainer._load_from_checkpoint(resume)
        else:
            trainer.train(resume_from_checkpoint=resume)
    if logger.non_finite_step is not None:
        raise TrainingDiverged(
            f"method {method.name!r}: non-finite loss or gradient at step {logger.non_finite_step}; "
            f"training stopped, log kept in {run_dir / 'train_log.csv'}"
        )
    model = trainer.model
    if not trainer.is_world_process_zero():
        return model, {}
    rows = read_train_log(run_dir / "train_log.csv")
    adapter_dir = run_dir / "adapter"
    method.save(model, config, adapter_dir)
    figures = {
        "trainable_params": trainable,
        "base_params": base_params,
        "trainable_pct": 100.0 * trainable / base_params,
        "peak_memory_mb": memory.peak_mb,
        "train_seconds": float(rows[-1]["elapsed_s"]),
        "train_tokens": int(rows[-1]["tokens_seen"]),
        "train_tokens_per_s": int(rows[-1]["tokens_seen"]) / max(float(rows[-1]["elapsed_s"]), 1e-9),
        "final_train_loss": final_loss(rows),
        "validation_loss": final_validation_loss(rows),
        "adapter_bytes": directory_bytes(adapter_dir),
        "resumed_from": resume,
        "world_size": trainer.args.world_size,
    }
    figures.update(method.finalize(model, config, run_dir))
    return model, figures


def validation_loss(
    splits: DataSplits, tokenizer: PreTrainedTokenizerBase, settings: TrainSettings, seed: int
) -> ValidationLoss | None:
    """The validation measurement of a run, or None when there is no validation split or it is switched off."""
    sample = validation_sample(splits.validation, settings.validation_items, seed)
    if not sample:
        log.warning("no validation examples: the run records no validation loss")
        return None
    encoded = encode_examples(sample, tokenizer, settings.template, settings.max_length)
    return ValidationLoss(encoded, tokenizer, settings.validation_steps(), 2 * settings.batch_size)


def final_validation_loss(rows: list[dict[str, str]]) -> float | None:
    """The validation loss measured at the last step that has one."""
    values = [row.get("validation_loss") for row in rows]
    values = [float(v) for v in values if v not in (None, "")]
    return values[-1] if values else None


def final_loss(rows: list[dict[str, str]], share: float = 0.05) -> float:
    """Mean training loss over the last 5% of steps (at least one): one step alone is too noisy."""
    tail = rows[-max(1, math.ceil(share * len(rows))):]
    return sum(float(row["loss"]) for row in tail) / len(tail)


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())

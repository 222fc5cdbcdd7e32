"""Training one method with the transformers Trainer: ``train()``.

The Trainer brings checkpointing, resume, gradient accumulation, mixed precision and
DDP/FSDP under ``accelerate launch`` or ``torchrun``; qpeft adds a per-step CSV log, the
method's own optimizer where it has one (SoRA), and peak-memory / throughput figures.
Every override of a private Trainer member is in ``MethodTrainer``, in this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch.utils.data import Dataset
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerBase,
    ProgressCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

from qpeft.data import DataSplits, Example
from qpeft.data.prompts import IGNORE_INDEX, encode_example, warn_truncated
from qpeft.methods.base import Method, MethodConfig, trainable_parameter_count
from qpeft.settings import TrainSettings
from qpeft.training.checkpoints import checkpoint_step, last_complete_checkpoint
from qpeft.training.train_log import (
    StepLogger,
    StepProgress,
    final_loss,
    final_validation_loss,
    read_train_log,
    tokens_per_step,
)
from qpeft.training.validation import validation_loss
from qpeft.utils.errors import UsageError
from qpeft.utils.memory import PeakMemory

log = logging.getLogger(__name__)


class TrainingDiverged(UsageError):
    """The loss or gradient norm became non-finite; the log up to that step is kept."""


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


class EncodedExamples(Dataset):
    """The training split, tokenised as the Trainer draws each example.

    A short run on a large split (the demo draws 320 of E2E's 42,061 training rows) then does
    not tokenise what it never sees; the draws are the same as with the whole split encoded.
    """

    def __init__(self, examples: list[Example], tokenizer: PreTrainedTokenizerBase, template: str,
                 max_length: int) -> None:
        self.examples, self.tokenizer, self.template, self.max_length = examples, tokenizer, template, max_length
        self.drawn: set[int] = set()
        self.truncated = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        encoded, cut = encode_example(self.examples[index], self.tokenizer, self.template, self.max_length)
        if index not in self.drawn:
            self.drawn.add(index)
            self.truncated += cut
        return encoded


def label_smoothed_loss(epsilon: float) -> Callable[..., torch.Tensor]:
    """The Trainer's ``compute_loss_func`` for label smoothing ``epsilon``, with the causal shift made here.

    Not the Trainer's own ``label_smoothing_factor``: it shifts the labels only for models whose class
    it recognises as a causal LM, and a PEFT prompt-learning model (Prefix tuning) is named by its inner
    ``LlamaModel``, which would score each token against itself. torch's ``cross_entropy`` defines the
    smoothing: (1 - epsilon) x NLL + epsilon x the mean over the vocabulary of -log p.
    """

    def loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"][:, :-1, :].float()
        targets = labels[:, 1:].to(logits.device)
        total = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                  ignore_index=IGNORE_INDEX, label_smoothing=epsilon,
                                                  reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else targets.ne(IGNORE_INDEX).sum()
        return total / (count.to(total.device) if torch.is_tensor(count) else count)

    return loss


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
    train_data = EncodedExamples(splits.train, tokenizer, settings.template, settings.max_length)
    trainer = MethodTrainer(
        model=model,
        args=training_arguments(checkpoint_dir, settings, config, seed),
        train_dataset=train_data,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX),
        callbacks=[logger],
        compute_loss_func=label_smoothed_loss(settings.label_smoothing) if settings.label_smoothing else None,
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
    warn_truncated(train_data.truncated, len(train_data.drawn), settings.max_length)
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
    figures.update(method.finalize(model, config, run_dir, tokens_per_step(rows)))
    return model, figures


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())

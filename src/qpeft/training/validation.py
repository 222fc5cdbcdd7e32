"""The validation loss of a run: a fixed seeded sample of the validation split, scored at set steps."""

from __future__ import annotations

import logging
import random

import torch
from transformers import PreTrainedTokenizerBase

from qpeft.data import DataSplits, Example
from qpeft.data.prompts import encode_examples
from qpeft.evaluation.generate import mean_target_loss
from qpeft.settings import TrainSettings

log = logging.getLogger(__name__)


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
        self.last = mean_target_loss(model, self.tokenizer, self.encoded, self.batch_size)
        return self.last


def validation_sample(examples: list[Example], count: int, seed: int) -> list[Example]:
    """A fixed seeded sample of ``count`` validation pairs (all of them when there are fewer)."""
    if len(examples) <= count:
        return list(examples)
    return random.Random(seed).sample(examples, count)


def validation_loss(
    splits: DataSplits, tokenizer: PreTrainedTokenizerBase, settings: TrainSettings, seed: int
) -> ValidationLoss | None:
    """The validation measurement of a run, or None when there is no validation split or it is switched off."""
    if not settings.validation_items:
        log.info("--validation-items 0: the run records no validation loss")
        return None
    sample = validation_sample(splits.validation, settings.validation_items, seed)
    if not sample:
        log.warning("no validation examples: the run records no validation loss")
        return None
    encoded = encode_examples(sample, tokenizer, settings.template, settings.max_length)
    return ValidationLoss(encoded, tokenizer, settings.validation_steps(), 2 * settings.batch_size)

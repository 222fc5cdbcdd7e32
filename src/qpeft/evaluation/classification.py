"""Classification with a causal language model: rank classification, accuracy, macro-F1 and exact match.

Each label is scored by the log-likelihood the model gives its whole text after the prompt (every
token of it and the end of text, as training teaches it), and the label with the highest wins: rank
classification, as the GPT-3 and T0 evaluations do, so that no method is penalised for how it
formats an answer. The generated text's exact match with the label is reported beside it: what a
user of the raw output gets. The label set is the set of training targets.

Written here rather than taken from scikit-learn: macro-F1 is a few lines, and the bootstrap
(``analysis.significance``) recomputes it on every resample from per-item labels anyway.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from qpeft.data import Example, TestItem
from qpeft.data.prompts import encode_examples, target_text
from qpeft.evaluation.generate import generate, generation_figures, optional_test_loss, target_losses, write_predictions
from qpeft.settings import EvalSettings
from qpeft.utils.errors import UsageError

#: More distinct training targets than this is not a label set: ranking them all per item would take long.
MAX_LABELS = 50
# Long enough for any prompt and label: a label cut at --max-length would be scored on fewer tokens than the others.
UNLIMITED_LENGTH = 1 << 30


def label_set(train: Sequence[Example]) -> list[str]:
    """The distinct training targets, sorted; fewer than two or more than ``MAX_LABELS`` is a UsageError."""
    labels = sorted({example.target for example in train})
    if len(labels) < 2:
        raise UsageError(f"--task classification needs at least 2 distinct training targets (labels), "
                         f"found {len(labels)}")
    if len(labels) > MAX_LABELS:
        raise UsageError(f"--task classification: the training targets hold {len(labels)} distinct values, more "
                         f"than {MAX_LABELS} labels; is this a generation task (--task generation)?")
    return labels


@torch.no_grad()
def label_log_likelihoods(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[str],
    labels: Sequence[str],
    template: str,
    batch_size: int,
    shots: Sequence[Example] = (),
) -> list[list[float]]:
    """log p(label | prompt) for every input (rows) and label (columns): the label's tokens and the end of text."""
    pairs = [Example(text, label) for text in inputs for label in labels]
    losses = target_losses(model, tokenizer, encode_examples(pairs, tokenizer, template, UNLIMITED_LENGTH, shots),
                           batch_size)
    width = len(labels)
    return [[-losses[row * width + column][0] for column in range(width)] for row in range(len(inputs))]


def rank_classify(log_likelihoods: Sequence[Sequence[float]], labels: Sequence[str]) -> list[str]:
    """The most likely label of each row (the first of equally likely ones)."""
    return [labels[max(range(len(labels)), key=row.__getitem__)] for row in log_likelihoods]


def macro_f1(predictions: Sequence[str], gold: Sequence[str]) -> float:
    """Mean F1 (0-100) over the labels that occur as gold or predicted (scikit-learn's ``average="macro"``)."""
    labels = sorted(set(gold) | set(predictions))
    scores = []
    for label in labels:
        hits = sum(p == label and g == label for p, g in zip(predictions, gold, strict=True))
        predicted, actual = predictions.count(label), list(gold).count(label)
        scores.append(200.0 * hits / (predicted + actual))
    return sum(scores) / len(scores)


def is_exact_match(generated: str, label: str) -> bool:
    """The generated text is the label, up to surrounding white space and case."""
    return generated.strip().casefold() == label.strip().casefold()


def majority_accuracy(gold: Sequence[str]) -> float:
    """Accuracy (0-100) of the best constant answer on these items, the most common gold label among them: the
    floor a classifier must beat. (The most common *training* label can be the rarer one in a test sample.)"""
    return 100.0 * Counter(gold).most_common(1)[0][1] / len(gold)


def label_token_budget(tokenizer: PreTrainedTokenizerBase, labels: Sequence[str], template: str) -> int:
    """New tokens enough to generate the longest label and the end of text (longer output cannot match)."""
    return 2 + max(len(tokenizer(target_text(label, template), add_special_tokens=False)["input_ids"])
                   for label in labels)


def evaluate_classification(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: list[TestItem],
    train: Sequence[Example],
    template: str,
    max_length: int,
    settings: EvalSettings,
    predictions_path: Path | None = None,
    stop_at_newline: bool = True,
    shots: Sequence[Example] = (),
    item_indices: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Rank-classify and generate once per test item; accuracy, macro-F1, exact match and the test loss.

    An item's gold label is its first reference (a test input given two labels keeps the first).
    ``predictions.jsonl`` holds, per item, the ranked label as ``prediction``, the generated text,
    every label's log-likelihood and the per-item scores the bootstrap resamples.
    """
    labels = label_set(train)
    inputs = [item.input for item in items]
    gold = [item.references[0] for item in items]
    likelihoods = label_log_likelihoods(model, tokenizer, inputs, labels, template, settings.batch_size, shots)
    predicted = rank_classify(likelihoods, labels)
    budget = min(settings.max_new_tokens, label_token_budget(tokenizer, labels, template))
    generated, timing = generate(model, tokenizer, inputs, template, replace(settings, max_new_tokens=budget),
                                 stop_at_newline=stop_at_newline, shots=shots)
    item_scores = {
        "accuracy": [100.0 * (p == g) for p, g in zip(predicted, gold, strict=True)],
        "exact_match": [100.0 * is_exact_match(text, g) for text, g in zip(generated, gold, strict=True)],
    }
    if predictions_path is not None:
        indices = list(item_indices) if item_indices is not None else list(range(len(items)))
        write_predictions(predictions_path, [
            {"index": indices[i], "input": item.input, "prediction": predicted[i], "generated": generated[i],
             "references": [gold[i]], "label_log_likelihoods": dict(zip(labels, likelihoods[i], strict=True)),
             "scores": {name: values[i] for name, values in item_scores.items()}}
            for i, item in enumerate(items)
        ])
    scores: dict[str, Any] = {name: sum(values) / len(values) for name, values in item_scores.items()}
    scores["macro_f1"] = macro_f1(predicted, gold)
    scores["majority_accuracy"] = majority_accuracy(gold)
    scores["labels"] = labels
    scores["metric_profile"] = "classification"
    scores["test_loss"] = optional_test_loss(model, tokenizer, items, template, max_length, settings, shots)
    return {**scores, **generation_figures(timing, len(items), stop_at_newline)}

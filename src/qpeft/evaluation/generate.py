"""Generation and scoring on the test set: ``generate``, ``test_loss`` and ``evaluate``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from qpeft.data import Example, TestItem, reference_pairs
from qpeft.data.prompts import IGNORE_INDEX, encode_examples, encode_prompt
from qpeft.evaluation.e2e_metrics import e2e_scores
from qpeft.evaluation.metrics import corpus_scores, per_item_scores
from qpeft.settings import EvalSettings
from qpeft.utils.atomic import write_text_atomic


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    inputs: list[str],
    template: str,
    settings: EvalSettings,
    progress: bool = True,
    stop_at_newline: bool = False,
    shots: Sequence[Example] = (),
) -> tuple[list[str], dict[str, float]]:
    """Batched generation (greedy, or beam search with ``num_beams`` > 1).

    With ``stop_at_newline`` a row stops at the first line break after its text has begun (line
    breaks before any text are skipped) and the text is cut there. ``shots`` are solved examples
    put before every prompt (the few-shot baseline).
    Returns the completions and timing: seconds, generated and prompt tokens (without padding),
    and how many outputs used every one of ``max_new_tokens`` without stopping (they were cut, not finished).
    """
    model.eval()
    device = model_device(model)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    outputs, new_tokens, prompt_tokens, unfinished, started = [], 0, 0, 0, time.perf_counter()
    batches = range(0, len(inputs), settings.batch_size)
    for start in tqdm(batches, desc="generating", unit="batch", disable=not progress):
        batch = inputs[start : start + settings.batch_size]
        prompts = [encode_prompt(text, tokenizer, template, shots) for text in batch]
        width = max(len(p) for p in prompts)
        prompt_tokens += sum(len(p) for p in prompts)
        # Left padding keeps every prompt's last token at the end, where generation continues.
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        stop = {"stopping_criteria": StoppingCriteriaList([LineEnded(tokenizer, width)])} if stop_at_newline else {}
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            length_penalty=settings.length_penalty,
            no_repeat_ngram_size=settings.no_repeat_ngram_size,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            **stop,
        )[:, width:]
        for row in generated.tolist():
            text, length, finished = decode_completion(row, tokenizer, stop_at_newline)
            new_tokens += length
            unfinished += not finished and length >= settings.max_new_tokens
            outputs.append(text)
    seconds = time.perf_counter() - started
    return outputs, {"generation_seconds": seconds, "generated_tokens": new_tokens, "prompt_tokens": prompt_tokens,
                     "unfinished": unfinished}


def decode_completion(
    row: list[int], tokenizer: PreTrainedTokenizerBase, stop_at_newline: bool
) -> tuple[str, int, bool]:
    """(text, tokens generated, whether it ended by itself) of one generated row.

    The row ends at its first EOS; with ``stop_at_newline`` also at its first line break
    (the text is cut there). Rows that stopped early are padded up to the batch's longest.
    """
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    finished = eos_id in row
    length = row.index(eos_id) + 1 if finished else len(row)
    while length and row[length - 1] == pad_id and pad_id != eos_id:
        length -= 1
    text = tokenizer.decode(row[:length], skip_special_tokens=True)
    if stop_at_newline and "\n" in text.lstrip():
        text, finished = text.lstrip().split("\n", 1)[0], True
    return text.strip(), length, finished


class LineEnded(StoppingCriteria):
    """Stops a row at the first line break after its text has begun.

    transformers' ``stop_strings=["\\n"]`` would also stop at a line break before any text, and an
    instruction-tuned model often answers "Output:" on the next line: its answer would be lost.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_width: int) -> None:
        self.tokenizer, self.prompt_width = tokenizer, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        return torch.tensor(["\n" in text.lstrip() for text in texts], device=input_ids.device)


@torch.no_grad()
def test_loss(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[Example],
    template: str,
    max_length: int,
    batch_size: int,
    shots: Sequence[Example] = (),
) -> float:
    """Mean cross-entropy per target token over every (input, reference) pair."""
    return mean_target_loss(model, tokenizer, encode_examples(pairs, tokenizer, template, max_length, shots),
                            batch_size)


@torch.no_grad()
def mean_target_loss(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, encoded: list[dict[str, list[int]]], batch_size: int
) -> float:
    """Mean cross-entropy per target token of already encoded examples (the test and validation loss)."""
    losses = target_losses(model, tokenizer, encoded, batch_size)
    count = sum(tokens for _, tokens in losses)
    return sum(total for total, _ in losses) / count if count else math.nan


@torch.no_grad()
def target_losses(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, encoded: list[dict[str, list[int]]], batch_size: int
) -> list[tuple[float, int]]:
    """(summed cross-entropy of its target tokens, their number) per encoded example, in the given order."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    # Batches of similar length waste little on padding; the results go back to the given order.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    losses: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in chosen]).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()
        targets = labels[:, 1:]
        per_token = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )
        for row, index in enumerate(chosen):
            losses[index] = (per_token[row].sum().item(), int((targets[row] != IGNORE_INDEX).sum()))
    model.train(was_training)
    return losses


def evaluate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: list[TestItem],
    template: str,
    max_length: int,
    settings: EvalSettings,
    predictions_path: Path | None = None,
    stop_at_newline: bool = False,
    shots: Sequence[Example] = (),
    item_indices: Sequence[int] | None = None,
    profile: str = "default",
) -> dict[str, Any]:
    """Generate once per test item, score against all its references, add the test loss (unless skipped).

    The ``e2e`` profile adds the E2E challenge's five corpus figures (``e2e_metrics.E2E_KEYS``).

    ``predictions.jsonl`` keeps each item's index in the test split and its own scores, which
    the comparison's paired bootstrap resamples.
    """
    predictions, timing = generate(model, tokenizer, [item.input for item in items], template, settings,
                                   stop_at_newline=stop_at_newline, shots=shots)
    references = [list(item.references) for item in items]
    bertscore_model = None if settings.bertscore_model == "none" else settings.bertscore_model
    item_scores = per_item_scores(predictions, references, bertscore_model, settings.bertscore_num_layers)
    if predictions_path is not None:
        indices = list(item_indices) if item_indices is not None else list(range(len(items)))
        write_predictions(predictions_path, [
            {"index": index, "input": item.input, "prediction": prediction, "references": list(item.references),
             "scores": {name: values[i] for name, values in item_scores.items()}}
            for i, (index, item, prediction) in enumerate(zip(indices, items, predictions, strict=True))
        ])
    scores: dict[str, Any] = corpus_scores(predictions, references, item_scores)
    if profile == "e2e":
        scores.update(e2e_scores(predictions, references))
    scores["metric_profile"] = profile
    scores["test_loss"] = optional_test_loss(model, tokenizer, items, template, max_length, settings, shots)
    return {**scores, **generation_figures(timing, len(items), stop_at_newline)}


def optional_test_loss(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: list[TestItem],
    template: str,
    max_length: int,
    settings: EvalSettings,
    shots: Sequence[Example] = (),
) -> float | None:
    """The test loss over every (input, reference) pair, or None when ``settings.test_loss`` skips it."""
    if not settings.test_loss:
        return None
    return test_loss(model, tokenizer, reference_pairs(items), template, max_length, settings.batch_size, shots)


def generation_figures(timing: dict[str, float], items: int, stop_at_newline: bool) -> dict[str, Any]:
    """What every evaluation records of its generation: items, the stop rule, cut outputs, time per token, and
    the mean prompt and generated tokens per item (what a hardware time estimate multiplies)."""
    return {
        "test_items": items,
        "prompt_tokens_mean": timing["prompt_tokens"] / max(items, 1),
        "generated_tokens_mean": timing["generated_tokens"] / max(items, 1),
        "stop_at_newline": stop_at_newline,
        "max_new_tokens_reached_pct": 100.0 * timing["unfinished"] / max(items, 1),
        "generation_ms_per_token": 1000.0 * timing["generation_seconds"] / max(timing["generated_tokens"], 1),
    }


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """``predictions.jsonl``: one JSON object per test item."""
    write_text_atomic(path, "\n".join(json.dumps(row) for row in rows) + "\n")

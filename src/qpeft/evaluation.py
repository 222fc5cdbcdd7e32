"""Generation and scoring on the test set."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from qpeft.data import Example, TestItem, reference_pairs
from qpeft.data.prompts import encode_examples, encode_prompt
from qpeft.errors import UsageError
from qpeft.io import write_text_atomic
from qpeft.metrics import DEFAULT_BERTSCORE_MODEL, score_all


@dataclass
class EvalSettings:
    max_new_tokens: int = 64
    num_beams: int = 1
    batch_size: int = 16
    max_test_items: int = 0  # 0: the whole test set
    bertscore_model: str = DEFAULT_BERTSCORE_MODEL  # "none" to skip BERTScore
    test_loss: bool = True  # False: skip the teacher-forced loss over every reference (reported as None)

    def validate(self) -> None:
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_test_items < 0:
            raise UsageError("--max-test-items must be 0 (all) or positive")

    def select(self, items: list[TestItem]) -> list[TestItem]:
        return items[: self.max_test_items] if self.max_test_items else items


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
) -> tuple[list[str], dict[str, float]]:
    """Batched generation (greedy, or beam search with ``num_beams`` > 1).

    Returns the completions and timing: seconds and generated tokens, for latency per token.
    """
    model.eval()
    device = model_device(model)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    outputs, new_tokens, started = [], 0, time.perf_counter()
    batches = range(0, len(inputs), settings.batch_size)
    for start in tqdm(batches, desc="generating", unit="batch", disable=not progress):
        prompts = [encode_prompt(text, tokenizer, template) for text in inputs[start : start + settings.batch_size]]
        width = max(len(p) for p in prompts)
        # Left padding keeps every prompt's last token at the end, where generation continues.
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
        )[:, width:]
        for row in generated.tolist():
            # Everything after the first EOS is padding.
            length = row.index(eos_id) + 1 if eos_id in row else len(row)
            new_tokens += length
            outputs.append(tokenizer.decode(row[:length], skip_special_tokens=True).strip())
    seconds = time.perf_counter() - started
    return outputs, {"generation_seconds": seconds, "generated_tokens": new_tokens}


@torch.no_grad()
def test_loss(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[Example],
    template: str,
    max_length: int,
    batch_size: int,
) -> float:
    """Mean cross-entropy per target token over every (input, reference) pair."""
    model.eval()
    device = model_device(model)
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    encoded = encode_examples(pairs, tokenizer, template, max_length)
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in collate(encoded[start : start + batch_size]).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()
        targets = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += loss.item()
        count += int((targets != -100).sum())
    return total / count if count else math.nan


def evaluate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: list[TestItem],
    template: str,
    max_length: int,
    settings: EvalSettings,
    predictions_path: Path | None = None,
) -> dict[str, Any]:
    """Generate once per test item, score against all its references, add the test loss (unless skipped)."""
    predictions, timing = generate(model, tokenizer, [item.input for item in items], template, settings)
    references = [list(item.references) for item in items]
    if predictions_path is not None:
        lines = [
            json.dumps({"input": item.input, "prediction": prediction, "references": list(item.references)})
            for item, prediction in zip(items, predictions, strict=True)
        ]
        write_text_atomic(predictions_path, "\n".join(lines) + "\n")
    bertscore_model = None if settings.bertscore_model == "none" else settings.bertscore_model
    scores = score_all(predictions, references, bertscore_model)
    scores["test_loss"] = (
        test_loss(model, tokenizer, reference_pairs(items), template, max_length, settings.batch_size)
        if settings.test_loss else None
    )
    scores["test_items"] = len(items)
    scores["generation_ms_per_token"] = 1000.0 * timing["generation_seconds"] / max(timing["generated_tokens"], 1)
    return scores

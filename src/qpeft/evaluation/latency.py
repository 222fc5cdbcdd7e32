"""Generation latency of a model: wall time per generated token, timed alternately against the base model."""

from __future__ import annotations

import time
from statistics import median

import torch


@torch.no_grad()
def generation_seconds(model: torch.nn.Module, ids: torch.Tensor, new_tokens: int) -> float:
    """Wall time of greedy generation of exactly ``new_tokens`` after each prompt of ``ids``."""
    model.eval()
    config = model.generation_config
    started = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                   pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def paired_latency(
    model: torch.nn.Module, base_model: torch.nn.Module, ids: torch.Tensor, new_tokens: int, repeats: int
) -> tuple[float, float]:
    """(model, base model) milliseconds per generated token, timed alternately so that drift hits both alike.

    Each is the median over ``repeats`` timings, after one short warm-up run of each.
    """
    generation_seconds(model, ids, 2)
    generation_seconds(base_model, ids, 2)
    ours, base = [], []
    for _ in range(repeats):
        ours.append(generation_seconds(model, ids, new_tokens))
        base.append(generation_seconds(base_model, ids, new_tokens))
    per_token = 1000.0 / (ids.shape[0] * new_tokens)
    return median(ours) * per_token, median(base) * per_token

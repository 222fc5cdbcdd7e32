"""Generation latency of a model: wall time per generated token, timed in turns with the base model (the
ratio of the pairs and its interval: ``qpeft.analysis.timing``)."""

from __future__ import annotations

import time

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


def paired_generation_ms(
    model: torch.nn.Module, base_model: torch.nn.Module, ids: torch.Tensor, new_tokens: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Each repeat's (model, base model) milliseconds per generated token, the two timed one after the other
    (after one short warm-up run of each), so that the i-th entries of the two lists form a pair. The one that
    goes first alternates, so that neither always runs on the machine its partner has just warmed (or heated)."""
    generation_seconds(model, ids, 2)
    generation_seconds(base_model, ids, 2)
    ours, base = [], []
    per_token = 1000.0 / (ids.shape[0] * new_tokens)
    for repeat in range(repeats):
        for timings, timed in ((ours, model), (base, base_model))[:: 1 if repeat % 2 == 0 else -1]:
            timings.append(generation_seconds(timed, ids, new_tokens) * per_token)
    return ours, base

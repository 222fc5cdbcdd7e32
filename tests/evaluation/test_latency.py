"""Paired generation timings (evaluation.latency)."""

import torch

from qpeft.evaluation import latency


def test_paired_generation_takes_turns_first_so_that_neither_side_always_runs_on_the_warmer_machine(monkeypatch):
    calls = []
    monkeypatch.setattr(latency, "generation_seconds", lambda model, ids, new_tokens: calls.append(model) or 0.01)
    ours, base = latency.paired_generation_ms("ours", "base", torch.zeros(2, 3, dtype=torch.long), 4, 4)
    assert calls[:2] == ["ours", "base"]  # the warm-up runs
    assert calls[2:] == ["ours", "base", "base", "ours", "ours", "base", "base", "ours"]
    assert len(ours) == len(base) == 4

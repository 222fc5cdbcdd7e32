"""The one test that loads the real default model (SmolLM2-135M-Instruct from its GGUF package)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from qpeft.models import load_model, load_tokenizer, resolve_model_path
from qpeft.settings import DEFAULT_MODEL


@pytest.mark.slow
def test_smollm2_loads_from_its_cache_and_answers_sensibly() -> None:
    path = Path(resolve_model_path(DEFAULT_MODEL))  # converts the GGUF once
    assert (path / "model.safetensors").exists()
    started = time.perf_counter()
    model, tokenizer = load_model(DEFAULT_MODEL), load_tokenizer(DEFAULT_MODEL)
    load_seconds = time.perf_counter() - started
    assert getattr(model, "hf_quantizer", None) is None
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text
    print(f"cached load: {load_seconds:.2f} s")

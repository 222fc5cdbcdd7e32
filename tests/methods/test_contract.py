"""The generation contract every method in the registry must keep.

Batched, left-padded greedy ``generate`` (as ``qpeft.evaluation.generate.generate`` runs it) must give, row
by row, the tokens that greedy decoding of that row alone by repeated full ``forward`` calls gives:
the forward that training and the test loss use. A method whose generation ignores its adapter
(Prefix tuning under transformers 5.24 with PEFT's own ``generate``) or mis-masks padded rows fails.
The adapter is moved well away from its initial value (LoRA/SoRA/QAA start exactly at the base
model), and the output must differ from the base model's, so an unused adapter cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from qpeft.data.prompts import encode_prompt
from qpeft.methods import REGISTRY, MethodConfig

# Different lengths (9, 14, 18 and 10 tokens with the toy tokenizer), so three rows are left-padded.
INPUTS = ["name[Aromi]", "name[Blue Spice], food[Chinese]", "name[The Eagle], food[Italian], area[riverside]",
          "area[city centre]"]
NEW_TOKENS = 8
# Big enough that every method's adapter changes the tiny models' greedy output (checked below).
PERTURBATION = 4.0
# float64: random tiny models have top-2 logit gaps down to ~1e-4, close enough to float32 noise between a
# padded batch and a lone row to flip an argmax now and then; in float64 only a real difference can.
DTYPE = torch.float64


def load_base(model_dir: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPE).eval()


def adapted_model(name: str, model_dir: Path) -> tuple[torch.nn.Module, MethodConfig]:
    method = REGISTRY[name]
    config = method.config_class()
    model = method.prepare(load_base(model_dir), config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            if param.requires_grad:
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
                param.add_(PERTURBATION * noise.to(param.dtype))
    return model.eval(), config


def prompts(tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    encoded = [encode_prompt(text, tokenizer, "plain") for text in INPUTS]
    assert len({len(p) for p in encoded}) == len(encoded), "the prompts must differ in length"
    return encoded


def until_eos(row: list[int], eos_id: int) -> list[int]:
    """The completion as evaluation reads it: up to and including the first EOS."""
    return row[: row.index(eos_id) + 1] if eos_id in row else row


@torch.no_grad()
def batched_generate(model: torch.nn.Module, rows: list[list[int]], tokenizer: PreTrainedTokenizerBase) -> list:
    """Left-padded greedy generation, built exactly as ``qpeft.evaluation.generate.generate`` builds it."""
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    width = max(len(p) for p in rows)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in rows])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                         num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id)[:, width:]
    return [until_eos(row, eos_id) for row in out.tolist()]


@torch.no_grad()
def forward_greedy(model: torch.nn.Module, prompt: list[int], eos_id: int) -> list[int]:
    """Greedy decoding of one unpadded row by full forward passes (no cache, no mask): the training forward."""
    completion: list[int] = []
    while len(completion) < NEW_TOKENS and eos_id not in completion:
        logits = model(input_ids=torch.tensor([prompt + completion])).logits
        completion.append(int(logits[0, -1].argmax()))
    return completion


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_batched_generate_matches_forward_greedy(name: str, tiny_model_dir: Path, tmp_path: Path,
                                                 tokenizer: PreTrainedTokenizerBase) -> None:
    rows = prompts(tokenizer)
    model, config = adapted_model(name, tiny_model_dir)
    generated = batched_generate(model, rows, tokenizer)
    expected = [forward_greedy(model, row, tokenizer.eos_token_id) for row in rows]
    assert generated == expected, f"{name}: batched generate disagrees with greedy forward decoding"

    base = batched_generate(load_base(tiny_model_dir), rows, tokenizer)
    assert generated != base, f"{name}: generation gives the base model's tokens, so the adapter is not used"

    method = REGISTRY[name]
    method.save(model, config, tmp_path / "adapter")
    loaded = method.load(load_base(tiny_model_dir), tmp_path / "adapter").eval()
    assert batched_generate(loaded, rows, tokenizer) == generated, f"{name}: the saved adapter generates otherwise"

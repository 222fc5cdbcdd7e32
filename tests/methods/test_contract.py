"""The contract every method in the registry keeps, on both tiny architectures (Llama-style and GPT-2-style).

One matrix, after PEFT's ``tests/test_custom_models.py`` (``TEST_CASES`` x every test): each test runs for
every name in ``REGISTRY`` x ``tiny_model_dir``'s two architectures, so a new method is checked by listing it.
Method-specific behaviour (SoRA's gates, QAA's circuit, Prefix tuning's init text) stays in its own file.

- save -> load gives the same logits, and they are not the base model's;
- trainable parameters: every base weight frozen but for ``full``, the adapter all trainable;
- at initialisation (``prepare`` + ``initialise``, as training runs them) the model is exactly the base
  model where the method promises it (full, LoRA, SoRA, QAA); Prefix tuning's real-token prefix only
  starts near it (``STARTS_AT_BASE``);
- impossible options are a one-line ``UsageError``; ``delta_weights`` are out x in;
- the generation contract: batched, left-padded greedy ``generate`` (as ``qpeft.evaluation.generate.generate``
  runs it) gives, row by row, the tokens that greedy decoding of that row alone by repeated full ``forward``
  calls gives: the forward that training and the test loss use. A method whose generation ignores its adapter
  (Prefix tuning under transformers 5.24 with PEFT's own ``generate``) or mis-masks padded rows fails. The
  adapter is moved well away from its initial value, and the output must differ from the base model's, so an
  unused adapter cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from helpers import logits, mean_loss, perturbed, toy_examples
from qpeft.data.prompts import encode_prompt
from qpeft.methods import REGISTRY, MethodConfig
from qpeft.methods.base import trainable_parameter_count
from qpeft.methods.targets import linear_shape
from qpeft.utils.errors import UsageError

METHODS = sorted(REGISTRY)
#: What each method promises about the model right after ``prepare`` + ``initialise``: "exact" is the base
#: model to the bit; "near" (Prefix tuning's real-token prefix: the base model after its init text) keeps
#: the loss within 10% of the base model's. A new method must say which it is.
STARTS_AT_BASE = {"full": "exact", "lora": "exact", "prefix": "near", "sora": "exact", "qaa": "exact"}


def test_every_method_declares_how_it_starts() -> None:
    assert set(STARTS_AT_BASE) == set(REGISTRY)


@pytest.mark.parametrize("name", METHODS)
def test_save_and_load_give_the_same_logits(name: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    method = REGISTRY[name]
    model, config = perturbed(name, tiny_model_dir)
    ids = torch.randint(2, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    before = logits(model, ids)
    method.save(model, config, tmp_path / "adapter")
    loaded = method.load(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, ids), before, rtol=1e-5, atol=1e-5)
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)
    assert not torch.allclose(before, base, atol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_only_the_adapter_trains(name: str, tiny_model_dir: Path) -> None:
    base_count = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    method = REGISTRY[name]
    model = method.prepare(AutoModelForCausalLM.from_pretrained(tiny_model_dir), method.config_class())
    trainable = trainable_parameter_count(model)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    if name == "full":
        assert (trainable, frozen) == (base_count, 0)
    else:  # every base weight frozen; what the method added is all trainable, and small
        assert frozen == base_count
        assert 0 < trainable < base_count / 2


@pytest.mark.parametrize("name", METHODS)
def test_at_initialisation_the_model_is_the_base_model(name: str, tiny_model_dir: Path,
                                                       tokenizer: PreTrainedTokenizerBase) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    method = REGISTRY[name]
    config = method.config_class()
    torch.manual_seed(0)
    model = method.prepare(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    method.initialise(model, config, tokenizer, toy_examples())
    ids = torch.randint(2, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    if STARTS_AT_BASE[name] == "exact":
        torch.testing.assert_close(logits(model, ids), logits(base, ids), rtol=0, atol=0)
    else:
        assert not torch.allclose(logits(model, ids), logits(base, ids))  # the prefix is there
        base_loss = mean_loss(base, tokenizer)
        assert abs(mean_loss(model, tokenizer) - base_loss) <= 0.1 * base_loss


@pytest.mark.parametrize("name", METHODS)
def test_an_impossible_learning_rate_is_a_one_line_usage_error(name: str) -> None:
    REGISTRY[name].config_class().validate()  # the defaults are valid
    for rate in (0.0, -1.0):
        with pytest.raises(UsageError) as error:
            REGISTRY[name].config_class(learning_rate=rate).validate()
        assert "learning_rate" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name", METHODS)
def test_delta_weights_are_out_by_in_of_their_modules(name: str, tiny_model_dir: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model, _ = perturbed(name, tiny_model_dir)
    deltas = REGISTRY[name].delta_weights(model, base)
    modules = dict(base.named_modules())
    for module_name, delta in deltas.items():
        in_features, out_features = linear_shape(modules[module_name])
        assert delta.shape == (out_features, in_features), module_name
        assert torch.isfinite(delta).all() and delta.abs().max() > 0, module_name
    if name in ("full", "lora", "sora"):  # a linear update of the weights: one ΔW per adapted module
        assert deltas


# --- generation equals forward ---------------------------------------------------------------------

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
        scores = model(input_ids=torch.tensor([prompt + completion])).logits
        completion.append(int(scores[0, -1].argmax()))
    return completion


@pytest.mark.parametrize("name", METHODS)
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

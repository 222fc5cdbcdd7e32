from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from qpeft.methods import REGISTRY, get_method
from qpeft.methods.base import trainable_parameter_count
from qpeft.methods.targets import find_target_modules, linear_shape
from qpeft.utils.errors import UsageError


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_registry_has_the_foundation_methods() -> None:
    assert {"full", "lora", "prefix"} <= set(REGISTRY)
    with pytest.raises(UsageError, match="unknown method 'nope'"):
        get_method("nope")


def test_full_fine_tuning_learning_rate_is_much_smaller() -> None:
    full = REGISTRY["full"].config_class().learning_rate
    assert full * 3 <= REGISTRY["lora"].config_class().learning_rate
    assert full * 3 <= REGISTRY["prefix"].config_class().learning_rate


def test_lora_trainable_count_matches_rank_formula(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = REGISTRY["lora"].config_class(r=4)
    targets = find_target_modules(model, config.target_modules)
    expected = sum(4 * sum(linear_shape(module)) for module in targets.values())
    adapted = REGISTRY["lora"].prepare(model, config)
    assert trainable_parameter_count(adapted) == expected


@pytest.mark.parametrize("name", ["full", "lora", "prefix"])
def test_save_and_load_give_the_same_logits(name: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    method = get_method(name)
    config = method.config_class()
    model = method.prepare(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    with torch.no_grad():  # move the adapter away from its initial value
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    ids = torch.randint(2, 100, (2, 9))
    before = logits(model, ids)
    method.save(model, config, tmp_path / "adapter")
    loaded = method.load(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, ids), before, rtol=1e-5, atol=1e-5)
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)
    assert not torch.allclose(before, base, atol=1e-4)


def test_lora_starts_at_the_base_model(tiny_model_dir: Path) -> None:
    ids = torch.randint(2, 100, (2, 7))
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)
    method = get_method("lora")
    adapted = method.prepare(AutoModelForCausalLM.from_pretrained(tiny_model_dir), method.config_class())
    torch.testing.assert_close(logits(adapted, ids), base)


def test_target_modules_that_match_nothing(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(UsageError, match="match no linear layer"):
        find_target_modules(model, "no_such_proj")
    assert find_target_modules(model, "all-linear")


@pytest.mark.parametrize(("field", "value"), [("r", 0), ("learning_rate", -1.0), ("dropout", 1.5)])
def test_bad_lora_options(field: str, value: float) -> None:
    with pytest.raises(UsageError):
        REGISTRY["lora"].config_class(**{field: value}).validate()

"""The registry, LoRA's own options and targets; what every method keeps is in test_contract.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from qpeft.methods import REGISTRY, get_method
from qpeft.methods.base import trainable_parameter_count
from qpeft.methods.targets import find_target_modules, linear_shape
from qpeft.utils.errors import UsageError


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


def test_target_modules_that_match_nothing(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(UsageError, match="match no linear layer"):
        find_target_modules(model, "no_such_proj")
    assert find_target_modules(model, "all-linear")


@pytest.mark.parametrize(("field", "value"), [("r", 0), ("learning_rate", -1.0), ("dropout", 1.5)])
def test_bad_lora_options(field: str, value: float) -> None:
    with pytest.raises(UsageError):
        REGISTRY["lora"].config_class(**{field: value}).validate()

"""Prefix tuning: real-token initialisation, its options, plain-PEFT adapter files, and the version check.

That the real-token prefix starts near the base model's loss is part of the method contract (test_contract.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import peft
import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from helpers import toy_examples
from qpeft.cli import build_parser
from qpeft.methods import REGISTRY
from qpeft.methods.prefix import PrefixConfig, PrefixTuningModel
from qpeft.utils.compat import TESTED_RANGES, check_library_versions
from qpeft.utils.errors import UsageError


def initialised(model_dir: Path, tokenizer: PreTrainedTokenizerBase, **options: object) -> torch.nn.Module:
    method, config = REGISTRY["prefix"], PrefixConfig(**options)
    torch.manual_seed(0)  # PEFT's random prefix, for init="random"
    model = method.prepare(AutoModelForCausalLM.from_pretrained(model_dir), config)
    method.initialise(model, config, tokenizer, toy_examples())
    return model.eval()


@pytest.mark.parametrize("projection", [False, True])
def test_real_token_prefix_is_the_base_model_on_the_init_text(projection: bool, tiny_model_dir: Path,
                                                              tokenizer: PreTrainedTokenizerBase) -> None:
    # Checks PEFT's prefix layout (layer, key|value, KV heads under GQA, head dim) and the positions:
    # with the prefix, the model computes exactly what the base model computes after the real tokens.
    config = PrefixConfig(projection=projection, init_text="name food area")
    model = initialised(tiny_model_dir, tokenizer, projection=projection, init_text=config.init_text)
    text_ids = tokenizer(config.init_text)["input_ids"]
    init_ids = (text_ids * config.num_virtual_tokens)[: config.num_virtual_tokens]  # cycled to the prefix length
    ids = torch.tensor([tokenizer("Input: name[Aromi]\nOutput: Aromi")["input_ids"]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        expected = base(input_ids=torch.cat([torch.tensor([init_ids]), ids], dim=1)).logits[:, len(init_ids):]
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)


def test_init_options_are_checked_and_are_cli_flags() -> None:
    PrefixConfig().validate()
    PrefixConfig(init="random", init_text="").validate()
    with pytest.raises(UsageError, match="prefix init must be one of real-tokens, random"):
        PrefixConfig(init="zeros").validate()
    with pytest.raises(UsageError, match="non-empty init_text"):
        PrefixConfig(init_text="  ").validate()
    args = build_parser().parse_args(["train", "--output", "run", "--method", "prefix", "--prefix-init", "random",
                                      "--prefix-init-text", "hello"])
    assert (args.prefix__init, args.prefix__init_text) == ("random", "hello")


def test_saved_adapter_is_plain_peft(tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase,
                                     tmp_path: Path) -> None:
    method = REGISTRY["prefix"]
    model = initialised(tiny_model_dir, tokenizer)
    assert isinstance(model, PrefixTuningModel)
    method.save(model, method.config_class(), tmp_path)
    assert "qpeft" not in json.dumps(json.loads((tmp_path / "adapter_config.json").read_text())).lower()
    plain = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path).eval()
    assert type(plain) is peft.PeftModelForCausalLM
    ids = torch.tensor([tokenizer("Input: name[Zizzi]\nOutput:")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, model(input_ids=ids).logits)


def test_the_installed_versions_are_the_tested_ones() -> None:
    check_library_versions()
    assert set(TESTED_RANGES) == {"transformers", "peft"}


@pytest.mark.parametrize(("library", "version"), [
    (transformers, "5.25.0"), (transformers, "5.23.1"), (transformers, "4.57.0"), (peft, "0.21.1"), (peft, "0.22.0"),
])
def test_untested_versions_are_refused(library: object, version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library, "__version__", version)
    with pytest.raises(UsageError) as error:
        check_library_versions()
    message = str(error.value)
    assert f"{library.__name__} {version}" in message and "\n" not in message


def test_tested_patch_releases_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transformers, "__version__", "5.24.3")
    monkeypatch.setattr(peft, "__version__", "0.21.9")
    check_library_versions()

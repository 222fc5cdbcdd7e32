"""``--split-qkv``: GPT-2's fused c_attn as three projections, so that adapters can take queries and values alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import cli_args, logits, tiny_gpt2
from qpeft.cli import main
from qpeft.methods import get_method
from qpeft.methods.fused_qkv import SplitQKV, split_fused_qkv


@pytest.fixture()
def gpt2_and_split(tokenizer) -> tuple[torch.nn.Module, torch.nn.Module]:  # noqa: ANN001
    torch.manual_seed(0)
    fused = tiny_gpt2(len(tokenizer))
    split = tiny_gpt2(len(tokenizer))
    split.load_state_dict(fused.state_dict())
    assert split_fused_qkv(split) == 2  # one per layer
    return fused, split


def test_the_split_model_computes_what_the_fused_one_does(gpt2_and_split, tokenizer) -> None:  # noqa: ANN001
    fused, split = gpt2_and_split
    ids = torch.randint(0, len(tokenizer), (2, 9))
    assert torch.allclose(logits(split, ids), logits(fused, ids), atol=1e-6)
    layer = split.transformer.h[0].attn.c_attn
    assert isinstance(layer, SplitQKV) and layer.q.weight.shape == (32, 32)


def test_lora_on_the_split_model_adapts_queries_and_values_only(gpt2_and_split) -> None:  # noqa: ANN001
    _, split = gpt2_and_split
    method = get_method("lora")
    model = method.prepare(split, method.config_class(r=4))
    adapted = sorted(name.removesuffix(".lora_A.default.weight") for name, _ in model.named_parameters()
                     if name.endswith("lora_A.default.weight"))
    assert [name.split(".attn.")[1] for name in adapted] == ["c_attn.q", "c_attn.v"] * 2
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 2 * 2 * 4 * (32 + 32)  # layers x (q, v) x r x (in + out): the paper's count


@pytest.mark.parametrize("method", ["sora", "qaa"])
def test_the_hand_written_adapters_take_the_same_projections(method: str, gpt2_and_split) -> None:  # noqa: ANN001
    _, split = gpt2_and_split
    chosen = get_method(method)
    model = chosen.prepare(split, chosen.config_class())
    wrapped = [name for name, module in model.named_modules() if type(module).__name__ in ("SoRALinear", "QAALinear")]
    assert sorted(name.split(".attn.")[1] for name in wrapped) == ["c_attn.q", "c_attn.q", "c_attn.v", "c_attn.v"]


def test_a_split_comparison_trains_saves_and_reloads_every_adapter(tokenizer, tmp_path: Path,  # noqa: ANN001
                                                                   toy_data_dir: Path) -> None:
    torch.manual_seed(0)
    model_dir = tmp_path / "gpt2"
    tiny_gpt2(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "full,lora,sora,qaa", "--same-process", "--split-qkv", "--output", str(out),
            "--fewshot-examples", "0", *cli_args(model_dir, toy_data_dir, steps=2, save_steps=2, max_new_tokens=4)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"]["split_qkv"] is True
    for name in ("lora", "sora", "qaa"):
        assert results["methods"][name]["status"] == "ok"
    lora = results["methods"]["lora"]
    # re-evaluated from the saved adapter on a freshly split base model: the same test loss
    assert main(["evaluate", str(out / "lora"), "--tag", "again"]) == 0
    again = json.loads((out / "lora" / "metrics_again.json").read_text())
    assert again["test_loss"] == pytest.approx(lora["test_loss"], rel=1e-6)
    assert AutoModelForCausalLM.from_pretrained(model_dir).transformer.h[0].attn.c_attn.nf == 96  # base untouched
    # full fine-tuning's folder is a plain GPT-2 checkpoint, its c_attn fused again
    full, report = AutoModelForCausalLM.from_pretrained(out / "full" / "adapter", output_loading_info=True)
    assert not report["missing_keys"] and not report["unexpected_keys"]
    assert full.transformer.h[0].attn.c_attn.nf == 96


def test_split_qkv_on_a_model_without_a_fused_projection_is_refused_before_training(
        tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    code = main(["train", "--method", "lora", "--split-qkv", "--output", str(tmp_path / "out"),
                 *cli_args(tiny_llama_dir, toy_data_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "--split-qkv: model" in err and "(llama) has no fused query/key/value projection" in err
    assert not (tmp_path / "out").exists()

"""Label smoothing (a training option of every method) and the decoding options, on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import build_tokenizer, cli_args, tiny_llama
from qpeft.cli import main
from qpeft.data.prompts import IGNORE_INDEX
from qpeft.evaluation.generate import generate
from qpeft.methods import REGISTRY
from qpeft.settings import EvalSettings
from qpeft.training.trainer import label_smoothed_loss


def test_label_smoothing_of_a_hand_checked_case() -> None:
    # one sequence of 3 tokens over a vocabulary of 2; the first label is never a target (the causal shift)
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(3.0), 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX]])
    # position 0 predicts token 1: p = (1/4, 3/4); position 1's target is ignored
    nll, mean_over_vocab = -math.log(3 / 4), (-math.log(1 / 4) - math.log(3 / 4)) / 2
    for epsilon in (0.0, 0.1, 0.5):
        loss = label_smoothed_loss(epsilon)({"logits": logits}, labels)
        assert loss.item() == pytest.approx((1 - epsilon) * nll + epsilon * mean_over_vocab)
    # the Trainer's count of target tokens over the whole (accumulated) batch divides the sum
    assert label_smoothed_loss(0.1)({"logits": logits}, labels, 4).item() == pytest.approx(
        ((1 - 0.1) * nll + 0.1 * mean_over_vocab) / 4)


def test_label_smoothing_at_zero_is_the_models_own_loss_for_a_prefix_model(tiny_model_dir: Path) -> None:
    # Prefix tuning's PEFT wrapper is where the Trainer's own label smoother would skip the causal shift
    method, config = REGISTRY["prefix"], REGISTRY["prefix"].config_class(init="random")
    torch.manual_seed(0)
    model = method.prepare(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).eval()
    ids = torch.randint(2, 100, (2, 7))
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX
    with torch.no_grad():
        own = model(input_ids=ids, labels=labels).loss
        ours = label_smoothed_loss(1e-12)(model(input_ids=ids), labels)
    torch.testing.assert_close(ours, own)


def test_a_run_records_its_label_smoothing_and_trains_with_it(tiny_llama_dir: Path, toy_data_dir: Path,
                                                              tmp_path: Path) -> None:
    first_losses = {}
    for epsilon in ("0", "0.5"):
        run = tmp_path / f"ls-{epsilon}"
        assert main(["train", "--method", "lora", "--output", str(run), *cli_args(tiny_llama_dir, toy_data_dir),
                     "--label-smoothing", epsilon]) == 0
        config = json.loads((run / "config.json").read_text())
        assert config["experiment"]["train"]["label_smoothing"] == float(epsilon)
        first_losses[epsilon] = float((run / "train_log.csv").read_text().splitlines()[1].split(",")[1])
    # the same first batch before any update: smoothing towards the uniform mean moves the loss
    assert first_losses["0"] != pytest.approx(first_losses["0.5"], abs=1e-4)


def test_bad_label_smoothing_is_refused(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--method", "lora", "--output", str(tmp_path / "run"),
                 *cli_args(tiny_llama_dir, toy_data_dir), "--label-smoothing", "1"])
    assert code == 2 and "--label-smoothing must be in [0, 1), got 1.0" in capsys.readouterr().err


def test_decoding_options_reach_generate_and_block_repeats() -> None:
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = tiny_llama(len(tokenizer)).eval()
    prompts = ["name[The Eagle] food[French]", "name[Cotto] area[riverside]"]
    seen: dict[str, object] = {}
    original = model.generate

    def recording(*args: object, **kwargs: object) -> torch.Tensor:
        seen.update(kwargs)
        return original(*args, **kwargs)

    model.generate = recording
    plain, _ = generate(model, tokenizer, prompts, "plain", EvalSettings(max_new_tokens=24))
    settings = EvalSettings(max_new_tokens=24, num_beams=3, length_penalty=0.8, no_repeat_ngram_size=1)
    blocked, _ = generate(model, tokenizer, prompts, "plain", settings)
    assert (seen["num_beams"], seen["length_penalty"], seen["no_repeat_ngram_size"]) == (3, 0.8, 1)
    assert blocked != plain
    for text in blocked:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) > 1  # something was generated to block repeats in
    assert any(len(set(tokenizer(t, add_special_tokens=False)["input_ids"]))
               < len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in plain)  # unblocked: repeats

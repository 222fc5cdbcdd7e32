"""Every number in a comparison is true: the test sample, stopping, the few-shot baseline, the validation
loss, failed methods and peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from helpers import cli_args, read_rows, tiny_llama
from qpeft.cli import main
from qpeft.data import DataSplits, Example
from qpeft.data import TestItem as Item
from qpeft.data.prompts import format_prompt
from qpeft.evaluation.generate import decode_completion, generate
from qpeft.experiment.runs import fewshot_shots
from qpeft.settings import EvalSettings, Experiment, TrainSettings


def common(model: Path, data: Path) -> list[str]:
    return cli_args(model, data, steps=8, save_steps=4, max_new_tokens=6, eval_batch_size=4)


def compare_args(methods: str, out: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return ["compare", "--methods", methods, "--output", str(out), *common(model, data), "--bootstrap-resamples",
            "100", *extra]


# --- the test sample -------------------------------------------------------------------------------


def test_max_test_items_is_a_seeded_random_sample_not_the_first_items() -> None:
    settings = EvalSettings(max_test_items=20)
    first = settings.sample_indices(630, seed=0)
    assert len(first) == 20 == len(set(first)) and first == sorted(first)
    assert first != list(range(20))  # a sorted test file's first N would be its easiest N
    assert settings.sample_indices(630, seed=0) == first
    assert settings.sample_indices(630, seed=1) != first
    assert EvalSettings().sample_indices(7, seed=0) == list(range(7))  # 0: every item
    assert EvalSettings(max_test_items=9).sample_indices(7, seed=0) == list(range(7))


def test_the_sample_is_recorded_in_metrics_predictions_and_results(tiny_llama_dir: Path, toy_data_dir: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = compare_args("lora", out, tiny_llama_dir, toy_data_dir, "--max-test-items", "3", "--seed", "5",
                        "--same-process", "--latency-repeats", "2")
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["methods"]["lora"]["latency_ratios"]) == 2 and results["analysis"]["latency_repeats"] == 2
    indices = results["test_sample"]["indices"]
    assert len(indices) == 3 and results["test_sample"]["items"] == 3
    assert indices == EvalSettings(max_test_items=3).sample_indices(6, seed=5)
    for row in ("base", "base-fewshot", "lora"):
        assert json.loads((out / row / "metrics.json").read_text())["test_indices"] == indices
        lines = (out / row / "predictions.jsonl").read_text().splitlines()
        assert [json.loads(line)["index"] for line in lines] == indices
    assert "random sample of 3 test items (drawn with seed 5" in (out / "report.md").read_text()


# --- stopping -------------------------------------------------------------------------------------------


def test_a_completion_is_cut_at_its_first_newline_after_text(tokenizer) -> None:  # noqa: ANN001
    row = tokenizer("Aromi serves food.\nInput: more", add_special_tokens=False)["input_ids"]
    assert decode_completion(row, tokenizer, stop_at_newline=True) == ("Aromi serves food.", len(row), True)
    text, _, finished = decode_completion(row, tokenizer, stop_at_newline=False)
    assert text == "Aromi serves food.\nInput: more" and not finished  # no EOS: it ran out of tokens
    leading = tokenizer("\n\nAromi.\nMore", add_special_tokens=False)["input_ids"]
    assert decode_completion(leading, tokenizer, stop_at_newline=True)[0] == "Aromi."  # blank lines first are skipped
    eos = tokenizer.eos_token_id
    assert decode_completion([*row[:3], eos, eos], tokenizer, stop_at_newline=False)[1:] == (4, True)


def test_newline_stopping_is_on_by_default_only_when_no_target_holds_a_newline() -> None:
    one_line = [Example("a", "one line")]
    assert EvalSettings().stops_at_newline(one_line)
    assert not EvalSettings().stops_at_newline([*one_line, Example("b", "two\nlines")])
    assert not EvalSettings(stop_at_newline="off").stops_at_newline(one_line)
    assert EvalSettings(stop_at_newline="on").stops_at_newline([Example("b", "two\nlines")])


def scripted_model(tokenizer, script: dict[int, int], default: int) -> torch.nn.Module:  # noqa: ANN001
    """A tiny Llama whose next token depends only on the last one: ``script[last]``, else ``default``."""
    from transformers import LlamaForCausalLM

    class Scripted(LlamaForCausalLM):
        def forward(self, input_ids=None, **kwargs):  # noqa: ANN001, ANN202
            out = super().forward(input_ids=input_ids, **kwargs)
            last = input_ids[:, -1].tolist()
            chosen = torch.tensor([script.get(token, default) for token in last])
            logits = torch.full_like(out.logits, -1e9)
            logits[torch.arange(len(last)), -1, chosen] = 0.0
            out.logits = logits
            return out

    torch.manual_seed(0)
    return Scripted(tiny_llama(len(tokenizer)).config)


def test_generation_stops_at_the_first_line_break_after_text_and_counts_cut_outputs(tokenizer) -> None:  # noqa: ANN001
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    letter = tokenizer.convert_tokens_to_ids("A")
    model = scripted_model(tokenizer, {newline: letter}, newline)  # writes "\nA\nA\n..."
    settings = EvalSettings(max_new_tokens=5, batch_size=2)
    inputs = ["name[Aromi]", "name[Cotto], food[French]"]
    stopped, timing = generate(model, tokenizer, inputs, "plain", settings, progress=False, stop_at_newline=True)
    assert stopped == ["A", "A"] and timing["unfinished"] == 0
    assert timing["generated_tokens"] == 6  # it stopped after "\nA\n", not just cut afterwards
    text, timing = generate(model, tokenizer, inputs, "plain", settings, progress=False, stop_at_newline=False)
    assert timing["unfinished"] == 2 and timing["generated_tokens"] == 10 and "\n" in text[0]


# --- the few-shot baseline ----------------------------------------------------------------------------


def test_fewshot_examples_come_from_the_training_split_only(tokenizer) -> None:  # noqa: ANN001
    train = [Example(f"name[Train {i}]", f"Train {i} is a place.") for i in range(20)]
    test = [Item(f"name[Test {i}]", (f"Test {i} is a place.",)) for i in range(5)]
    splits = DataSplits("toy", train, [Example("name[Val]", "Val.")], test)
    experiment = Experiment(eval=EvalSettings(fewshot_examples=3), seed=4)
    shots = fewshot_shots(splits, experiment)
    assert len(shots) == 3 and all(shot in train for shot in shots)
    assert shots == fewshot_shots(splits, experiment)  # seeded
    assert shots != fewshot_shots(splits, Experiment(eval=EvalSettings(fewshot_examples=3), seed=5))
    prompt = format_prompt("name[Test 0]", tokenizer, "plain", shots)
    assert prompt.endswith("Input: name[Test 0]\nOutput:")
    for shot in shots:
        assert f"Input: {shot.input}\nOutput: {shot.target}\n\n" in prompt
    assert "Test 1" not in prompt and "Val" not in prompt


# --- validation loss -------------------------------------------------------------------------------------


def test_validation_steps_default_to_four_per_run_and_include_the_last() -> None:
    assert TrainSettings(steps=8).validation_steps() == {2, 4, 6, 8}
    assert TrainSettings(steps=10).validation_steps() == {3, 6, 9, 10}
    assert TrainSettings(steps=10, eval_steps=4).validation_steps() == {4, 8, 10}


def test_validation_loss_is_logged_at_its_steps_and_recorded(tiny_llama_dir: Path, toy_data_dir: Path,
                                                              tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--method", "lora", "--output", str(run), *common(tiny_llama_dir, toy_data_dir),
            "--eval-steps", "3", "--validation-items", "5", "--lora-learning-rate", "1e-2"]
    assert main(args) == 0
    rows = read_rows(run / "train_log.csv")
    measured = {int(r["step"]): float(r["validation_loss"]) for r in rows if r["validation_loss"]}
    assert set(measured) == {3, 6, 8}
    assert measured[8] < measured[3]  # it is measured on the model as it trains
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation_loss"] == pytest.approx(measured[8])


# --- failed methods and peak memory ---------------------------------------------------------------------


@pytest.mark.multiprocess  # each run trains in a fresh process
def test_a_diverging_method_is_a_failed_row_and_the_comparison_completes(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cmp"
    args = compare_args("full,lora", out, tiny_llama_dir, toy_data_dir, "--full-learning-rate", "1e9",
                        "--fewshot-examples", "0")
    assert main(args) == 1
    assert "full failed" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["methods"]["full"]["status"] == "failed"
    assert "non-finite loss" in results["methods"]["full"]["error"]
    assert results["methods"]["lora"]["status"] == "ok" and isinstance(results["methods"]["lora"]["bleu"], float)
    assert "ci" in results["methods"]["lora"] and "p_vs_reference" in results["methods"]["base"]
    report = (out / "report.md").read_text()
    assert "| full | failed: method 'full': non-finite loss" in report
    assert "**full** failed" in report


def test_a_method_that_raises_is_a_failed_row(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from qpeft.methods import get_method

    def broken(*_args: object) -> None:
        raise RuntimeError("adapter exploded\nsecond line")

    monkeypatch.setattr(type(get_method("prefix")), "prepare", broken)
    out = tmp_path / "cmp"
    args = compare_args("prefix,lora", out, tiny_llama_dir, toy_data_dir, "--fewshot-examples", "0",
                        "--same-process")
    assert main(args) == 1
    methods = json.loads((out / "results.json").read_text())["methods"]
    # the failed row keeps the learning rate it was to train at, and nothing else
    assert methods["prefix"] == {"status": "failed", "error": "RuntimeError: adapter exploded", "learning_rate": 1e-2}
    assert methods["lora"]["status"] == "ok"


@pytest.mark.multiprocess  # each run trains in a fresh process
def test_peak_memory_does_not_depend_on_what_ran_before(tiny_llama_dir: Path, toy_data_dir: Path,
                                                         tmp_path: Path) -> None:
    """Each run trains in a fresh process, so memory the comparing process holds (what earlier methods
    left behind, here a 400 MB block) is not in any method's peak, and the order of methods does not matter."""
    hog = torch.ones(100 * 2**20)  # 400 MB held by this process throughout
    peaks = {}
    for order in ("full,lora", "lora,full"):
        out = tmp_path / order.replace(",", "-")
        args = compare_args(order, out, tiny_llama_dir, toy_data_dir, "--fewshot-examples", "0")
        assert main(args) == 0
        methods = json.loads((out / "results.json").read_text())["methods"]
        peaks[order] = {name: methods[name]["peak_memory_mb"] for name in ("full", "lora")}
    held_mb = psutil.Process().memory_info().rss / 2**20  # this process, hog included
    assert hog.sum() > 0
    for name in ("full", "lora"):
        first, second = peaks["full,lora"][name], peaks["lora,full"][name]
        assert abs(first - second) < 0.1 * min(first, second), (name, peaks)
        assert max(first, second) < held_mb - 300, (name, peaks, held_mb)  # the hog is in no method's peak


@pytest.mark.multiprocess  # each run trains in a fresh process
def test_a_run_process_ends_with_the_comparison_that_started_it(tiny_llama_dir: Path, toy_data_dir: Path,
                                                                 tmp_path: Path) -> None:
    """Killing ``qpeft compare`` alone (not its process group) must not leave its run process training on."""
    out = tmp_path / "cmp"
    command = [sys.executable, "-m", "qpeft.cli", *compare_args("lora", out, tiny_llama_dir, toy_data_dir,
                                                                 "--steps", "400", "--fewshot-examples", "0")]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "lora" / "train_log.csv").exists():
        assert parent.poll() is None, "compare ended before training"
        time.sleep(0.2)
    children = psutil.Process(parent.pid).children(recursive=True)
    assert children, "the run did not get a process of its own"
    parent.kill()
    parent.wait()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"run processes outlived their comparison: {alive}"


def test_no_latency_pairs_is_refused_before_anything_is_written(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cmp"
    assert main(compare_args("lora", out, tiny_llama_dir, toy_data_dir, "--latency-repeats", "0")) == 2
    assert capsys.readouterr().err.strip() == "qpeft: error: --latency-repeats must be positive"
    assert not out.exists()


def test_a_misspelt_reference_is_refused_before_anything_is_written(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cmp"
    assert main(compare_args("lora", out, tiny_llama_dir, toy_data_dir, "--reference", "lroa")) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("qpeft: error: --reference: 'lroa'") and "\n" not in error
    assert not out.exists()

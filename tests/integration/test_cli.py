"""End-to-end runs of the ``qpeft`` command on a tiny model and toy data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, cli_args, interrupt_at_step, losses, read_rows, snapshot
from qpeft.cli import main
from qpeft.training.train_log import StepLogger


def common(model: Path, data: Path) -> list[str]:
    return cli_args(model, data, steps=4, save_steps=2, max_new_tokens=8, eval_batch_size=4)


def test_train_writes_a_complete_run_folder(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", "--method", "lora", "--output", str(run), *common(tiny_llama_dir, toy_data_dir)]) == 0
    for name in ("config.json", "train_log.csv", "metrics.json", "predictions.jsonl", "adapter"):
        assert (run / name).exists(), name
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    rows = read_rows(run / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert {"step", "loss", "learning_rate", "grad_norm", "elapsed_s", "tokens_seen"} <= set(rows[0])
    assert int(rows[-1]["tokens_seen"]) > int(rows[0]["tokens_seen"]) > 0
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("bleu", "rouge1", "rouge2", "rougeL", "test_loss", "trainable_params", "trainable_pct",
                "peak_memory_mb", "train_tokens_per_s", "train_seconds", "final_train_loss", "adapter_bytes"):
        assert isinstance(metrics[key], (int, float)), key
    assert 0 < metrics["trainable_pct"] < 100
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and all(len(p["references"]) == 2 for p in predictions)

    capsys.readouterr()
    assert main(["generate", str(run), "--input", "name[Aromi], food[French], area[riverside]"]) == 0
    assert capsys.readouterr().out.strip() != ""
    assert main(["evaluate", str(run), "--max-test-items", "2", "--tag", "two"]) == 0
    assert json.loads((run / "metrics_two.json").read_text())["test_items"] == 2
    assert json.loads((run / "metrics.json").read_text())["test_items"] == 6


def test_full_fine_tuning_saves_safetensors(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "full"
    assert main(["train", "--method", "full", "--output", str(run), *common(tiny_llama_dir, toy_data_dir)]) == 0
    assert (run / "adapter" / "model.safetensors").exists()
    assert json.loads((run / "metrics.json").read_text())["trainable_pct"] == pytest.approx(100.0)


def test_training_lowers_the_loss(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "longer"
    args = ["train", "--method", "full", "--output", str(run), *common(tiny_llama_dir, toy_data_dir),
            "--steps", "30", "--full-learning-rate", "3e-3", "--save-steps", "100"]
    assert main(args) == 0
    loss = losses(run)
    assert sum(loss[-5:]) / 5 < 0.8 * sum(loss[:5]) / 5


def test_compare_writes_results_and_skips_finished_methods(tiny_llama_dir: Path, toy_data_dir: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "lora,prefix", "--output", str(out), *common(tiny_llama_dir, toy_data_dir),
            "--same-process"]  # fresh processes per run are tested in test_compare.py
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"base", "base-fewshot", "lora", "prefix"}
    for key in ("bleu", "rouge1", "rouge2", "rougeL", "test_loss", "trainable_params", "trainable_pct",
                "peak_memory_mb", "train_tokens_per_s", "train_seconds", "final_train_loss", "adapter_bytes"):
        assert key in results["methods"]["lora"], key
    assert {"torch", "transformers", "peft"} <= set(results["versions"])
    report = (out / "report.md").read_text()
    assert "| lora |" in report and "| base |" in report
    assert len((out / "results.csv").read_text().splitlines()) == 5

    lora_before = snapshot(out / "lora")
    assert main(args) == 0
    assert snapshot(out / "lora") == lora_before


def test_output_holding_another_experiment_is_refused(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "lora", "--output", str(out), *common(tiny_llama_dir, toy_data_dir),
                 "--same-process"]) == 0
    before = snapshot(out)
    capsys.readouterr()
    code = main(["compare", "--methods", "lora", "--output", str(out), *common(tiny_llama_dir, toy_data_dir),
                 "--seed", "7"])
    assert code == 2
    assert "different experiment" in capsys.readouterr().err
    assert snapshot(out) == before


def test_interrupted_training_resumes_to_the_same_result(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    args = common(tiny_llama_dir, toy_data_dir)
    straight = tmp_path / "straight"
    assert main(["train", "--method", "lora", "--output", str(straight), *args]) == 0

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(StepLogger, "on_log", interrupt_at_step(3))
        assert main(["train", "--method", "lora", "--output", str(resumed), *args]) == 130
    assert not (resumed / "metrics.json").exists()
    assert main(["train", "--method", "lora", "--output", str(resumed), *args]) == 0

    assert [r["step"] for r in read_rows(resumed / "train_log.csv")] == ["1", "2", "3", "4"]
    assert losses(resumed) == pytest.approx(losses(straight))
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["resumed_from"].endswith("checkpoint-2")
    assert metrics["test_loss"] == pytest.approx(json.loads((straight / "metrics.json").read_text())["test_loss"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--method", "lora", "--steps", "0"], "--steps must be positive"),
        (["--method", "lora", "--batch-size", "-1"], "--batch-size must be positive"),
        (["--method", "lora", "--lora-r", "0"], "rank r must be positive"),
        (["--method", "lora", "--model", "/no/such/model"], "cannot load model"),
        (["--method", "prefix", "--gradient-checkpointing"], "cannot train with --gradient-checkpointing"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(extra: list[str], message: str, tiny_llama_dir: Path,
                                          toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["train", "--output", str(tmp_path / "run"), *common(tiny_llama_dir, toy_data_dir), *extra]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("qpeft: error:")]
    assert len(errors) == 1 and message in errors[0], err


@pytest.mark.multiprocess
def test_bad_data_file_from_a_subprocess_has_no_traceback(tiny_llama_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "qpeft.cli", "compare", "--output", str(tmp_path / "out"), "--methods", "lora",
         "--model", str(tiny_llama_dir), "--dataset", str(bad)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"qpeft: error: {bad}: row 1 has no column 'target' (columns: ['input'])"
    assert not (tmp_path / "out").exists()


def test_config_file_supplies_flags_and_the_command_line_wins(tmp_path: Path) -> None:
    from qpeft.cli import build_parser
    from qpeft.cli.config_file import expand_config_file

    config = tmp_path / "exp.yaml"
    config.write_text("steps: 7\nbatch_size: 3\ngradient_checkpointing: true\nlora:\n  r: 4\n  alpha: 32\n")
    argv = expand_config_file(["compare", "--output", "x", "--config", str(config), "--steps", "9"])
    args = build_parser().parse_args(argv)
    assert (args.steps, args.batch_size, args.gradient_checkpointing) == (9, 3, True)
    assert (args.lora__r, args.lora__alpha) == (4, 32.0)


def test_shipped_paper_config_parses() -> None:
    from qpeft.cli import build_parser
    from qpeft.cli.config_file import expand_config_file

    paper = ROOT / "configs" / "paper.yaml"
    args = build_parser().parse_args(expand_config_file(["compare", "--output", "x", "--config", str(paper)]))
    assert args.model == "gpt2-medium" and args.steps == 26290 and args.num_beams == 10
    # the LoRA paper's E2E recipe, read back as the experiment and LoRA's configuration
    from qpeft.cli.parser import experiment_from_args

    experiment = experiment_from_args(args)
    train, evaluation = experiment.train, experiment.eval
    assert (train.batch_size, train.label_smoothing, round(train.warmup_ratio * train.steps)) == (8, 0.1, 500)
    assert (evaluation.num_beams, evaluation.length_penalty, evaluation.no_repeat_ngram_size) == (10, 0.8, 4)
    assert experiment.metric_profile() == "e2e" and args.seeds == "0,1,2"
    from qpeft.cli.commands import comparison_rows

    assert experiment.split_qkv  # queries and values as modules of their own
    configs = comparison_rows(args)[1]
    lora = configs["lora"]
    assert (lora["r"], lora["alpha"], lora["dropout"], lora["target_modules"]) == (4, 32, 0.1, "c_attn.q,c_attn.v")
    assert configs["sora"]["target_modules"] == configs["qaa"]["target_modules"] == "c_attn.q,c_attn.v"


def test_the_reduced_paper_config_keeps_the_recipe_on_smollm2() -> None:
    from qpeft.cli import build_parser
    from qpeft.cli.commands import comparison_rows
    from qpeft.cli.config_file import expand_config_file
    from qpeft.cli.parser import experiment_from_args

    argv = expand_config_file(["compare", "--output", "x", "--config", str(ROOT / "configs" / "paper-cpu.yaml")])
    args = build_parser().parse_args(argv)
    experiment = experiment_from_args(args)
    train, evaluation = experiment.train, experiment.eval
    assert experiment.model == "smollm2-135m" and not experiment.split_qkv
    assert (train.batch_size, train.label_smoothing, train.warmup_ratio, train.weight_decay) == (8, 0.1, 0.019, 0.01)
    assert (evaluation.num_beams, evaluation.length_penalty, evaluation.no_repeat_ngram_size) == (10, 0.8, 4)
    assert experiment.metric_profile() == "e2e"
    lora = comparison_rows(args)[1]["lora"]
    assert (lora["r"], lora["alpha"], lora["dropout"], lora["target_modules"]) == (4, 32, 0.1, "q_proj,v_proj")


@pytest.mark.multiprocess
def test_python_m_qpeft_is_the_qpeft_command() -> None:
    for module in ("qpeft", "qpeft.cli"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.startswith("usage: qpeft "), (module, done.stderr)

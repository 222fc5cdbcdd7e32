"""``qpeft compare --datasets``: one complete comparison per task, the cross-task summary, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import cli_args, toy_rows, write_jsonl
from qpeft.cli import main

LABELS = ("good", "bad")


@pytest.fixture()
def task_data(tmp_path: Path) -> Path:
    """A data folder holding a tiny generation task (``dart``) and a tiny classification task (``sst2``)."""
    root = tmp_path / "data"
    (root / "dart").mkdir(parents=True)
    write_jsonl(root / "dart" / "train.jsonl", toy_rows(40, seed=1))
    write_jsonl(root / "dart" / "test.jsonl", toy_rows(5, seed=2))
    (root / "sst2").mkdir()
    sentences = [(f"visit {i}: the food at {row['input']} was fine", LABELS[i % 2])
                 for i, row in enumerate(toy_rows(48, 3))]
    write_jsonl(root / "sst2" / "train.jsonl", [{"input": s, "target": t} for s, t in sentences[:40]])
    write_jsonl(root / "sst2" / "test.jsonl", [{"input": s, "target": t} for s, t in sentences[40:]])
    return root


def tasks_command(model: Path, data: Path, output: Path, datasets: str = "dart,sst2",
                  methods: str = "lora", fewshot: int = 0) -> list[str]:
    return ["compare", "--methods", methods, "--same-process", "--output", str(output),
            "--fewshot-examples", str(fewshot),
            "--datasets", datasets, "--data-dir", str(data), "--robustness", "none",
            *cli_args(model, data, steps=2, save_steps=2, max_new_tokens=6, eval_batch_size=None)]


def test_a_two_task_comparison_writes_both_task_folders_and_the_cross_task_summary(
        tiny_llama_dir: Path, task_data: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    assert main(tasks_command(tiny_llama_dir, task_data, output, methods="lora,full", fewshot=2)) == 0
    for task in ("dart", "sst2"):
        assert (output / task / "results.json").exists() and (output / task / "report.html").exists()
    classification = json.loads((output / "sst2" / "results.json").read_text())
    assert classification["task"] == "classification"
    lora = classification["methods"]["lora"]
    assert {"accuracy", "macro_f1", "exact_match"} <= set(lora["ci"])
    assert lora["labels"] == sorted(LABELS) and 0 <= lora["accuracy"] <= 100
    first = json.loads((output / "sst2" / "lora" / "predictions.jsonl").read_text().splitlines()[0])
    assert set(first["label_log_likelihoods"]) == set(LABELS)
    assert first["prediction"] == max(first["label_log_likelihoods"], key=first["label_log_likelihoods"].get)
    summary = json.loads((output / "summary.json").read_text())
    assert {name: task["metric"] for name, task in summary["tasks"].items()} == {"dart": "bleu", "sst2": "accuracy"}
    assert summary["tasks"]["sst2"]["rows"]["lora"]["score"] == pytest.approx(lora["accuracy"])
    full = classification["methods"]["full"]["accuracy"]
    assert summary["tasks"]["sst2"]["rows"]["lora"]["vs_full"] == pytest.approx(lora["accuracy"] / full)
    assert summary["tasks"]["sst2"]["majority_accuracy"] == pytest.approx(50.0)  # 4 of each label in the test
    ranks = [task["rows"]["lora"]["rank"] for task in summary["tasks"].values()]
    assert summary["mean_rank"]["lora"] == pytest.approx(sum(ranks) / 2)
    assert set(summary["mean_rank"]) == {"base", "base-fewshot", "lora", "full"}
    assert sum(task["rows"][name]["rank"] for name in summary["mean_rank"]
               for task in summary["tasks"].values()) == pytest.approx(2 * (1 + 2 + 3 + 4))
    # the few-shot row is rank-classified too, with the solved examples before every prompt
    fewshot = classification["methods"]["base-fewshot"]
    assert len(fewshot["fewshot_inputs"]) == 2 and 0 <= fewshot["accuracy"] <= 100
    # a classification run re-evaluates to the same figures
    assert main(["evaluate", str(output / "sst2" / "lora"), "--tag", "again", "--data-dir", str(task_data)]) == 0
    again = json.loads((output / "sst2" / "lora" / "metrics_again.json").read_text())
    assert (again["accuracy"], again["macro_f1"]) == pytest.approx((lora["accuracy"], lora["macro_f1"]))
    report = (output / "report.html").read_text()
    assert 'id="heatmap"' in report and "sst2 (accuracy)" in report and "dart (BLEU)" in report


def test_an_interrupted_multi_task_comparison_resumes_without_training_a_finished_task_again(
        tiny_llama_dir: Path, task_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qpeft.experiment.runs

    original, trained = qpeft.experiment.runs.train, []

    def counting(run_dir: Path, *args: object, **kwargs: object) -> object:
        trained.append(run_dir.parent.name)
        if trained == ["dart", "sst2"] and interrupt:
            raise KeyboardInterrupt
        return original(run_dir, *args, **kwargs)

    monkeypatch.setattr(qpeft.experiment.runs, "train", counting)
    output = tmp_path / "out"
    interrupt = True
    assert main(tasks_command(tiny_llama_dir, task_data, output)) == 130
    assert (output / "dart" / "results.json").exists() and not (output / "summary.json").exists()
    interrupt, trained[:] = False, []
    assert main(tasks_command(tiny_llama_dir, task_data, output)) == 0
    assert trained == ["sst2"]  # the finished task's run was kept
    assert set(json.loads((output / "summary.json").read_text())["tasks"]) == {"dart", "sst2"}


@pytest.mark.parametrize(("datasets", "message"), [
    ("dart,nosuch", "unknown dataset 'nosuch'"),
    ("dart,dart", "two data sets would share the folder 'dart'"),
    ("dart,rte", "rte files not found under"),
])
def test_a_bad_data_set_anywhere_in_the_list_is_refused_before_the_first_task_trains(
        datasets: str, message: str, tiny_llama_dir: Path, task_data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import qpeft.experiment.runs

    def no_model(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(qpeft.experiment.runs, "load_model", no_model)
    output = tmp_path / "out"
    capsys.readouterr()
    assert main(tasks_command(tiny_llama_dir, task_data, output, datasets)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not output.exists()

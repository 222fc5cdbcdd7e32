"""Bad input ends in one line and exit 2 before the first training step, for ``train`` and ``compare``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import cli_args, toy_rows, write_csv, write_jsonl
from qpeft.cli import main
from qpeft.evaluation.metrics import resolve_bertscore_model


def no_training(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a training step ran before the bad input was refused")


def no_model(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a model was loaded before the bad input was refused")


@pytest.fixture()
def untrained(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any training call or model load fails the test (it would show as a traceback, not as the expected line)."""
    import qpeft.experiment.compare
    import qpeft.experiment.runs

    monkeypatch.setattr(qpeft.experiment.runs, "train", no_training)
    monkeypatch.setattr(qpeft.experiment.runs, "load_model", no_model)
    monkeypatch.setattr(qpeft.experiment.compare, "load_model", no_model)


def distinct_rows(count: int) -> list[dict[str, str]]:
    return [{"input": f"name[Place {i}]", "target": f"Place {i} is a place."} for i in range(count)]


def bad_data(kind: str, folder: Path) -> Path:
    """The data files of the table of bad inputs: each is refused before training."""
    if kind == "two-distinct-inputs":
        return write_jsonl(folder / "two.jsonl", distinct_rows(2) * 3)
    if kind == "every-target-empty":
        return write_jsonl(folder / "empty.jsonl", [{**row, "target": ""} for row in distinct_rows(8)])
    if kind == "duplicate-column":
        path = folder / "dup.csv"
        path.write_text("input,target,target\n" + "".join(f"in {i},a,b\n" for i in range(8)))
        return path
    if kind == "one-label":
        return write_jsonl(folder / "one.jsonl", [{**row, "target": "yes"} for row in distinct_rows(8)])
    if kind == "free-text-labels":
        return write_jsonl(folder / "free.jsonl", distinct_rows(80))
    raise ValueError(kind)


CASES = [
    (["--bertscore-model", "/no/such/model"], None, "cannot load the BERTScore model '/no/such/model'"),
    (["--bertscore-model", "not-a-bert-score-model-id"], None, "give it with --bertscore-num-layers"),
    (["--bertscore-model", "all-minilm-l6-v2", "--bertscore-num-layers", "9"], None, "has 6 layers"),
    (["--bertscore-num-layers", "0"], None, "--bertscore-num-layers must be positive"),
    (["--validation-fraction", "1.5"], None, "--validation-fraction must be strictly between 0 and 1, got 1.5"),
    (["--validation-fraction", "0"], None, "--validation-fraction must be strictly between 0 and 1, got 0"),
    ([], "two-distinct-inputs", "needs at least 3 distinct inputs"),
    ([], "every-target-empty", "row 1: 'target' is empty"),
    ([], "duplicate-column", "names column 'target' more than once"),
    (["--task", "classification"], "one-label", "needs at least 2 distinct training targets (labels), found 1"),
    (["--task", "classification"], "free-text-labels", "is this a generation task (--task generation)?"),
    (["--dataset", "sst2", "--data-dir", "/no/such/folder"], None, "sst2 files not found under /no/such/folder"),
]


@pytest.mark.parametrize("command", ["train", "compare"])
@pytest.mark.parametrize(("extra", "data", "message"), CASES)
def test_bad_input_is_refused_before_training(command: str, extra: list[str], data: str | None, message: str,
                                              tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                              untrained: None, capsys: pytest.CaptureFixture) -> None:
    dataset = bad_data(data, tmp_path) if data else toy_data_dir
    output = tmp_path / "out"
    chosen = ["--method", "lora"] if command == "train" else ["--methods", "lora", "--same-process"]
    capsys.readouterr()
    code = main([command, "--output", str(output), *chosen, *cli_args(tiny_llama_dir, dataset), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not output.exists()  # nothing claimed, nothing written


def test_compare_checks_every_method_before_training_the_first(tiny_llama_dir: Path, toy_data_dir: Path,
                                                              tmp_path: Path, untrained: None,
                                                              capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "out"
    code = main(["compare", "--output", str(output), "--methods", "lora,full,qaa", "--same-process",
                 *cli_args(tiny_llama_dir, toy_data_dir), "--qaa-layers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "QAA needs at least one circuit layer" in err and len(err.strip().splitlines()) == 1
    assert not output.exists()


@pytest.mark.parametrize("kind", ["byte-order-mark", "four-distinct-inputs"])
def test_files_that_were_refused_or_crashed_now_train(kind: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    if kind == "byte-order-mark":  # Excel's UTF-8 CSV: refused before ("row 2 has no column 'input'")
        plain = write_csv(tmp_path / "plain.csv", toy_rows(40, 7), ["input", "target"])
        dataset = tmp_path / "marked.csv"
        dataset.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    else:  # the 80/10/10 split left the test split empty: a traceback after training
        dataset = write_jsonl(tmp_path / "four.jsonl", distinct_rows(4))
    output = tmp_path / "run"
    assert main(["train", "--method", "lora", "--output", str(output), *cli_args(tiny_llama_dir, dataset)]) == 0
    assert json.loads((output / "metrics.json").read_text())["test_items"] >= 1


def test_a_local_bertscore_model_takes_its_layer_from_the_flag() -> None:
    path, layers = resolve_bertscore_model("all-minilm-l6-v2")
    assert layers == 6
    assert resolve_bertscore_model(path, 4) == (path, 4)


@pytest.mark.parametrize(("spec", "message"), [
    ("shot=100", "'shot=100' is not OPTION=VALUE with OPTION one of shots, depolarizing, gate_errors, device, "
                 "noise_seed"),
    ("device=ibm-eagle", "unknown QAA device profile 'ibm-eagle'; choose one of ibm-heron, quantinuum-h2"),
    ("gate_errors=1e-3/1e-2", "--qaa-gate-errors takes three numbers 1q,2q,readout"),
    ("shots", "'shots' is not OPTION=VALUE"),
    ("shots=many", "shots takes an integer, got 'many'"),
    ("depolarizing=2", "--qaa-depolarizing must lie in [0, 1], got 2.0"),
])
def test_a_bad_robustness_setting_is_refused_before_training(spec: str, message: str, tiny_llama_dir: Path,
                                                             toy_data_dir: Path, tmp_path: Path, untrained: None,
                                                             capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "out"
    code = main(["compare", "--output", str(output), "--methods", "lora,qaa", "--same-process",
                 *cli_args(tiny_llama_dir, toy_data_dir), "--robustness", spec])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not output.exists()

"""Killing ``qpeft compare`` at any point and running it again gives the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cli_args
from qpeft.cli import main
from qpeft.training.checkpoints import last_complete_checkpoint
from qpeft.training.train_log import read_train_log

FIGURES = ("bleu", "rougeL", "test_loss", "final_train_loss", "trainable_params")


def compare_command(model: Path, data: Path, output: Path) -> list[str]:
    # --same-process: one interpreter start per command instead of three (the kill takes the process group
    # either way); test_peak_memory_does_not_depend_on_what_ran_before covers the fresh-process runs.
    return [sys.executable, "-m", "qpeft.cli", "compare", "--methods", "lora,full", "--output", str(output),
            "--same-process", "--fewshot-examples", "0",
            *cli_args(model, data, steps=12, save_steps=3, max_new_tokens=6, eval_batch_size=None)]


@pytest.mark.multiprocess
def test_compare_killed_mid_run_resumes_to_the_same_results(tiny_llama_dir: Path, toy_data_dir: Path,
                                                             tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(compare_command(tiny_llama_dir, toy_data_dir, straight), env=env, check=True,
                   capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    process = subprocess.Popen(compare_command(tiny_llama_dir, toy_data_dir, killed), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # Kill it hard once the second method has a checkpoint but has not finished.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and last_complete_checkpoint(killed / "full" / "checkpoints") is None:
        assert process.poll() is None, "compare finished before it could be interrupted"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (killed / "lora" / "metrics.json").exists() and not (killed / "full" / "metrics.json").exists()
    lora_metrics = (killed / "lora" / "metrics.json").read_bytes()

    subprocess.run(compare_command(tiny_llama_dir, toy_data_dir, killed), env=env, check=True,
                   capture_output=True, timeout=300)
    assert (killed / "lora" / "metrics.json").read_bytes() == lora_metrics  # finished method kept as it was
    assert json.loads((killed / "full" / "metrics.json").read_text())["resumed_from"] is not None
    want = json.loads((straight / "results.json").read_text())["methods"]
    got = json.loads((killed / "results.json").read_text())["methods"]
    for method in ("base", "lora", "full"):
        for figure in FIGURES if method != "base" else FIGURES[:3]:
            assert got[method][figure] == pytest.approx(want[method][figure], rel=1e-5), (method, figure)


def test_half_written_checkpoint_is_not_resumed_from(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3}')
    (tmp_path / "checkpoint-6").mkdir()  # killed while saving: no trainer state yet
    (tmp_path / "checkpoint-6" / "model.safetensors").write_bytes(b"partial")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-3")
    assert last_complete_checkpoint(tmp_path / "missing") is None


@pytest.mark.parametrize("stop_in", ["record_training", "_evaluate_and_record"])
def test_run_killed_after_its_last_step_is_recorded_without_training_further(
    stop_in: str, tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the last checkpoint and training.json, or between training.json and metrics.json."""
    import qpeft.experiment.runs

    args = ["--method", "lora",
            *cli_args(tiny_llama_dir, toy_data_dir, steps=4, save_steps=2, max_new_tokens=4, eval_batch_size=None)]
    straight = tmp_path / "straight"
    assert main(["train", "--output", str(straight), *args]) == 0

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        patch.setattr(qpeft.experiment.runs, stop_in, interrupted)
        assert main(["train", "--output", str(stopped), *args]) == 130
    if stop_in == "record_training":
        assert last_complete_checkpoint(stopped / "checkpoints").endswith("checkpoint-4")
        assert not (stopped / "training.json").exists()
    else:
        assert (stopped / "training.json").exists() and not (stopped / "checkpoints").exists()
    assert main(["train", "--output", str(stopped), *args]) == 0
    assert [row["step"] for row in read_train_log(stopped / "train_log.csv")] == ["1", "2", "3", "4"]
    want, got = (json.loads((run / "metrics.json").read_text()) for run in (straight, stopped))
    for figure in FIGURES:
        assert got[figure] == pytest.approx(want[figure], rel=1e-6), figure


# --- kill points: SIGKILL inside evaluation, the robustness re-evaluations and the report ------------------------

#: Runs ``qpeft`` with ``module.attribute`` replaced by a wrapper that SIGKILLs the process on its N-th call.
KILL_ON_CALL = """
import importlib, os, signal, sys
module_name, attribute, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = importlib.import_module(module_name)
original, calls = getattr(module, attribute), [0]
def killing(*args, **kwargs):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(module, attribute, killing)
from qpeft.cli import main
sys.exit(main(sys.argv[4:]))
"""
#: Figures that measure the machine (time, memory) or say how the run got there: not part of the result.
MACHINE_FIGURES = ("seconds", "elapsed", "_per_s", "ms_per_token", "latency", "memory", "resumed_from")


def without_machine_figures(value: object) -> object:
    if isinstance(value, dict):
        return {key: without_machine_figures(item) for key, item in value.items()
                if not any(part in key for part in MACHINE_FIGURES)}
    if isinstance(value, list):
        return [without_machine_figures(item) for item in value]
    return value


def differences(got: object, want: object, path: str = "") -> list[str]:
    """Where two JSON values differ, as paths (for a readable failure)."""
    if isinstance(got, dict) and isinstance(want, dict):
        return [found for key in sorted(got.keys() | want.keys())
                for found in differences(got.get(key), want.get(key), f"{path}.{key}")]
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [found for i, (a, b) in enumerate(zip(got, want, strict=True))
                for found in differences(a, b, f"{path}[{i}]")]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


def kill_point_command(model: Path, data: Path, output: Path) -> list[str]:
    # In one process (--same-process), so that the kill hits the comparison itself wherever it is.
    return ["compare", "--methods", "lora,qaa", "--same-process", "--output", str(output), "--fewshot-examples", "0",
            *cli_args(model, data, steps=4, save_steps=2, max_new_tokens=6, eval_batch_size=None)]


@pytest.fixture(scope="module")
def kill_point_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import toy_rows, write_jsonl

    folder = tmp_path_factory.mktemp("kill-point-data")
    write_jsonl(folder / "train.jsonl", toy_rows(32, seed=1))
    write_jsonl(folder / "test.jsonl", toy_rows(6, seed=2))
    return folder


@pytest.mark.multiprocess
def test_a_comparison_killed_anywhere_resumes_to_the_uninterrupted_results(
    tiny_llama_dir: Path, kill_point_data: Path, tmp_path: Path,
) -> None:
    """Killed in turn inside an evaluation, the robustness re-evaluations and the report, each time resumed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "qpeft.cli", *kill_point_command(tiny_llama_dir, kill_point_data, straight)],
                   check=True, capture_output=True, timeout=300, env=env)
    output = tmp_path / "out"
    args = kill_point_command(tiny_llama_dir, kill_point_data, output)
    kill_points = [
        # the second test loss is LoRA's, after its predictions are written and before its metrics.json
        ("qpeft.evaluation.generate", "test_loss", 2,
         lambda: (output / "lora" / "predictions.jsonl").exists() and not (output / "lora" / "metrics.json").exists()),
        # resumed, LoRA's run is evaluated again and QAA trained; killed in QAA's second of four re-evaluations
        ("qpeft.experiment.compare", "evaluate_run", 2,
         lambda: len(list((output / "qaa").glob("metrics_*.json"))) == 1),
        # resumed to the end of the analysis: results.json and report.md are written, report.html is not
        ("qpeft.report", "html_report", 1,
         lambda: (output / "results.json").exists() and (output / "report.md").exists()),
    ]
    for module, attribute, call, stopped_there in kill_points:
        killed = subprocess.run([sys.executable, "-c", KILL_ON_CALL, module, attribute, str(call), *args],
                                capture_output=True, text=True, timeout=300, env=env, check=False)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert stopped_there() and not (output / "report.html").exists(), attribute

    resumed = subprocess.run([sys.executable, "-m", "qpeft.cli", *args], capture_output=True, text=True,
                             timeout=300, env=env, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (output / "report.html").exists()
    got, want = (json.loads((folder / "results.json").read_text()) for folder in (output, straight))
    found = differences(without_machine_figures(got), without_machine_figures(want))
    assert not found, "\n".join(found)
    # every re-evaluation is paired against the run's own predictions, on every metric
    assert all(set(row["p_vs_exact"]) >= {"bleu", "rougeL"} for row in got["methods"]["qaa"]["robustness"][1:])

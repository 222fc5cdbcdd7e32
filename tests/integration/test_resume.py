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
    return [sys.executable, "-m", "qpeft.cli", "compare", "--methods", "lora,full", "--output", str(output),
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


def test_run_killed_after_its_last_step_is_recorded_without_training_further(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qpeft.experiment.runs

    args = ["--method", "lora",
            *cli_args(tiny_llama_dir, toy_data_dir, steps=4, save_steps=2, max_new_tokens=4, eval_batch_size=None)]
    straight = tmp_path / "straight"
    assert main(["train", "--output", str(straight), *args]) == 0

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # as if killed between the last checkpoint and metrics.json

    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        patch.setattr(qpeft.experiment.runs, "_evaluate_and_record", interrupted)
        assert main(["train", "--output", str(stopped), *args]) == 130
    assert last_complete_checkpoint(stopped / "checkpoints").endswith("checkpoint-4")
    assert main(["train", "--output", str(stopped), *args]) == 0
    assert [row["step"] for row in read_train_log(stopped / "train_log.csv")] == ["1", "2", "3", "4"]
    want, got = (json.loads((run / "metrics.json").read_text()) for run in (straight, stopped))
    for figure in FIGURES:
        assert got[figure] == pytest.approx(want[figure], rel=1e-6), figure

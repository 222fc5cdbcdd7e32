"""Data-parallel training: 2 CPU processes (gloo) against one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import losses
from qpeft.cli import main


@pytest.mark.multiprocess
def test_two_processes_match_one_with_the_same_global_batch(tiny_llama_dir: Path, toy_data_dir: Path,
                                                            tmp_path: Path) -> None:
    common = ["--model", str(tiny_llama_dir), "--dataset", str(toy_data_dir), "--steps", "6",
              "--save-steps", "3", "--max-new-tokens", "4", "--bertscore-model", "none",
              "--lora-learning-rate", "1e-2"]
    single = tmp_path / "single"
    assert main(["train", "--method", "lora", "--output", str(single), "--batch-size", "4", *common]) == 0

    parallel = tmp_path / "parallel"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "qpeft.cli", "train", "--method", "lora", "--output", str(parallel), "--batch-size", "2",
              *common]
    result = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

    # Same samples per step, split over two processes: the same curve up to float reduction order.
    assert losses(parallel) == pytest.approx(losses(single), rel=1e-4)
    metrics = json.loads((parallel / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["train_tokens"] == json.loads((single / "metrics.json").read_text())["train_tokens"]


@pytest.mark.multiprocess
def test_tuning_under_torchrun_trains_each_trial_data_parallel(tiny_llama_dir: Path, toy_data_dir: Path,
                                                               tmp_path: Path) -> None:
    output = tmp_path / "tuned"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "qpeft.cli", "tune", "--methods", "lora", "--same-process", "--output", str(output),
              "--lr-grid", "1,10", "--lr-extend", "0", "--model", str(tiny_llama_dir), "--dataset", str(toy_data_dir),
              "--steps", "4",
              "--batch-size", "2", "--save-steps", "2", "--max-new-tokens", "4", "--bertscore-model", "none"]
    result = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((output / "tuning" / "tuning.json").read_text())["methods"]["lora"]
    assert [t["status"] for t in record["trials"]] == ["ok", "ok"]
    assert record["chosen_factor"] in (1.0, 10.0)
    for factor in ("lr-x1", "lr-x10"):  # every trial trained on both processes, each once
        training = json.loads((output / "tuning" / "lora" / factor / "training.json").read_text())
        assert training["world_size"] == 2
        steps = [line.split(",")[0] for line in (output / "tuning" / "lora" / factor / "train_log.csv")
                 .read_text().splitlines()[1:]]
        assert steps == ["1", "2", "3", "4"]

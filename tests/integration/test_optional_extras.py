"""The optional `quantum` extra (PennyLane, Qiskit): QAA trains without it, and what needs it says so in one line.

Most tests simulate a plain ``pip install qpeft`` by blocking the imports (``sys.modules[name] = None``
makes ``import name`` raise ImportError). ``make test-core`` runs this file in a venv that truly lacks
them, where the ``real`` test checks the genuine case; with the extra installed it checks the other.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from helpers import cli_args
from qpeft.cli import main
from qpeft.experiment.run_dir import RunDir
from qpeft.methods import get_method
from qpeft.methods.qaa import QAAConfig
from qpeft.utils.extras import QUANTUM_INSTALL, is_available

EXTRAS = ("qiskit", "pennylane")


def block(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make each library (and its already-imported submodules) unimportable, as if it were not installed."""
    for name in names:
        for module in [m for m in sys.modules if m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, module, None)
        monkeypatch.setitem(sys.modules, name, None)


def train_qaa(model: Path, data: Path, run: Path) -> dict:
    args = ["train", "--method", "qaa", "--output", str(run),
            *cli_args(model, data, steps=4, save_steps=100, max_new_tokens=4, eval_batch_size=4, max_test_items=2)]
    assert main(args) == 0
    return json.loads((run / "metrics.json").read_text())


def untrained_qaa_run(model: Path, run: Path) -> Path:
    """A run folder holding a QAA adapter as training saves it (qasm reads nothing else)."""
    config = QAAConfig()
    config.validate()
    prepared = get_method("qaa").prepare(AutoModelForCausalLM.from_pretrained(model), config)
    get_method("qaa").save(prepared, config, RunDir(run).adapter_dir)
    (run / "config.json").write_text(json.dumps({"method": "qaa"}))
    return run


def test_the_availability_check_sees_a_blocked_library(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_available("colorsys") and not is_available("no_such_library_anywhere")
    block(monkeypatch, "colorsys")
    assert not is_available("colorsys")


def test_qaa_trains_without_the_extras_and_marks_resources_unavailable(
        tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    block(monkeypatch, *EXTRAS)
    with caplog.at_level(logging.INFO, logger="qpeft"):
        metrics = train_qaa(tiny_llama_dir, toy_data_dir, tmp_path / "run")
    assert metrics["qaa_resources"] is None
    assert QUANTUM_INSTALL in metrics["qaa_resources_note"]
    assert "bleu" in metrics and "test_loss" in metrics  # evaluation ran to the end
    hints = [r.getMessage() for r in caplog.records if QUANTUM_INSTALL in r.getMessage()]
    assert len(hints) == 1, hints


def test_qasm_without_qiskit_is_one_line_exit_2_and_writes_nothing(
        tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    run = untrained_qaa_run(tiny_llama_dir, tmp_path / "run")
    block(monkeypatch, "qiskit")
    capsys.readouterr()
    assert main(["qasm", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "qiskit" in err and QUANTUM_INSTALL in err and "Traceback" not in err
    assert not (run / "qasm").exists()


@pytest.mark.multiprocess  # a fresh interpreter
def test_the_training_path_imports_neither_extra() -> None:
    # The whole training and evaluation path, imported in a fresh interpreter: the extras stay unloaded.
    code = ("import sys, qpeft.cli, qpeft.experiment.runs, qpeft.methods.qaa, qpeft.quantum, qpeft.training.trainer; "
            f"print(sorted(m for m in {EXTRAS!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_real_environment_gives_resources_exactly_when_qiskit_is_installed(
        tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # No simulation: `make test` runs this with the extras, `make test-core` without them.
    run = tmp_path / "run"
    metrics = train_qaa(tiny_llama_dir, toy_data_dir, run)
    capsys.readouterr()
    code = main(["qasm", str(run)])
    err = capsys.readouterr().err
    if is_available("qiskit"):
        assert metrics["qaa_resources"]["total"]["state_prep_cnots_per_token"] > 0
        assert "qaa_resources_note" not in metrics
        assert code == 0 and (run / "qasm" / "index.json").exists()
    else:
        assert metrics["qaa_resources"] is None and QUANTUM_INSTALL in metrics["qaa_resources_note"]
        assert code == 2 and err.count("\n") == 1 and not (run / "qasm").exists()

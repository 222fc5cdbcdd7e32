"""Learning-rate tuning: one grid for every method, chosen on validation loss only, trials shared by workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import cli_args, read_rows
from qpeft.cli import main
from qpeft.experiment.tuning import DIVERGED, OK, choice, edge, next_beyond_grid, trial_dir
from qpeft.settings import TuneSettings
from qpeft.utils.errors import UsageError


def tune_args(model: Path, data: Path, output: Path, *extra: str, grid: str = "3", extend: str = "0") -> list[str]:
    """The tests of what a grid does try the grid alone (``extend``: rates past its ends, see the tests below)."""
    return ["--output", str(output), "--lr-grid", grid, "--lr-extend", extend,
            *cli_args(model, data, steps=4, save_steps=2), *extra]


def trials(output: Path) -> dict[str, list[dict]]:
    return {name: record["trials"]
            for name, record in json.loads((output / "tuning" / "tuning.json").read_text())["methods"].items()}


def test_the_default_grid_is_five_factors_root_ten_apart_centred_on_the_default() -> None:
    factors = TuneSettings().factors()
    assert factors == pytest.approx([0.1, 10 ** -0.5, 1.0, 10 ** 0.5, 10.0])
    assert TuneSettings(lr_grid="0.5,2").factors() == [0.5, 2.0]
    for bad in ("0", "a,b", "1,1", "-1,2"):
        with pytest.raises(UsageError, match="--lr-grid"):
            TuneSettings(lr_grid=bad).factors()


def test_past_the_grid_each_end_continues_at_its_own_spacing() -> None:
    above, below = TuneSettings().beyond_grid()
    assert above == pytest.approx([10 ** 1.5, 100.0]) and below == pytest.approx([10 ** -1.5, 0.01])
    assert TuneSettings(lr_grid="0.5,2,4", lr_extend=1).beyond_grid() == ([8.0], [0.125])
    assert TuneSettings(lr_grid="1").beyond_grid() == ([], [])  # one point has no spacing to continue
    assert TuneSettings(lr_extend=0).beyond_grid() == ([], [])
    for bad in (-1, True, 1.5):
        with pytest.raises(UsageError, match="--lr-extend"):
            TuneSettings(lr_extend=bad).validate()


def scored(factor: float, loss: float | None) -> dict:
    return {"factor": factor, "learning_rate": factor, "validation_loss": loss,
            "status": OK if loss is not None else DIVERGED}


def test_tuning_goes_past_an_end_only_while_the_best_is_there() -> None:
    above, below = [100.0, 1000.0], [0.01]
    rising = [scored(0.1, 3.0), scored(1.0, 2.0), scored(10.0, 1.0)]  # best at the top
    assert edge(rising) == "highest" and next_beyond_grid(rising, above, below) == 100.0
    assert next_beyond_grid([*rising, scored(100.0, 1.5)], above, below) is None  # inside now
    assert edge([*rising, scored(100.0, 1.5)]) is None
    assert next_beyond_grid([*rising, scored(100.0, 0.5)], above, below) == 1000.0
    spent = [*rising, scored(100.0, 0.5), scored(1000.0, 0.4)]
    assert next_beyond_grid(spent, above, below) is None and edge(spent) == "highest"
    diverged = [*rising, scored(100.0, None)]  # past the best the rate diverged: the best is bracketed
    assert next_beyond_grid(diverged, above, below) is None and edge(diverged) is None
    falling = [scored(0.1, 1.0), scored(1.0, 2.0), scored(10.0, 3.0)]
    assert edge(falling) == "lowest" and next_beyond_grid(falling, above, below) == 0.01
    assert next_beyond_grid([*falling, scored(0.01, 0.9)], above, below) is None
    assert edge([*falling, scored(0.01, 0.9)]) == "lowest"
    assert edge([scored(1.0, 2.0)]) is None and next_beyond_grid([scored(1.0, 2.0)], [], []) is None


def test_a_method_best_at_an_end_of_the_grid_is_tuned_past_it(tiny_llama_dir: Path, toy_data_dir: Path,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """LoRA's loss falls with every higher rate (it stays at the end after two more); QAA's is lowest at x10,
    which one rate past the grid shows is inside."""
    import math

    import qpeft.experiment.tuning

    def fake_train_run(run_dir: Path, experiment, name, config, data_dir, evaluate):  # noqa: ANN001
        factor = float(run_dir.name.removeprefix("lr-x"))
        run_dir.mkdir(parents=True, exist_ok=True)
        return {"validation_loss": 1 / factor if name == "lora" else 1 + (math.log10(factor) - 1.2) ** 2}

    monkeypatch.setattr(qpeft.experiment.tuning, "train_run", fake_train_run)
    output = tmp_path / "tuned"
    argv = ["tune", "--methods", "lora,qaa", "--same-process",
            *tune_args(tiny_llama_dir, toy_data_dir, output, grid="0.1,1,10", extend="2")]
    assert main(argv) == 0
    record = json.loads((output / "tuning" / "tuning.json").read_text())
    assert record["lr_factors"] == [0.1, 1.0, 10.0] and record["lr_extend"] == 2
    lora, qaa = record["methods"]["lora"], record["methods"]["qaa"]
    assert [t["factor"] for t in lora["trials"]] == pytest.approx([0.1, 1.0, 10.0, 100.0, 1000.0])
    assert lora["chosen_factor"] == pytest.approx(1000.0) and lora["edge"] == "highest"
    assert [t["factor"] for t in qaa["trials"]] == pytest.approx([0.1, 1.0, 10.0, 100.0])
    assert qaa["chosen_factor"] == 10.0 and qaa["edge"] is None
    tuned = yaml.safe_load((output / "tuning" / "tuned.yaml").read_text())
    assert tuned["lora"]["learning_rate"] == pytest.approx(1000 * 2e-4)

    # a trial past the grid is checked before anything trains, as one of the grid is
    past = trial_dir(output, "lora", lora["trials"][3]["factor"])
    (past / "config.json").write_text('{"method": "lora", "r": 64}')
    capsys.readouterr()
    assert main(argv) == 2 and str(past) in capsys.readouterr().err


def test_the_choice_is_the_lowest_validation_loss_and_never_a_diverged_trial() -> None:
    trial_list = [{"factor": 0.1, "learning_rate": 1e-5, "validation_loss": 2.0, "status": OK},
                  {"factor": 1.0, "learning_rate": 1e-4, "validation_loss": 1.95, "status": OK},
                  {"factor": 10.0, "learning_rate": 1e-3, "validation_loss": None, "status": DIVERGED}]
    picked = choice(trial_list)
    assert picked["chosen_factor"] == 1.0 and picked["learning_rate"] == 1e-4
    assert picked["window"] == {"low": 1e-5, "high": 1e-4, "points": 2, "of": 3}  # 2.0 is within 5% of 1.95
    assert choice([{**trial_list[2]}])["chosen_factor"] is None


def test_every_method_gets_the_same_grid_and_every_rate_scales_together(tiny_llama_dir: Path, toy_data_dir: Path,
                                                                      tmp_path: Path) -> None:
    output = tmp_path / "tuned"
    assert main(["tune", "--methods", "lora,qaa", "--same-process",
                 *tune_args(tiny_llama_dir, toy_data_dir, output)]) == 0
    found = trials(output)
    assert [t["factor"] for t in found["lora"]] == [t["factor"] for t in found["qaa"]]
    assert len(found["lora"]) == 3
    for trial in found["qaa"]:  # QAA's angle rate keeps its ratio (10x) to its main rate
        rates = trial["learning_rates"]
        assert rates["angle_learning_rate"] == pytest.approx(10 * rates["learning_rate"])
    for name in ("lora", "qaa"):  # no trial is scored on the test set
        for trial in found[name]:
            folder = trial_dir(output, name, trial["factor"])
            assert (folder / "training.json").exists()
            assert not (folder / "predictions.jsonl").exists() and not (folder / "metrics.json").exists()
    tuned = yaml.safe_load((output / "tuning" / "tuned.yaml").read_text())
    best = min(found["qaa"], key=lambda t: t["validation_loss"])
    assert tuned["qaa"] == pytest.approx(best["learning_rates"])


def test_compare_tune_evaluates_only_the_chosen_trial_and_does_not_retrain_it(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qpeft.experiment.runs

    calls = []
    original = qpeft.experiment.runs.train
    monkeypatch.setattr(qpeft.experiment.runs, "train", lambda run_dir, *a, **k: (calls.append(run_dir),
                                                                                   original(run_dir, *a, **k))[1])
    output = tmp_path / "cmp"
    assert main(["compare", "--tune", "--methods", "lora", "--same-process", "--fewshot-examples", "0",
                 *tune_args(tiny_llama_dir, toy_data_dir, output)]) == 0
    assert len(calls) == 3  # the three trials, and no fourth training for the comparison's own run
    results = json.loads((output / "results.json").read_text())
    found = results["tuning"]["lora"]
    best = min(found, key=lambda t: t["validation_loss"])
    assert results["methods"]["lora"]["learning_rate"] == best["learning_rate"]
    assert results["methods"]["lora"]["validation_loss"] == pytest.approx(best["validation_loss"])
    scored = [t for t in found if (trial_dir(output, "lora", t["factor"]) / "metrics.json").exists()]
    assert scored == [best]  # the chosen trial is the method's run; the others never meet the test set
    assert [r["step"] for r in read_rows(trial_dir(output, "lora", best["factor"]) / "train_log.csv")] == \
        ["1", "2", "3", "4"]
    report = (output / "report.md").read_text()
    assert "Learning rates tuned on validation (grid 3 points" in report and "## Learning rates" in report
    assert 'id="plot-learning-rates"' in (output / "report.html").read_text()


def test_selection_ignores_the_test_set_even_where_it_would_choose_otherwise(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each trial's validation loss says x0.1 and its test loss would say x10: the choice is x0.1."""
    import qpeft.experiment.tuning

    def fake_train_run(run_dir: Path, experiment, name, config, data_dir, evaluate):  # noqa: ANN001
        factor = float(run_dir.name.removeprefix("lr-x"))
        assert evaluate is False  # a trial never reaches the test set
        run_dir.mkdir(parents=True, exist_ok=True)
        return {"validation_loss": 1.0 + factor, "test_loss": 1.0 / factor}

    monkeypatch.setattr(qpeft.experiment.tuning, "train_run", fake_train_run)
    output = tmp_path / "tuned"
    assert main(["tune", "--methods", "lora", "--same-process",
                 *tune_args(tiny_llama_dir, toy_data_dir, output, grid="0.1,1,10")]) == 0
    record = json.loads((output / "tuning" / "tuning.json").read_text())["methods"]["lora"]
    assert record["chosen_factor"] == 0.1


def test_a_diverged_trial_is_recorded_and_never_chosen(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The largest rate diverges (as the trainer reports a non-finite loss); its 'loss' would otherwise be lowest."""
    import qpeft.experiment.tuning
    from qpeft.training.trainer import TrainingDiverged

    def diverging_at_ten(run_dir: Path, *args: object) -> dict:
        run_dir.mkdir(parents=True, exist_ok=True)
        if run_dir.name == "lr-x10":
            raise TrainingDiverged("method 'lora': non-finite loss or gradient at step 3")
        return {"validation_loss": 2.0 if run_dir.name == "lr-x1" else 3.0}

    monkeypatch.setattr(qpeft.experiment.tuning, "train_run", diverging_at_ten)
    output = tmp_path / "tuned"
    assert main(["tune", "--methods", "lora", "--same-process",
                 *tune_args(tiny_llama_dir, toy_data_dir, output, grid="0.1,1,10")]) == 0
    by_factor = {t["factor"]: t for t in trials(output)["lora"]}
    assert by_factor[10.0]["status"] == DIVERGED and by_factor[10.0]["validation_loss"] is None
    assert json.loads((output / "tuning" / "tuning.json").read_text())["methods"]["lora"]["chosen_factor"] == 1.0
    assert "diverged" in capsys.readouterr().out


def test_a_finished_tuning_run_again_draws_no_trial(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    import qpeft.experiment.tuning

    def trained(run_dir: Path, *args: object) -> dict:
        run_dir.mkdir(parents=True, exist_ok=True)
        return {"validation_loss": 2.0 if run_dir.name == "lr-x1" else 3.0}

    monkeypatch.setattr(qpeft.experiment.tuning, "train_run", trained)
    output = tmp_path / "tuned"
    argv = ["tune", "--methods", "lora", "--same-process", *tune_args(tiny_llama_dir, toy_data_dir, output)]
    assert main(argv) == 0
    first = trials(output)

    def no_trial(*_args: object) -> None:
        raise AssertionError("a finished grid point was drawn again")

    monkeypatch.setattr(qpeft.experiment.tuning, "run_trial", no_trial)
    capsys.readouterr()
    assert main(argv) == 0
    assert trials(output) == first and "re-evaluating" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["tune", "compare"])
def test_a_trial_trained_with_other_options_is_refused_before_training(command: str, tiny_llama_dir: Path,
                                                                      toy_data_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """A finished trial is reused by its factor; one trained at another rank would be passed off as this one's."""
    import qpeft.experiment.tuning

    output = tmp_path / "tuned"
    argv = [command, "--tune", "--fewshot-examples", "0"] if command == "compare" else [command]
    argv += ["--methods", "lora", "--same-process", *tune_args(tiny_llama_dir, toy_data_dir, output, grid="1")]
    assert main([*argv, "--lora-r", "2"]) == 0
    trial = trial_dir(output, "lora", 1.0)
    before = sorted(path.relative_to(output) for path in output.rglob("*") if ".qpeft.lock" not in path.name)

    def no_training(*_args: object) -> None:
        raise AssertionError("trained before the folder was checked")

    monkeypatch.setattr(qpeft.experiment.tuning, "train_run", no_training)
    capsys.readouterr()
    assert main([*argv, "--lora-r", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(trial) in err and "other lora options" in err
    assert sorted(path.relative_to(output) for path in output.rglob("*") if ".qpeft.lock" not in path.name) == before
    assert main([*argv, "--lora-r", "2"]) == 0  # the same options reuse it


def test_tuning_needs_a_validation_loss(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    code = main(["tune", "--methods", "lora", *tune_args(tiny_llama_dir, toy_data_dir, tmp_path / "t"),
                 "--validation-items", "0"])
    assert code == 2 and "--validation-items must be positive" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    code = main(["tune", "--methods", "lora", *tune_args(tiny_llama_dir, toy_data_dir, tmp_path / "t", extend="-1")])
    assert code == 2 and "--lr-extend" in capsys.readouterr().err and not (tmp_path / "t").exists()


def tune_command(model: Path, data: Path, output: Path, grid: str = "4") -> list[str]:
    return [sys.executable, "-m", "qpeft.cli", "tune", "--methods", "lora", "--same-process",
            *tune_args(model, data, output, grid=grid)]


@pytest.mark.multiprocess
def test_two_workers_on_one_output_train_every_trial_once_and_choose_as_one(tiny_llama_dir: Path,
                                                                           toy_data_dir: Path,
                                                                           tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    alone = tmp_path / "alone"
    assert main(tune_command(tiny_llama_dir, toy_data_dir, alone)[3:]) == 0  # the same command, in this process
    shared = tmp_path / "shared"
    workers = [subprocess.Popen(tune_command(tiny_llama_dir, toy_data_dir, shared), env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    trained_by = [sum(f"learning rates x{t['factor']:.3g} ===" in err for t in trials(shared)["lora"])
                  for _, err in outputs]
    assert all(count > 0 for count in trained_by), outputs  # both workers drew grid points
    for trial in trials(shared)["lora"]:  # each grid point trained once: one run of its steps, never restarted
        folder = trial_dir(shared, "lora", trial["factor"])
        assert [r["step"] for r in read_rows(folder / "train_log.csv")] == ["1", "2", "3", "4"]
        assert json.loads((folder / "training.json").read_text())["resumed_from"] is None
    # the same choice and the same trials as one worker (up to float reduction order: other thread counts)
    chosen = [yaml.safe_load((folder / "tuning" / "tuned.yaml").read_text()) for folder in (shared, alone)]
    assert chosen[0]["lora"] == chosen[1]["lora"]  # the same rates (each file names its own tuning.json)
    for got, want in zip(trials(shared)["lora"], trials(alone)["lora"], strict=True):
        assert got["factor"] == want["factor"] and got["status"] == want["status"]
        assert got["validation_loss"] == pytest.approx(want["validation_loss"], rel=1e-5)


@pytest.mark.multiprocess
def test_a_worker_killed_mid_trial_leaves_it_to_be_resumed_from_its_checkpoint(tiny_llama_dir: Path,
                                                                              toy_data_dir: Path,
                                                                              tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    output = tmp_path / "tuned"
    command = tune_command(tiny_llama_dir, toy_data_dir, output, grid="1") + ["--steps", "40", "--save-steps", "5"]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    folder = trial_dir(output, "lora", 1.0)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list((folder / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        assert worker.poll() is None, "the trial finished before it could be killed"
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert not (folder / "training.json").exists()
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    assert json.loads((folder / "training.json").read_text())["resumed_from"] is not None
    assert [r["step"] for r in read_rows(folder / "train_log.csv")] == [str(s) for s in range(1, 41)]


def test_a_variant_is_a_row_of_its_own_tuned_and_reported_like_a_method(tiny_llama_dir: Path, toy_data_dir: Path,
                                                                       tmp_path: Path) -> None:
    config = tmp_path / "ablation.yaml"
    config.write_text("methods: qaa\nvariants:\n  qaa-frozen: {method: qaa, train_angles: false}\n"
                      "  lora-r2: {method: lora, r: 2}\n")
    output = tmp_path / "cmp"
    assert main(["compare", "--tune", "--config", str(config), "--same-process", "--fewshot-examples", "0",
                 *tune_args(tiny_llama_dir, toy_data_dir, output, grid="1,3")]) == 0
    results = json.loads((output / "results.json").read_text())
    assert set(results["tuning"]) == {"qaa", "qaa-frozen", "lora-r2"}
    assert results["method_configs"]["lora-r2"]["r"] == 2
    # frozen angles: the same circuit, fewer trainable parameters (the angles are not among them)
    figures = results["methods"]
    assert figures["qaa-frozen"]["trainable_params"] < figures["qaa"]["trainable_params"]
    frozen = json.loads((trial_dir(output, "qaa-frozen", 1.0) / "config.json").read_text())
    assert frozen["method"] == "qaa" and frozen["method_config"]["train_angles"] is False
    assert "| qaa-frozen |" in (output / "report.md").read_text()
    tuned = yaml.safe_load((output / "tuning" / "tuned.yaml").read_text())
    assert tuned["variants"]["lora-r2"]["method"] == "lora" and tuned["variants"]["lora-r2"]["r"] == 2


@pytest.mark.parametrize(("variants", "message"), [
    ('{"lora": {"method": "lora"}}', "a name of its own"),
    ('{"../x": {"method": "lora"}}', "a name of its own"),
    ('{"v": {"method": "nope"}}', "give its method"),
    ('{"v": {"method": "lora", "depth": 3}}', "lora has no option 'depth'"),
    ("[1]", "expected a mapping"),
])
def test_a_bad_variant_is_one_line_before_training(variants: str, message: str, tiny_llama_dir: Path,
                                                   toy_data_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    code = main(["compare", "--methods", "lora", "--variants", variants,
                 *tune_args(tiny_llama_dir, toy_data_dir, tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_the_shipped_ablations_config_names_the_issue_s_variants() -> None:
    from helpers import ROOT
    from qpeft.experiment.variants import parse_variants

    values = yaml.safe_load((ROOT / "configs" / "ablations.yaml").read_text())
    variants = parse_variants(json.dumps(values["variants"]))
    assert variants["lora-r4"] == {"method": "lora", "r": 4}
    assert variants["qaa-frozen"]["train_angles"] is False and variants["qaa-no-bias"]["bias"] is False
    assert {variants["qaa-l1"]["layers"], variants["qaa-l4"]["layers"]} == {1, 4}


def test_a_comparison_at_recorded_rates_says_they_were_tuned_and_checks_them(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import qpeft.experiment.tuning

    monkeypatch.setattr(qpeft.experiment.tuning, "train_run", lambda run_dir, *a: (
        run_dir.mkdir(parents=True, exist_ok=True), {"validation_loss": 5.0 - float(run_dir.name[4:])})[1])
    tuned = tmp_path / "tuned"
    assert main(["tune", "--methods", "lora", "--same-process",
                 *tune_args(tiny_llama_dir, toy_data_dir, tuned, grid="1,3")]) == 0
    monkeypatch.undo()
    config = tuned / "tuning" / "tuned.yaml"
    assert yaml.safe_load(config.read_text())["tuned_from"] == str(tuned / "tuning" / "tuning.json")

    wrong = tmp_path / "wrong"  # the record chose 6e-4; a comparison at another rate is not "tuned"
    code = main(["compare", "--config", str(config), "--methods", "lora", "--lora-learning-rate", "1e-3",
                 "--output", str(wrong), *tune_args(tiny_llama_dir, toy_data_dir, wrong)[2:]])
    assert code == 2 and "not at the rates its tuning chose" in capsys.readouterr().err and not wrong.exists()

    # a rate chosen for rank 8 is not a rate tuned for rank 4: the record's other options must match too
    code = main(["compare", "--config", str(config), "--methods", "lora", "--lora-r", "4",
                 "--output", str(wrong), *tune_args(tiny_llama_dir, toy_data_dir, wrong)[2:]])
    err = capsys.readouterr().err
    assert code == 2 and "lora was tuned with r=8, not r=4" in err and not wrong.exists()
    record = json.loads((tuned / "tuning" / "tuning.json").read_text())
    del record["methods"]["lora"]["config"]  # a record from before the options were kept: nothing to check by
    old = tmp_path / "old-tuning.json"
    old.write_text(json.dumps(record))
    code = main(["compare", "--methods", "lora", "--lora-learning-rate", "6e-4", "--tuned-from", str(old),
                 "--output", str(wrong), *tune_args(tiny_llama_dir, toy_data_dir, wrong)[2:]])
    err = capsys.readouterr().err
    assert code == 2 and "records no lora options" in err and len(err.strip().splitlines()) == 1

    output = tmp_path / "cmp"
    assert main(["compare", "--config", str(config), "--methods", "lora", "--same-process", "--fewshot-examples", "0",
                 "--output", str(output), *tune_args(tiny_llama_dir, toy_data_dir, output)[2:]]) == 0
    results = json.loads((output / "results.json").read_text())
    assert results["learning_rates"]["tuned"] is True
    assert results["methods"]["lora"]["learning_rate"] == pytest.approx(6e-4)
    assert f"the trials are recorded in {tuned / 'tuning' / 'tuning.json'}" in (output / "report.md").read_text()


@pytest.mark.parametrize("content", ["not json", "[]", '{"methods": {}, "lr_factors": [1]}'])
def test_a_tuning_record_that_is_no_record_of_these_rows_is_refused(content: str, tiny_llama_dir: Path,
                                                                    toy_data_dir: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    record = tmp_path / "tuning.json"
    record.write_text(content)
    code = main(["compare", "--methods", "lora", "--tuned-from", str(record),
                 *tune_args(tiny_llama_dir, toy_data_dir, tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "--tuned-from" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_demo_config_is_the_recorded_tuning_of_the_demo() -> None:
    """configs/demo.yaml's rates are those configs/demo-tuning.json chose for the demo's own experiment."""
    import re

    from helpers import ROOT
    from qpeft.cli import build_parser
    from qpeft.cli.commands import comparison_rows
    from qpeft.cli.config_file import expand_config_file
    from qpeft.cli.parser import experiment_from_args
    from qpeft.experiment.tuning import read_tuning_record

    makefile = (ROOT / "Makefile").read_text()
    flags = re.search(r"^DEMO_FLAGS \?= (.*)$", makefile, re.MULTILINE).group(1).split()
    methods = re.search(r"^DEMO_METHODS \?= (.*)$", makefile, re.MULTILINE).group(1)
    argv = expand_config_file(["compare", "--config", str(ROOT / "configs" / "demo.yaml"), "--methods", methods,
                               "--output", "demo", *flags])
    args = build_parser().parse_args(argv)
    rows, configs = comparison_rows(args)
    record = read_tuning_record(ROOT / args.tuned_from, experiment_from_args(args), rows, configs)
    assert set(record["methods"]) == {"full", "lora", "prefix", "sora", "qaa"}
    assert record["lr_extend"] == 3 and "--lr-extend 3" in makefile  # what make demo-tuning runs
    for entry in record["methods"].values():  # the grid for every method, and past its top where the best was there
        factors = [trial["factor"] for trial in entry["trials"]]
        assert set(record["lr_factors"]) <= set(factors) and len(factors) <= len(record["lr_factors"]) + 3
        assert entry["edge"] is None  # every choice inside the rates tried: no method compared under-tuned

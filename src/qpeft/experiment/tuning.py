"""``qpeft tune``: every method's learning rate chosen the same way, on the validation loss.

Each method gets the same trials: its learning rates (all of them, keeping their ratios: QAA's
angles, SoRA's gates) times each factor of one grid (default five factors √10 apart, 0.1 to 10
around the method's default), each trial a full training run at the experiment's budget and
seed, scored by its last validation loss. The lowest is chosen; the test set plays no part, and
no trial is evaluated on it. A trial that diverges scores as the worst and is never chosen. Where a
method's best trial is the highest (or lowest) rate tried, its optimum may lie past the grid, and the
comparison would hold it under-tuned: tuning then goes on past that end, one rate at a time at the
grid's spacing, until the best is inside (at most ``--lr-extend`` rates past each end; the report
names a method still at an end). In
``compare --tune`` the chosen trial's run *is* the method's run: it is evaluated there, never
trained again.

Optuna schedules the trials: one study per method with Optuna's ``GridSampler``, stored in a
journal file in the output folder (or at any storage URL Optuna accepts), so several ``qpeft
tune`` processes started on one output folder (one per GPU, or on several hosts sharing the
folder or a database) share the grid. A trial's run folder is named by its factor and locked
while it trains, so each grid point trains once whichever worker draws it: a worker that draws a
point another one is training waits for it and takes its result, and a worker killed mid-trial
leaves its lock and checkpoints behind, which the next worker on that host to draw the point
takes over, resuming from the last checkpoint. Under ``torchrun``/``accelerate launch`` the
processes of one launch are one data-parallel worker and take the grid in order. A trial found in
the folder with other options of its method is refused before anything trains: its factor alone
would reuse it.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from qpeft.experiment.checks import check_experiment
from qpeft.experiment.processes import isolated
from qpeft.experiment.run_dir import EXPERIMENT_FILE, RunDir, claimed_comparison, claimed_folder
from qpeft.experiment.runs import run_config, train_run
from qpeft.methods import get_method
from qpeft.settings import Experiment, TuneSettings
from qpeft.training.trainer import TrainingDiverged
from qpeft.utils.atomic import read_json, write_json
from qpeft.utils.distributed import is_main_process, process_state, wait_for_everyone
from qpeft.utils.errors import UsageError
from qpeft.utils.locks import FolderInUse

log = logging.getLogger(__name__)

TUNING = "tuning"
OK, DIVERGED, FAILED = "ok", "diverged", "failed"
#: A method's good window: the learning rates whose validation loss is within this share of its best.
WINDOW = 0.05
#: How often a worker looks again at a grid point another worker is training.
WAIT_SECONDS = 5.0


def trial_dir(output: Path, row: str, factor: float) -> Path:
    return Path(output) / TUNING / row / f"lr-x{factor:.6g}"


def trial_config(name: str, config: dict[str, Any], factor: float) -> dict[str, Any]:
    """The method's config (flags given, defaults filled in) with every learning rate times ``factor``."""
    return get_method(name).config_class.from_dict(config).with_learning_rates_scaled(factor).to_dict()


def read_record(path: Path) -> dict[str, Any] | None:
    """A trial's ``trial.json``, or None when it has not finished (or the file is no record: trained again)."""
    if not path.exists():
        return None
    record = read_json(path)
    return record if isinstance(record, dict) and record.get("status") in (OK, DIVERGED) else None


def run_trial(output: Path, experiment: Experiment, row: str, name: str, config: dict[str, Any],
              data_dir: str | None, factor: float, fresh_process: bool) -> dict[str, Any]:
    """One grid point of a row (of method ``name``): its record, training it unless a worker already did (or
    waiting for the one that is)."""
    run_dir = trial_dir(output, row, factor)
    scaled = trial_config(name, config, factor)
    rates = {field: scaled[field] for field in get_method(name).config_class.learning_rate_fields}
    while (record := read_record(run_dir / "trial.json")) is None:
        try:
            figures = isolated(train_run, fresh_process, run_dir, experiment, name, scaled, data_dir, False)
            loss, status = figures.get("validation_loss"), OK
        except TrainingDiverged:
            loss, status = None, DIVERGED
        except FolderInUse:
            log.info("%s x%.3g: another worker is training it; waiting for its result", row, factor)
            time.sleep(WAIT_SECONDS)
            continue
        if status == OK and not (isinstance(loss, float) and math.isfinite(loss)):
            loss, status = None, DIVERGED
        record = {"factor": factor, "learning_rate": scaled["learning_rate"], "learning_rates": rates,
                  "validation_loss": loss, "status": status}
        if is_main_process():
            write_json(run_dir / "trial.json", record)
        wait_for_everyone()
    return record


def tune_method(output: Path, experiment: Experiment, row: str, name: str, config: dict[str, Any],
                data_dir: str | None, settings: TuneSettings, fresh_process: bool) -> dict[str, Any]:
    """Every grid point of one row (of method ``name``) trained, by this worker or others; its tuning record."""
    factors = settings.factors()
    if process_state().num_processes > 1:
        for factor in factors:  # one data-parallel worker: every process takes the same trial
            run_trial(output, experiment, row, name, config, data_dir, factor, fresh_process)
    else:
        optimize_with_optuna(output, experiment, row, name, config, data_dir, settings, fresh_process)
    trials = [read_record(trial_dir(output, row, factor) / "trial.json") or
              {"factor": factor, "learning_rate": trial_config(name, config, factor)["learning_rate"],
               "validation_loss": None, "status": FAILED} for factor in factors]
    # One point at a time, each chosen by the last one's result: nothing to schedule, so no Optuna study; the
    # point's locked run folder still shares it between workers, which all reach the same points.
    while (factor := next_beyond_grid(trials, *settings.beyond_grid())) is not None:
        log.info("=== tuning %s: best at an end of the rates tried; learning rates x%.3g ===", row, factor)
        record = run_trial(output, experiment, row, name, config, data_dir, factor, fresh_process)
        trials = sorted([*trials, record], key=lambda trial: trial["factor"])
    # the options every trial shared (the rates at the grid's centre): a comparison at other options is not tuned
    return {"trials": trials, **choice(trials), "edge": edge(trials), "config": trial_config(name, config, 1.0)}


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial of the lowest validation loss among those that trained (None: none did)."""
    finished = [t for t in trials if t["status"] == OK]
    return min(finished, key=lambda t: t["validation_loss"]) if finished else None


def edge(trials: list[dict[str, Any]]) -> str | None:
    """"highest" or "lowest" where the best trial is the highest or lowest rate tried (of several): its optimum
    may lie past it. None where it is inside, or where a rate past it was tried and diverged."""
    best, tried = best_trial(trials), sorted(t["factor"] for t in trials)
    if best is None or len(tried) < 2:
        return None
    return "highest" if best["factor"] == tried[-1] else "lowest" if best["factor"] == tried[0] else None


def next_beyond_grid(trials: list[dict[str, Any]], above: list[float], below: list[float]) -> float | None:
    """The next factor past the end of those tried where the best trial is, or None: the best is inside, or
    that end's extension points are spent."""
    side = {"highest": above, "lowest": below}.get(edge(trials) or "", [])
    tried = {t["factor"] for t in trials}
    return next((factor for factor in side if factor not in tried), None)


def optimize_with_optuna(output: Path, experiment: Experiment, row: str, name: str, config: dict[str, Any],
                         data_dir: str | None, settings: TuneSettings, fresh_process: bool) -> None:
    """Draw grid points from the row's shared study until every one has finished."""
    import optuna

    factors = settings.factors()
    if all(read_record(trial_dir(output, row, factor) / "trial.json") for factor in factors):
        return  # finished before (a rerun): the exhausted grid would only re-draw a finished point, with a warning
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # qpeft logs each trial itself
    storage = settings.storage or optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(Path(output) / TUNING / "optuna.log")))
    study = optuna.create_study(study_name=row, storage=storage, direction="minimize", load_if_exists=True,
                                sampler=optuna.samplers.GridSampler({"lr_factor": factors}, seed=0))

    def objective(trial: optuna.Trial) -> float:
        factor = trial.suggest_categorical("lr_factor", factors)
        log.info("=== tuning %s: learning rates x%.3g ===", row, factor)
        record = run_trial(output, experiment, row, name, config, data_dir, factor, fresh_process)
        trial.set_user_attr("status", record["status"])
        # A diverged trial is the worst there is; Optuna takes inf as a value.
        return record["validation_loss"] if record["status"] == OK else math.inf

    # GridSampler stops the study once every point has finished; the bound only guards against a loop.
    study.optimize(objective, n_trials=2 * len(factors))


def choice(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The chosen trial (lowest validation loss among those that trained) and the method's good window."""
    finished = [t for t in trials if t["status"] == OK]
    best = best_trial(trials)
    if best is None:
        return {"chosen_factor": None, "learning_rate": None, "window": None}
    good = [t["learning_rate"] for t in finished if t["validation_loss"] <= (1 + WINDOW) * best["validation_loss"]]
    return {"chosen_factor": best["factor"], "learning_rate": best["learning_rate"],
            "window": {"low": min(good), "high": max(good), "points": len(good), "of": len(trials)}}


def check_tuning(output: Path, experiment: Experiment, settings: TuneSettings, rows: dict[str, str],
                 method_configs: dict[str, dict[str, Any]]) -> None:
    """The grid, the validation split, and every trial already in ``output`` (``experiment`` at the tuning's seed)."""
    settings.validate()
    if not experiment.train.validation_items:
        raise UsageError("tuning chooses on the validation loss: --validation-items must be positive")
    above, below = settings.beyond_grid()
    for row, name in rows.items():
        for factor in [*below, *settings.factors(), *above]:
            check_recorded_trial(trial_dir(output, row, factor), experiment, row, name,
                                 trial_config(name, method_configs.get(row, {}), factor))


def check_recorded_trial(run_dir: Path, experiment: Experiment, row: str, name: str,
                         scaled: dict[str, Any]) -> None:
    """A trial found in the folder is reused by its factor alone: it must have trained with these options."""
    recorded = RunDir(run_dir).config_path
    if not recorded.exists():
        return
    try:
        same = read_json(recorded) == run_config(experiment, name, scaled)
    except (OSError, ValueError):
        same = False
    if not same:
        raise UsageError(f"{run_dir}: a trial trained with other {row} options or another experiment; "
                         "choose another output folder (or remove the trial to train it again)")


def claim_tuning(output: Path, experiment: Experiment, settings: TuneSettings, claim_output: bool) -> None:
    """Record the experiment (with ``claim_output``) and the grid, refusing a folder that holds others.

    Workers share the folder, so none keeps its lock beyond recording: each trial's run folder has its own.
    """
    recorded = output / EXPERIMENT_FILE
    if claim_output and not (recorded.exists() and read_json(recorded) == experiment.to_dict()):
        with claimed_comparison(output, experiment):
            pass
    folder = output / TUNING
    grid = {"lr_factors": settings.factors(), "lr_extend": settings.lr_extend}
    with claimed_folder(folder, folder / "grid.json", grid, "tuning"):
        pass


def tune(output: Path, experiment: Experiment, methods: list[str] | dict[str, str],
         method_configs: dict[str, dict[str, Any]], data_dir: str | None, settings: TuneSettings,
         fresh_process: bool = True, claim: bool = True) -> dict[str, dict[str, Any]]:
    """Tune every row on one grid; writes ``tuning/tuning.json`` and the chosen rates as ``tuning/tuned.yaml``.

    ``methods``: method names, or row name -> method name (with variants). ``claim`` False: the caller
    (``compare --tune``) has checked everything and claimed ``output`` already.
    """
    rows = methods if isinstance(methods, dict) else {name: name for name in methods}
    if claim:
        check_tuning(output, experiment, settings, rows, method_configs)
        check_experiment(experiment, {name: method_configs.get(name, {}) for name in rows}, data_dir, rows)
    claim_tuning(output, experiment, settings, claim_output=claim)
    records = {row: tune_method(output, experiment, row, name, method_configs.get(row, {}), data_dir, settings,
                                fresh_process) for row, name in rows.items()}
    if is_main_process():
        write_json(output / TUNING / "tuning.json", {"experiment": experiment.to_dict(),
                                                      "lr_factors": settings.factors(),
                                                      "lr_extend": settings.lr_extend, "methods": records})
        write_tuned_config(output / TUNING / "tuned.yaml", rows, method_configs, records)
    return records


def chosen_config(name: str, config: dict[str, Any], record: dict[str, Any]) -> dict[str, Any] | None:
    """The method's config at its chosen learning rates (None when every trial diverged)."""
    factor = record.get("chosen_factor")
    return None if factor is None else trial_config(name, config, factor)


def write_tuned_config(path: Path, rows: dict[str, str], method_configs: dict[str, dict[str, Any]],
                       records: dict[str, dict[str, Any]]) -> None:
    """The chosen learning rates as a ``--config`` file: ``qpeft compare --config tuned.yaml`` reruns at them.

    A method's rates are its options (``lora: {learning_rate: ...}``); a variant is written whole, with them.
    """
    import yaml

    from qpeft.utils.atomic import write_text_atomic

    options: dict[str, Any] = {}
    variants: dict[str, Any] = {}
    for row, name in rows.items():
        config = chosen_config(name, method_configs.get(row, {}), records[row])
        if config is None:
            continue
        rates = {field: config[field] for field in get_method(name).config_class.learning_rate_fields}
        if row == name:
            options[row] = rates
        else:
            variants[row] = {"method": name, **method_configs.get(row, {}), **rates}
    if variants:
        options["variants"] = variants
    options["tuned_from"] = str(path.with_name("tuning.json"))
    header = "# Learning rates chosen by qpeft tune on the validation loss (tuning.json holds every trial).\n"
    write_text_atomic(path, header + yaml.safe_dump(options, sort_keys=False))


def trained_part(experiment: dict[str, Any]) -> dict[str, Any]:
    """What a tuning's choice depends on: all of the experiment but its evaluation settings (and its seed: the
    rates chosen at one seed serve every seed of a comparison)."""
    return {key: value for key, value in experiment.items() if key not in ("eval", "seed")}


def check_tuned_options(path: Path, row: str, name: str, tuned: Any, given: dict[str, Any]) -> None:
    """The row trains with the options its rates were tuned with (all but the learning rates themselves)."""
    if not isinstance(tuned, dict):
        raise UsageError(f"--tuned-from {path}: records no {row} options, so nothing shows its rates were tuned "
                         "for these (run qpeft tune in its folder again: its trials are reused)")
    rates = get_method(name).config_class.learning_rate_fields
    differ = [key for key in given if key not in rates and tuned.get(key) != given[key]]
    if differ:
        raise UsageError(f"--tuned-from {path}: {row} was tuned with "
                         f"{', '.join(f'{key}={tuned.get(key)}' for key in differ)}, not "
                         f"{', '.join(f'{key}={given[key]}' for key in differ)}")


def read_tuning_record(path: Path, experiment: Experiment, rows: dict[str, str],
                       method_configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ``tuning.json`` that a comparison's learning rates come from (``--tuned-from``), checked before training.

    The file is untrusted input: it must be a tuning of this experiment, of every row, and each row must
    train at the rates it chose; otherwise the report would call rates tuned that were not.
    """
    try:
        record = read_json(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"--tuned-from {path}: not a readable JSON file ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("methods"), dict) or \
            not isinstance(record.get("lr_factors"), list):
        raise UsageError(f"--tuned-from {path}: not a qpeft tuning record (tuning.json)")
    recorded = record.get("experiment")
    if isinstance(recorded, dict):
        try:  # a record from before a training option existed was made at that option's default
            recorded = Experiment.from_dict(recorded).to_dict()
        except (TypeError, KeyError, ValueError) as error:
            raise UsageError(f"--tuned-from {path}: its experiment is not one qpeft reads ({error})") from None
    if isinstance(recorded, dict) and trained_part(recorded) != trained_part(experiment.to_dict()):
        raise UsageError(f"--tuned-from {path}: tuned with another model, data or training budget than this "
                         "comparison's")
    for row, name in rows.items():
        entry = record["methods"].get(row)
        if not isinstance(entry, dict) or not isinstance(entry.get("trials"), list):
            raise UsageError(f"--tuned-from {path}: holds no tuning of {row!r}")
        chosen = next((t.get("learning_rates") for t in entry["trials"] if isinstance(t, dict)
                       and t.get("factor") == entry.get("chosen_factor")), None)
        given = get_method(name).config_class.from_dict(method_configs.get(row, {})).to_dict()
        if not isinstance(chosen, dict) or any(
                not isinstance(chosen.get(field), (int, float)) or not math.isclose(given[field], chosen[field])
                for field in get_method(name).config_class.learning_rate_fields):
            raise UsageError(f"--tuned-from {path}: {row} would train at learning rate {given['learning_rate']:.3g}, "
                             f"not at the rates its tuning chose")
        check_tuned_options(path, row, name, entry.get("config"), given)
    extend = record.get("lr_extend", 0)  # a record from before tuning went past the grid's ends: none did
    if isinstance(extend, bool) or not isinstance(extend, int) or extend < 0:
        raise UsageError(f"--tuned-from {path}: lr_extend is not a whole number of rates")
    methods = {}
    for row in rows:  # where the choice sits, read off the trials (a record from before had no such field)
        try:
            methods[row] = {**record["methods"][row], "edge": edge(record["methods"][row]["trials"])}
        except (KeyError, TypeError):
            raise UsageError(f"--tuned-from {path}: {row}'s trials are not qpeft trial records") from None
    return {"lr_factors": record["lr_factors"], "lr_extend": extend, "methods": methods, "source": str(path)}

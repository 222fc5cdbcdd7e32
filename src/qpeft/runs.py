"""A run folder: one method trained and evaluated under one experiment's settings.

Layout: ``config.json`` (everything needed to reproduce the run), ``train_log.csv``,
``checkpoints/`` (while training), ``adapter/``, ``predictions.jsonl``, ``metrics.json``.
``metrics.json`` is written last, so its presence means the run finished; the checkpoints,
which only serve to resume, are then deleted (for full fine-tuning they weigh gigabytes).
"""

from __future__ import annotations

import logging
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from qpeft.data import DataSplits, Example, TestItem, load_splits
from qpeft.distributed import is_main_process, wait_for_everyone
from qpeft.errors import UsageError
from qpeft.evaluation import EvalSettings, evaluate
from qpeft.io import read_json, write_json
from qpeft.methods import get_method
from qpeft.methods.base import EvalOptions
from qpeft.models import load_model, load_tokenizer
from qpeft.training import TrainSettings, check_compatible, train

log = logging.getLogger(__name__)

BASE = "base"  # the untrained base model, zero-shot, evaluated as a row of its own
FEWSHOT = "base-fewshot"  # the untrained base model with k solved training examples in every prompt
BASELINES = (BASE, FEWSHOT)


@dataclass
class Experiment:
    """What every method of a comparison shares."""

    model: str = "smollm2-135m"
    dataset: str = "e2e"
    input_column: str = "input"
    target_column: str = "target"
    validation_fraction: float = 0.05
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def validate(self) -> None:
        self.train.validate()
        self.eval.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Experiment:
        values = dict(values)
        train_settings = TrainSettings(**values.pop("train"))
        eval_settings = EvalSettings(**values.pop("eval"))
        return cls(**values, train=train_settings, eval=eval_settings)

    def load_data(self, data_dir: str | None) -> DataSplits:
        return load_splits(
            self.dataset, data_dir, self.input_column, self.target_column, self.validation_fraction, self.seed
        )


def run_config(experiment: Experiment, method: str, method_config: dict[str, Any]) -> dict[str, Any]:
    return {"method": method, "method_config": method_config, "experiment": experiment.to_dict()}


def claim_run_dir(run_dir: Path, config: dict[str, Any]) -> bool:
    """Create or reuse ``run_dir`` for ``config``; True when the run already finished.

    A folder that holds a different experiment is never touched.
    """
    config_path = run_dir / "config.json"
    if config_path.exists():
        existing = read_json(config_path)
        if existing != config:
            raise UsageError(f"{run_dir} holds a different experiment; choose another output folder")
        return (run_dir / "metrics.json").exists()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} is not empty and holds no qpeft run; choose another output folder")
    wait_for_everyone()  # every process has checked before the main one writes
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(config_path, config)
    wait_for_everyone()
    return False


def train_run(
    run_dir: Path, experiment: Experiment, method_name: str, method_config: dict[str, Any], data_dir: str | None
) -> dict[str, Any]:
    """Train and evaluate one method in ``run_dir`` (resuming if interrupted); returns its metrics."""
    method = get_method(method_name)
    config = method.config_class.from_dict(method_config)
    config.validate()
    experiment.validate()
    check_compatible(method, experiment.train)
    full_config = run_config(experiment, method_name, config.to_dict())
    splits = experiment.load_data(data_dir)  # bad data fails before anything is written
    tokenizer = load_tokenizer(experiment.model)
    model = load_model(experiment.model)
    if claim_run_dir(run_dir, full_config):
        log.info("%s: already finished in %s", method_name, run_dir)
        return read_json(run_dir / "metrics.json")
    model, figures = train(run_dir, model, tokenizer, method, config, splits, experiment.train, experiment.seed)
    return _evaluate_and_record(run_dir, model, tokenizer, experiment, splits, figures)


def base_run(run_dir: Path, experiment: Experiment, data_dir: str | None, fewshot: bool = False) -> dict[str, Any]:
    """Evaluate the untrained base model, so that every method's gain is visible.

    With ``fewshot`` every prompt starts with ``experiment.eval.fewshot_examples`` solved
    examples drawn (seeded) from the training split: what the base model does when it is told
    the task the fair way, without training.
    """
    experiment.validate()
    splits = experiment.load_data(data_dir)
    tokenizer = load_tokenizer(experiment.model)
    model = load_model(experiment.model)
    if claim_run_dir(run_dir, run_config(experiment, FEWSHOT if fewshot else BASE, {})):
        return read_json(run_dir / "metrics.json")
    figures: dict[str, Any] = {"trainable_params": 0, "base_params": sum(p.numel() for p in model.parameters()),
                               "trainable_pct": 0.0}
    shots = fewshot_shots(splits, experiment) if fewshot else []
    if fewshot:
        figures["fewshot_inputs"] = [shot.input for shot in shots]
    return _evaluate_and_record(run_dir, model, tokenizer, experiment, splits, figures, shots)


def fewshot_shots(splits: DataSplits, experiment: Experiment) -> list[Example]:
    """k training examples with distinct inputs, drawn with the experiment's seed (never from the test split)."""
    distinct = list({example.input: example for example in splits.train}.values())
    count = min(experiment.eval.fewshot_examples, len(distinct))
    return random.Random(experiment.seed).sample(distinct, count)


def test_sample(experiment: Experiment, splits: DataSplits) -> tuple[list[TestItem], list[int]]:
    """The test items a run scores, and their indices in the test split (a seeded sample, or all)."""
    seed = experiment.eval.sample_seed if experiment.eval.sample_seed is not None else experiment.seed
    indices = experiment.eval.sample_indices(len(splits.test), seed)
    return [splits.test[i] for i in indices], indices


def _evaluate_and_record(
    run_dir: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    experiment: Experiment,
    splits: DataSplits,
    figures: dict[str, Any],
    shots: list[Example] | None = None,
) -> dict[str, Any]:
    """Evaluate on the main process (the others wait) and write ``metrics.json`` last."""
    if not is_main_process():
        wait_for_everyone()
        return {}
    items, indices = test_sample(experiment, splits)
    scores = evaluate(
        model,
        tokenizer,
        items,
        experiment.train.template,
        experiment.train.max_length,
        experiment.eval,
        run_dir / "predictions.jsonl",
        stop_at_newline=experiment.eval.stops_at_newline(splits.train),
        shots=shots or (),
        item_indices=indices,
    )
    metrics = {**scores, "test_indices": indices, **figures}
    write_json(run_dir / "metrics.json", metrics)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    wait_for_everyone()
    return metrics


def load_run(run_dir: Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The trained model, its tokenizer and its config from a finished (or trained) run."""
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise UsageError(f"{run_dir} is not a qpeft run folder (no config.json)")
    config = read_json(config_path)
    experiment = Experiment.from_dict(config["experiment"])
    tokenizer = load_tokenizer(experiment.model)
    model = load_model(experiment.model)
    if config["method"] not in BASELINES:
        adapter_dir = run_dir / "adapter"
        if not adapter_dir.exists():
            raise UsageError(f"{run_dir} has no trained adapter yet; run training to the end first")
        model = get_method(config["method"]).load(model, adapter_dir)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer, config


def evaluate_run(
    run_dir: Path,
    data_dir: str | None,
    overrides: dict[str, Any],
    eval_options: EvalOptions | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """Re-evaluate a run, optionally with other generation settings or method eval options.

    With a ``tag`` the results go to ``metrics_<tag>.json`` / ``predictions_<tag>.jsonl``
    beside the run's own, which stay as they are.
    """
    model, tokenizer, config = load_run(run_dir)
    experiment = Experiment.from_dict(config["experiment"])
    for key, value in overrides.items():
        setattr(experiment.eval, key, value)
    experiment.validate()
    if eval_options is not None:
        get_method(config["method"]).set_eval_options(model, eval_options)
    splits = experiment.load_data(data_dir)
    suffix = f"_{tag}" if tag else ""
    previous = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
    items, indices = test_sample(experiment, splits)
    shots = fewshot_shots(splits, experiment) if config["method"] == FEWSHOT else ()
    scores = evaluate(
        model, tokenizer, items, experiment.train.template, experiment.train.max_length, experiment.eval,
        run_dir / f"predictions{suffix}.jsonl", stop_at_newline=experiment.eval.stops_at_newline(splits.train),
        shots=shots, item_indices=indices,
    )
    metrics = {**previous, **scores, "test_indices": indices, "eval_settings": asdict(experiment.eval)}
    write_json(run_dir / f"metrics{suffix}.json", metrics)
    return metrics

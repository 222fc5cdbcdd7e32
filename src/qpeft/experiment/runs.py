"""One run: train and evaluate a method (``train_run``), evaluate the base model (``base_run``),
re-evaluate (``evaluate_run``) or load (``load_run``) a finished run. The folder layout is ``run_dir``'s."""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from qpeft.data import DataSplits, Example, TestItem
from qpeft.evaluation.classification import evaluate_classification
from qpeft.evaluation.generate import evaluate
from qpeft.experiment.checks import check_experiment, check_method
from qpeft.experiment.results import BASE, BASELINES, FEWSHOT
from qpeft.experiment.run_dir import RunDir
from qpeft.methods import get_method
from qpeft.methods.base import EvalOptions
from qpeft.models import load_model, load_tokenizer
from qpeft.settings import EvalSettings, Experiment
from qpeft.training.trainer import train
from qpeft.utils.atomic import write_json
from qpeft.utils.distributed import is_main_process, wait_for_everyone

log = logging.getLogger(__name__)


def run_config(experiment: Experiment, method: str, method_config: dict[str, Any]) -> dict[str, Any]:
    return {"method": method, "method_config": method_config, "experiment": experiment.to_dict()}


def train_run(
    run_dir: Path,
    experiment: Experiment,
    method_name: str,
    method_config: dict[str, Any],
    data_dir: str | None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train and evaluate one method in ``run_dir`` (resuming if interrupted); returns its metrics.

    Everything that can be checked is checked before anything is written (``checks``). Training
    ends by recording its figures in ``training.json``; a run found trained is evaluated without
    training again. With ``evaluate`` False (a tuning trial) the run stops there and returns
    those figures: only the trial the tuning chooses is ever scored on the test set.
    """
    splits = check_experiment(experiment, {method_name: method_config}, data_dir)
    method = get_method(method_name)
    config = check_method(method_name, method_config, experiment)
    full_config = run_config(experiment, method_name, config.to_dict())
    tokenizer = load_tokenizer(experiment.model)
    model = load_model(experiment.model, split_qkv=experiment.split_qkv)
    run = RunDir(run_dir)
    with run.claimed(full_config) as finished:
        if finished:
            log.info("%s: already finished in %s", method_name, run_dir)
            return run.metrics()
        if run.is_trained():
            figures = run.training()
            if not evaluate:
                return figures
            model = method.load(model, run.trained_adapter())
        else:
            model, figures = train(run_dir, model, tokenizer, method, config, splits, experiment.train,
                                   experiment.seed)
            record_training(run, figures)
            if not evaluate:
                return figures
        return _evaluate_and_record(run_dir, model, tokenizer, experiment, splits, figures)


def record_training(run: RunDir, figures: dict[str, Any]) -> None:
    """Write ``training.json`` (the main process); the checkpoints, which only served to resume training, go."""
    if is_main_process():
        write_json(run.training_path, figures)
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    wait_for_everyone()


def base_run(run_dir: Path, experiment: Experiment, data_dir: str | None, fewshot: bool = False) -> dict[str, Any]:
    """Evaluate the untrained base model, so that every method's gain is visible.

    With ``fewshot`` every prompt starts with ``experiment.eval.fewshot_examples`` solved
    examples drawn (seeded) from the training split: what the base model does when it is told
    the task the fair way, without training.
    """
    splits = check_experiment(experiment, {}, data_dir)
    tokenizer = load_tokenizer(experiment.model)
    model = load_model(experiment.model, split_qkv=experiment.split_qkv)
    with RunDir(run_dir).claimed(run_config(experiment, FEWSHOT if fewshot else BASE, {})) as finished:
        if finished:
            return RunDir(run_dir).metrics()
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
    settings = experiment.eval
    if shots:
        # Every (input, reference) pair would carry the k solved examples: k + 1 times the other rows' cost
        # (on the demo, a sixth of its time) for a loss under another prompt than the methods'.
        settings = replace(settings, test_loss=False)
        figures = {**figures, "test_loss_note": "not computed for the few-shot row (k + 1 times as long prompts)"}
    scores = score_test_set(model, tokenizer, experiment, settings, splits, items, indices,
                            RunDir(run_dir).predictions(), shots or ())
    metrics = {**scores, "test_indices": indices, **figures}
    write_json(RunDir(run_dir).metrics_path, metrics)
    wait_for_everyone()
    return metrics


def score_test_set(
    model: torch.nn.Module,
    tokenizer: Any,
    experiment: Experiment,
    settings: EvalSettings,
    splits: DataSplits,
    items: list[TestItem],
    indices: list[int],
    predictions_path: Path,
    shots: Sequence[Example],
) -> dict[str, Any]:
    """The test scores of the experiment's task: generation metrics, or rank classification's."""
    stop_at_newline = experiment.eval.stops_at_newline(splits.train)
    template, max_length = experiment.train.template, experiment.train.max_length
    if experiment.task_type() == "classification":
        return evaluate_classification(model, tokenizer, items, splits.train, template, max_length, settings,
                                       predictions_path, stop_at_newline, shots, indices)
    return evaluate(model, tokenizer, items, template, max_length, settings, predictions_path,
                    stop_at_newline=stop_at_newline, shots=shots, item_indices=indices,
                    profile=experiment.metric_profile())


def load_run(run_dir: Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The trained model, its tokenizer and its config from a finished (or trained) run."""
    run = RunDir(run_dir)
    config = run.config()
    experiment = Experiment.from_dict(config["experiment"])
    tokenizer = load_tokenizer(experiment.model)
    model = load_model(experiment.model, split_qkv=experiment.split_qkv)
    if config["method"] not in BASELINES:
        model = get_method(config["method"]).load(model, run.trained_adapter())
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
    run = RunDir(run_dir)
    previous = run.metrics()
    items, indices = test_sample(experiment, splits)
    shots = fewshot_shots(splits, experiment) if config["method"] == FEWSHOT else ()
    scores = score_test_set(model, tokenizer, experiment, experiment.eval, splits, items, indices,
                            run.predictions(tag), shots)
    metrics = {**previous, **scores, "test_indices": indices, "eval_settings": asdict(experiment.eval)}
    write_json(run.tagged_metrics(tag), metrics)
    return metrics

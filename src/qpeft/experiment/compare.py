"""``qpeft compare``: every method under one experiment, then the analysis and ``results.json``.

The CLI renders the report from the payload ``compare`` returns (``qpeft.report``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from dataclasses import fields, replace
from pathlib import Path
from statistics import median
from typing import Any

import torch

from qpeft.analysis.capacity import summarise_capacity
from qpeft.analysis.convergence import convergence_figures, loss_curve, read_log
from qpeft.analysis.significance import CLASSIFICATION_METRICS, GENERATION_METRICS
from qpeft.analysis.timing import latency_figures, pair_ratios
from qpeft.data.prompts import encode_prompt
from qpeft.evaluation.latency import paired_generation_ms
from qpeft.experiment.checks import check_experiment
from qpeft.experiment.processes import isolated
from qpeft.experiment.results import BASE, FAILED, FEWSHOT, build_payload, read_predictions, write_results
from qpeft.experiment.run_dir import RunDir, claimed_comparison
from qpeft.experiment.runs import base_run, evaluate_run, load_run, train_run
from qpeft.experiment.tuning import WINDOW, check_tuning, chosen_config, read_tuning_record, trial_dir
from qpeft.experiment.tuning import tune as tune_methods
from qpeft.methods import REGISTRY, get_method
from qpeft.methods.base import EvalOptions
from qpeft.models import load_model, load_tokenizer
from qpeft.settings import AnalysisSettings, Experiment, TuneSettings
from qpeft.training.trainer import TrainingDiverged
from qpeft.utils.atomic import read_json, write_json
from qpeft.utils.distributed import is_main_process
from qpeft.utils.errors import UsageError

log = logging.getLogger(__name__)


def compare(
    output: Path,
    experiment: Experiment,
    methods: list[str],
    method_configs: dict[str, dict[str, Any]],
    data_dir: str | None,
    seeds: list[int] | None = None,
    analysis: AnalysisSettings | None = None,
    fresh_process: bool = True,
    tune: TuneSettings | None = None,
    method_of: dict[str, str] | None = None,
    tuned_from: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate each method once per seed (finished runs are kept), then analyse and report.

    One seed (default: ``experiment.seed``) keeps runs in ``output/<method>/``; several put
    each seed's comparison in ``output/seed-<s>/<method>/`` and report mean and spread.
    Each run trains in a fresh process (``fresh_process``) so that its peak memory is its own.
    A method that fails is recorded as such (``methods.<m>.status == "failed"``) and the rest run.
    With ``tune`` each method's learning rates are first chosen on the validation loss (``tuning``).
    ``methods`` are row names; ``method_of`` names the method of each that is not one (a variant).
    ``tuned_from``: the ``tuning.json`` the given learning rates were chosen by (checked against them).
    """
    if not methods:
        raise UsageError("--methods: name at least one method")
    if len(set(methods)) != len(methods):
        raise UsageError(f"--methods: name each method once, got {','.join(methods)}")
    rows = {name: (method_of or {}).get(name, name) for name in methods}
    seeds = list(seeds) if seeds else [experiment.seed]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds: name each seed once, got {seeds}")
    if len(seeds) > 1 and experiment.eval.sample_seed is None:
        # Every seed scores the same test sample, so that the bootstrap can pair items across seeds.
        experiment = replace(experiment, eval=replace(experiment.eval, sample_seed=seeds[0]))
    analysis = analysis or AnalysisSettings()
    analysis.validate()
    if analysis.reference not in (BASE, FEWSHOT, *REGISTRY, *rows):
        # A misspelt reference is bad input, not a silent switch to the base model (which stands in only
        # for a registered method that is not in this comparison).
        raise UsageError(f"--reference: {analysis.reference!r} is neither a method ({', '.join(REGISTRY)}) "
                         f"nor {BASE} / {FEWSHOT}")
    for method_name in set(rows.values()):
        robustness_settings(method_name, analysis.robustness)
    # every method, the data, the models: before the first method trains and before anything is written
    check_experiment(experiment, {name: method_configs.get(name, {}) for name in rows}, data_dir, rows)
    if tune is not None:
        check_tuning(output, replace(experiment, seed=seeds[0]), tune, rows, method_configs)
    if tune is not None and tuned_from is not None:
        raise UsageError("--tune and --tuned-from: tune here, or take the rates of a recorded tuning, not both")
    recorded = read_tuning_record(tuned_from, experiment, rows, method_configs) if tuned_from else None
    with contextlib.ExitStack() as claims:
        seed_dirs = claim_seed_dirs(claims, output, experiment, seeds)
        return compare_claimed(output, experiment, rows, method_configs, data_dir, seeds, seed_dirs, analysis,
                               fresh_process, tune, recorded)


def compare_claimed(
    output: Path,
    experiment: Experiment,
    methods: dict[str, str],
    method_configs: dict[str, dict[str, Any]],
    data_dir: str | None,
    seeds: list[int],
    seed_dirs: dict[int, Path],
    analysis: AnalysisSettings,
    fresh_process: bool,
    tune: TuneSettings | None,
    recorded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``compare`` once its checks passed and its folders are this process's (``methods``: row -> method).

    With ``tune`` every method's learning rates are first chosen on the validation loss
    (``tuning``) at the first seed, whose run of each method is then the chosen trial's.
    """
    run_dirs = {seed: {name: seed_dir / name for name in (BASE, FEWSHOT, *methods)}
                for seed, seed_dir in seed_dirs.items()}
    untrainable: dict[str, str] = {}
    tuning_records = recorded
    if tune is not None:
        first = replace(experiment, seed=seeds[0])
        tuned = tune_methods(output, first, methods, method_configs, data_dir, tune, fresh_process, claim=False)
        tuning_records = {"lr_factors": tune.factors(), "lr_extend": tune.lr_extend, "methods": tuned,
                          "source": None}
        method_configs = dict(method_configs)
        for name in methods:
            chosen = chosen_config(methods[name], method_configs.get(name, {}), tuned[name])
            if chosen is None:
                untrainable[name] = "every learning rate of the grid diverged"
                continue
            method_configs[name] = chosen
            run_dirs[seeds[0]][name] = trial_dir(output, name, tuned[name]["chosen_factor"])
    per_seed = {}
    for seed, seed_dir in seed_dirs.items():
        seed_experiment = replace(experiment, seed=seed)
        results = baseline_rows(seed_dir, seed_experiment, data_dir)
        for name in methods:
            log.info("=== %s%s ===", name, f" (seed {seed})" if len(seeds) > 1 else "")
            if name in untrainable:
                results[name] = {"status": FAILED, "error": untrainable[name]}
                continue
            run_dir = run_dirs[seed][name]
            results[name] = method_row(run_dir, seed_experiment, methods[name], method_configs.get(name, {}),
                                       data_dir, fresh_process)
            if is_main_process() and results[name].get("status") != FAILED:
                robustness = robustness_figures(run_dir, methods[name], results[name], data_dir,
                                                analysis.robustness)
                if robustness:
                    results[name]["robustness"] = robustness
            gc.collect()
        if not is_main_process():
            continue  # under a multi-process launcher only the main process analyses and writes
        per_seed[str(seed)] = analyse_seed(run_dirs[seed], seed_experiment, methods, results, data_dir, analysis)
        if len(seeds) > 1:
            seed_payload = build_payload(seed_experiment, [seed],
                                         method_configs_of(run_dirs[seed], methods, method_configs),
                                         {str(seed): per_seed[str(seed)]}, analysis, {seed: run_dirs[seed]})
            write_json(seed_dir / "results.json", seed_payload)
    if not is_main_process():
        return {}
    configs = method_configs_of(run_dirs[seeds[0]], methods, method_configs)
    # Several seeds share everything but the seed, which the payload lists under "seeds".
    shared = replace(experiment, seed=seeds[0] if len(seeds) == 1 else None)
    payload = build_payload(shared, seeds, configs, per_seed, analysis, run_dirs)
    add_learning_rates(payload, configs, tuning_records)
    write_results(output, payload)
    return payload



def add_learning_rates(payload: dict[str, Any], configs: dict[str, dict[str, Any]],
                       tuning: dict[str, Any] | None) -> None:
    """``methods.<m>.learning_rate`` (the rate each trained at), ``tuning.<m>`` (every trial) and whether,
    on which grid and by which record the rates were tuned (``learning_rates``): the report says which it was."""
    for name, config in configs.items():
        payload["methods"][name]["learning_rate"] = config.get("learning_rate")
    if tuning is None:
        payload["learning_rates"] = {"tuned": False}
        return
    records = tuning["methods"]
    payload["tuning"] = {name: record["trials"] for name, record in records.items()}
    payload["learning_rates"] = {"tuned": True, "grid": tuning["lr_factors"], "extend": tuning["lr_extend"],
                                 "window_share": WINDOW, "record": tuning["source"],
                                 "windows": {name: record.get("window") for name, record in records.items()},
                                 "edges": {name: record.get("edge") for name, record in records.items()}}


def baseline_rows(seed_dir: Path, experiment: Experiment, data_dir: str | None) -> dict[str, dict[str, Any]]:
    """The untrained base model, zero-shot and (unless ``fewshot_examples`` is 0) few-shot.

    They run in this process: they do not train, so they have no peak memory to keep apart.
    """
    rows = {BASE: base_run(seed_dir / BASE, experiment, data_dir)}
    if experiment.eval.fewshot_examples:
        rows[FEWSHOT] = base_run(seed_dir / FEWSHOT, experiment, data_dir, True)
    gc.collect()
    return rows


def method_row(run_dir: Path, experiment: Experiment, name: str, config: dict[str, Any], data_dir: str | None,
               fresh_process: bool) -> dict[str, Any]:
    """One method's metrics; a method that diverges or raises is a failed row, and the comparison goes on."""
    try:
        return {"status": "ok", **isolated(train_run, fresh_process, run_dir, experiment, name, config, data_dir)}
    except TrainingDiverged as error:
        message = str(error)
    except UsageError:
        raise  # bad input the checks before training could not see (a foreign run folder): stop
    except Exception as error:  # noqa: BLE001 - one method's failure must not lose the others' results
        log.exception("%s failed", name)
        message = f"{type(error).__name__}: {error}".splitlines()[0]
    log.error("%s: failed: %s", name, message)
    return {"status": FAILED, "error": message}


def method_configs_of(run_dirs: dict[str, Path], methods: list[str],
                      given: dict[str, dict[str, Any]]) -> dict[str, dict]:
    """Each method's full configuration as its run recorded it (the given flags for a run that never started)."""
    configs = {}
    for name in methods:
        run = RunDir(run_dirs[name])
        configs[name] = run.config()["method_config"] if run.config_path.exists() else given.get(name, {})
    return configs


ROBUSTNESS_FIGURES = (*GENERATION_METRICS, *CLASSIFICATION_METRICS, "test_loss")


def robustness_settings(method_name: str, spec: str) -> list[EvalOptions]:
    """The settings ``--robustness`` names for one method: its own grid, none, or ``OPTION=VALUE,...``.

    A listed setting applies to the methods whose inference options have that name (QAA's
    ``shots``, ``depolarizing``, ``gate_errors`` as 1q/2q/readout, ``device``); a method with no such
    options is not re-evaluated, and a name that none of the method's options has is refused.
    """
    method = get_method(method_name)
    if spec == "default":
        return method.robustness_grid()
    options_class = method.eval_options_class
    names = {item.name: item for item in fields(options_class)}
    if spec == "none" or not names:
        return []
    settings = []
    for item in spec.split(","):
        key, separator, value = item.strip().partition("=")
        if not separator or key not in names:
            raise UsageError(f"--robustness: {item.strip()!r} is not OPTION=VALUE with OPTION one of "
                             f"{', '.join(names)} ({method_name}'s inference options), 'default' or 'none'")
        kind = {"int": int, "float": float}.get(getattr(names[key].type, "__name__", names[key].type), str)
        try:
            options = options_class(**{key: kind(value)})
        except ValueError:
            raise UsageError(f"--robustness: {key} takes a{'n integer' if kind is int else ' number'}, "
                             f"got {value!r}") from None
        options.validate()
        settings.append(options)
    return settings


def robustness_figures(
    run_dir: Path, name: str, metrics: dict[str, Any], data_dir: str | None, spec: str = "default"
) -> list[dict[str, Any]]:
    """The run's quality under each setting ``spec`` names for its method (``robustness_settings``).

    Empty for methods without one. The first row is the run's own evaluation under the
    default options; each setting is a re-evaluation of the generated text into
    ``metrics_<tag>.json`` (with the test loss where nothing is sampled: under sampled shots
    it costs more than the rest together), reused when that file exists, so an interrupted
    comparison resumes where it stopped.
    """
    method = get_method(name)
    grid = robustness_settings(name, spec)
    if not grid:
        return []
    run = RunDir(run_dir)
    rows = [{**method.eval_options_class().describe(), **{k: metrics.get(k) for k in ROBUSTNESS_FIGURES},
             "predictions_unchanged_pct": 100.0}]
    for options in grid:
        tag = options.tag()
        path = run.tagged_metrics(tag)
        if path.exists():
            scores = read_json(path)
        else:
            log.info("%s: re-evaluating under %s", name, tag)
            # not the E2E suite: the grid reports ROBUSTNESS_FIGURES only
            scores = evaluate_run(run_dir, data_dir, {"test_loss": not options.draws_samples(), "metrics": "default"},
                                  options, tag)
        rows.append({**options.describe(), "tag": tag, **{k: scores.get(k) for k in ROBUSTNESS_FIGURES},
                     "predictions_unchanged_pct": unchanged_pct(run.predictions(), run.predictions(tag))})
        gc.collect()
    return rows


def unchanged_pct(reference: Path, other: Path) -> float | None:
    """Share of test items (in %) whose prediction in ``other`` is the same text as in ``reference``."""
    if not (reference.exists() and other.exists()):
        return None
    first = {row["index"]: row["prediction"] for row in read_predictions(reference)}
    second = {row["index"]: row["prediction"] for row in read_predictions(other)}
    shared = first.keys() & second.keys()
    return 100.0 * sum(first[i] == second[i] for i in shared) / len(shared) if shared else None


def claim_seed_dirs(claims: contextlib.ExitStack, output: Path, experiment: Experiment,
                    seeds: list[int]) -> dict[int, Path]:
    """Claim ``output`` (and one folder per seed when there are several) before any work, held until ``claims`` closes.

    Each folder records its experiment in ``experiment.json``; one holding another is refused.
    """
    if len(seeds) == 1:
        claims.enter_context(claimed_comparison(output, replace(experiment, seed=seeds[0])))
        return {seeds[0]: output}
    # The top folder holds the experiment without a seed, so further seeds can be added later.
    claims.enter_context(claimed_comparison(output, replace(experiment, seed=None)))
    seed_dirs = {seed: output / f"seed-{seed}" for seed in seeds}
    for seed, seed_dir in seed_dirs.items():
        claims.enter_context(claimed_comparison(seed_dir, replace(experiment, seed=seed)))
    return seed_dirs


def analyse_seed(
    run_dirs: dict[str, Path],
    experiment: Experiment,
    methods: dict[str, str],
    results: dict[str, dict[str, Any]],
    data_dir: str | None,
    settings: AnalysisSettings,
) -> dict[str, Any]:
    """Convergence from each train log, capacity and same-process latency from the saved runs (``methods``:
    row -> method).

    A failed method keeps its row and its loss curve up to the failure; it has no model to measure.
    """
    figures = {name: dict(values) for name, values in results.items()}
    curves = {}
    for name in methods:
        log_path = RunDir(run_dirs[name]).train_log
        train_log = read_log(log_path) if log_path.exists() else {}
        if not train_log.get("step"):
            continue
        figures[name].update(convergence_figures(
            train_log, settings.convergence_margin, settings.loss_fractions, settings.tail_fraction,
            total_steps=experiment.train.steps,
        ))
        curves[name] = loss_curve(train_log)
    finished = {name: method for name, method in methods.items() if results[name].get("status") != FAILED}
    capacity, latency, errors = measure_models(run_dirs, experiment, finished, data_dir, settings)
    for name, entries in capacity.items():
        figures[name].update(summarise_capacity(entries))
    for name, message in errors.items():
        figures[name]["capacity_error"] = message
    for name in figures:
        figures[name].update(latency.get(name, {}))
    return {"methods": figures, "curves": curves, "capacity": capacity}


def sample_prompt_ids(experiment: Experiment, data_dir: str | None, count: int) -> torch.Tensor:
    """(N, L) token ids of the first N test prompts, cut to the shortest so no padding is involved."""
    tokenizer = load_tokenizer(experiment.model)
    items = experiment.load_data(data_dir).test[:count]
    prompts = [encode_prompt(item.input, tokenizer, experiment.train.template) for item in items]
    width = min(len(p) for p in prompts)
    return torch.tensor([p[:width] for p in prompts])


def measure_models(
    run_dirs: dict[str, Path],
    experiment: Experiment,
    methods: dict[str, str],
    data_dir: str | None,
    settings: AnalysisSettings,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, str]]:
    """Capacity entries per method, generation latency figures per model, and capacity errors.

    All in this process, one trained model at a time, each timed in turns with the bare base model:
    ``latency_vs_base`` is the median of the pairs' ratios, with its distribution-free interval
    (``analysis.timing.latency_figures``). A method whose capacity hook fails gets no entries and its
    error, and the rest goes on.
    """
    ids = sample_prompt_ids(experiment, data_dir, settings.sample_prompts)
    base_model = load_model(experiment.model, split_qkv=experiment.split_qkv)
    if torch.cuda.is_available():
        base_model = base_model.to("cuda")
    base_model.eval()
    ids = ids.to(next(base_model.parameters()).device)
    latency: dict[str, dict[str, Any]] = {}
    base_samples = []
    capacity: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for name in methods:
        model, _, _ = load_run(run_dirs[name])
        model.eval()
        try:
            capacity[name] = get_method(methods[name]).capacity(model, base_model, ids)
        except Exception as error:  # noqa: BLE001 - one method's analysis must not lose the others' report
            log.exception("%s: capacity analysis failed", name)
            capacity[name] = {}
            errors[name] = f"{type(error).__name__}: {error}"
        ours, base = paired_generation_ms(model, base_model, ids, settings.latency_new_tokens,
                                          settings.latency_repeats)
        latency[name] = {"latency_ms_per_token": median(ours),
                         **latency_figures(pair_ratios(ours, base), settings.confidence)}
        base_samples += base
        del model
        gc.collect()
    latency[BASE] = {"latency_ms_per_token": median(base_samples), "latency_vs_base": 1.0} if base_samples else {}
    del base_model
    gc.collect()
    return capacity, latency, errors

"""What a comparison writes: the row names, the columns of ``results.csv`` and the ``results.json`` payload.

This is the one schema that the experiment writes and the report reads, so it imports nothing
heavier than the pure analysis: presentation code takes the names ``BASE``, ``FEWSHOT`` and
``BASELINES`` from here, never from the orchestration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qpeft.analysis.seeds import aggregate_methods
from qpeft.analysis.significance import (
    CLASSIFICATION_METRICS,
    GENERATION_METRICS,
    TASK_METRICS,
    SystemScores,
    bootstrap_comparison,
)
from qpeft.analysis.timing import latency_figures
from qpeft.settings import AnalysisSettings, Experiment
from qpeft.utils.atomic import write_csv, write_json
from qpeft.utils.errors import UsageError
from qpeft.utils.version import __version__

BASE = "base"  # the untrained base model, zero-shot, evaluated as a row of its own
FEWSHOT = "base-fewshot"  # the untrained base model with k solved training examples in every prompt
BASELINES = (BASE, FEWSHOT)
FAILED = "failed"  # the ``status`` of a method that diverged or raised; its row stays in the results

RESULT_COLUMNS = [
    "status", *GENERATION_METRICS, *CLASSIFICATION_METRICS, "majority_accuracy", "test_loss", "validation_loss",
    "max_new_tokens_reached_pct", "trainable_params", "trainable_pct", "peak_memory_mb", "train_tokens_per_s",
    "train_seconds", "final_train_loss", "adapter_bytes", "generation_ms_per_token",
]

# Figures the comparative analysis adds (``compare.analyse_seed``); results.csv lists them after RESULT_COLUMNS.
ANALYSIS_COLUMNS = [
    "latency_ms_per_token", "latency_vs_base", "latency_vs_base_low", "latency_vs_base_high",
    "best_smoothed_loss", "loss_drop_pct", "steps_to_margin", "steps_to_margin_pct", "loss_at_25pct", "loss_at_50pct",
    "final_smoothed_loss", "loss_tail_std", "grad_norm_median", "grad_norm_p95", "grad_norm_max",
    "non_finite_steps", "capacity_modules", "update_jacobian_rank_min", "update_jacobian_rank_median",
    "update_jacobian_rank_max", "effective_rank_min", "effective_rank_median", "effective_rank_max",
]


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"qpeft": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def build_payload(
    experiment: Experiment,
    seeds: list[int],
    method_configs: dict[str, dict[str, Any]],
    per_seed: dict[str, dict[str, Any]],
    analysis: AnalysisSettings,
    run_dirs: dict[int, dict[str, Path]] | None = None,
) -> dict[str, Any]:
    """results.json: the figures of every seed, their mean (``methods``) and spread (``aggregate``),
    and each quality figure's bootstrap interval and p-value against the reference row.

    ``run_dirs`` holds, per seed, each row's run folder (whose predictions the bootstrap reads).
    """
    means, spread = aggregate_methods({seed: values["methods"] for seed, values in per_seed.items()})
    pool_latency(means, spread, per_seed, analysis.confidence)
    task = experiment.task_type()
    statistics = quality_statistics(run_dirs, per_seed, analysis, TASK_METRICS[task]) if run_dirs else {}
    for name, values in statistics.get("methods", {}).items():
        means[name].update(values)
    if run_dirs:
        add_robustness_p_values(run_dirs, means, analysis, TASK_METRICS[task])
    return {
        "experiment": experiment.to_dict(),
        "task": task,
        "seeds": list(seeds),
        "method_configs": method_configs,
        "versions": versions(),
        "analysis": {**analysis.to_dict(), "reference": statistics.get("reference"),
                     "bootstrap_note": statistics.get("note")},
        "test_sample": test_sample_record(means),
        "methods": means,
        "aggregate": spread,
        "per_seed": per_seed,
    }


def pool_latency(means: dict[str, dict[str, Any]], spread: dict[str, dict[str, Any]],
                 per_seed: dict[str, dict[str, Any]], confidence: float) -> None:
    """Each method's latency against the base model from the timing pairs of all its seeds together: the
    median and interval of the pooled ratios, in place of the mean of each seed's median and bounds."""
    for name, figures in means.items():
        ratios = [r for seed in per_seed.values() for r in seed["methods"].get(name, {}).get("latency_ratios") or []]
        if not ratios:
            continue
        pooled = latency_figures(ratios, confidence)
        figures.update(pooled)
        for key in pooled.keys() - {"latency_vs_base"}:  # the spread of the seeds' medians stays
            spread.get(name, {}).pop(key, None)


def test_sample_record(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Which test items every row scored (the base row's, which all rows share)."""
    base = methods.get(BASE, {})
    return {"items": base.get("test_items"), "indices": base.get("test_indices")}


def quality_statistics(
    run_dirs: dict[int, dict[str, Path]], per_seed: dict[str, dict[str, Any]], settings: AnalysisSettings,
    metrics: tuple[str, ...] = GENERATION_METRICS,
) -> dict[str, Any]:
    """``ci`` and ``p_vs_reference`` per row from a paired bootstrap over the test items (and seeds).

    Rows that failed in any seed are left out. Every row must have scored the same items in the
    same order (they do: one seeded sample); otherwise nothing is claimed and ``note`` says why.
    """
    rows_of_seeds = [values["methods"] for values in per_seed.values()]
    names = [name for name in rows_of_seeds[0]
             if all(rows.get(name, {}).get("status", "ok") != FAILED and name in rows for rows in rows_of_seeds)]
    systems: dict[str, list[SystemScores]] = {}
    references, indices = None, None
    for name in names:
        systems[name] = []
        for rows_dirs in run_dirs.values():
            rows = read_predictions(rows_dirs[name] / "predictions.jsonl")
            row_indices = [row.get("index") for row in rows]
            if indices is None:
                indices, references = row_indices, [row["references"] for row in rows]
            if row_indices != indices:
                return {"note": f"{name} scored other test items than {names[0]}: no intervals or p-values"}
            systems[name].append(system_scores(rows))
    if not systems or not references:
        return {}
    reference = settings.reference if settings.reference in systems else BASE
    stats = bootstrap_comparison(systems, references, reference_method=reference,
                                 resamples=settings.bootstrap_resamples, seed=min(run_dirs),
                                 confidence=settings.confidence, metrics=metrics)
    return {"reference": reference, "methods": {name: {"ci": values["ci"], "p_vs_reference": values["p_vs_reference"]}
                                                for name, values in stats.items()}}


def system_scores(rows: list[dict[str, Any]]) -> SystemScores:
    """A predictions file's rows as the bootstrap pairs them: the texts and each metric's per-item scores."""
    scores = {metric: [row["scores"][metric] for row in rows] for metric in rows[0]["scores"]} if rows else {}
    return SystemScores([row["prediction"] for row in rows], scores)


def add_robustness_p_values(run_dirs: dict[int, dict[str, Path]], means: dict[str, dict[str, Any]],
                            settings: AnalysisSettings, metrics: tuple[str, ...]) -> None:
    """``p_vs_exact`` on each re-evaluation row of a robustness list: the paired bootstrap of its predictions
    against the run's own (the same items, over the same seeds), so that a setting's change is called one only
    where the sample can tell it from the items' spread. A row whose predictions are missing, or cover other
    items, gets none."""
    # here, not at the top: the report imports this module, and run folders bring in accelerate and torch
    from qpeft.experiment.run_dir import RunDir

    for name, figures in means.items():
        rows = [row for row in figures.get("robustness") or [] if isinstance(row.get("tag"), str) and row["tag"]]
        runs = [RunDir(dirs[name]) for dirs in run_dirs.values()]
        if not rows or not all(run.predictions().exists() for run in runs):
            continue
        exact = [read_predictions(run.predictions()) for run in runs]
        if not all(exact):
            continue
        for row in rows:
            if not all(run.predictions(row["tag"]).exists() for run in runs):
                continue
            tagged = [read_predictions(run.predictions(row["tag"])) for run in runs]
            if any(_indices(own) != _indices(other) for own, other in zip(exact, tagged, strict=True)):
                continue
            systems = {"exact": [system_scores(own) for own in exact], "tagged": [system_scores(t) for t in tagged]}
            stats = bootstrap_comparison(systems, [item["references"] for item in exact[0]], reference_method="exact",
                                         resamples=settings.bootstrap_resamples, seed=min(run_dirs),
                                         confidence=settings.confidence, metrics=metrics)
            row["p_vs_exact"] = stats["tagged"]["p_vs_reference"]


def _indices(predictions: list[dict[str, Any]]) -> list[Any]:
    return [item.get("index") for item in predictions]


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``predictions.jsonl`` (JSON only; a malformed file is a one-line error)."""
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: cannot read the predictions ({error})") from None


def write_results(output: Path, payload: dict[str, Any]) -> None:
    """results.json and results.csv (a row per method and seed, plus mean and std rows with several seeds)."""
    write_json(output / "results.json", payload)
    rows = [{"method": name, "seed": seed, **figures}
            for seed, values in payload["per_seed"].items() for name, figures in values["methods"].items()]
    if len(payload["seeds"]) > 1:
        for name, figures in payload["aggregate"].items():
            rows.append({"method": name, "seed": "mean", **payload["methods"][name]})
            rows.append({"method": name, "seed": "std",
                         **{k: v.get("std") for k, v in figures.items() if isinstance(v, dict) and "std" in v}})
    write_csv(output / "results.csv", rows, ["method", "seed", *RESULT_COLUMNS, *ANALYSIS_COLUMNS])

"""The handlers of the ``qpeft`` subcommands: each takes the parsed arguments and prints its result."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from qpeft.cli.parser import (
    collect_dataclass_flags,
    eval_overrides,
    experiment_from_args,
    parse_seeds,
    tune_settings_from_args,
)
from qpeft.evaluation.generate import generate
from qpeft.experiment.compare import compare
from qpeft.experiment.results import FAILED
from qpeft.experiment.run_dir import RunDir
from qpeft.experiment.runs import evaluate_run, load_run, train_run
from qpeft.experiment.tasks import compare_tasks, parse_datasets
from qpeft.experiment.tuning import tune
from qpeft.experiment.variants import parse_variants, row_configs, rows_of
from qpeft.methods import REGISTRY, get_method
from qpeft.methods.qaa.model import read_adapter as read_qaa_adapter
from qpeft.methods.qaa.qasm import check_version, export_qasm
from qpeft.methods.sora.export import export_lora
from qpeft.methods.sora.model import read_adapter as read_sora_adapter
from qpeft.report import write_cross_task_report, write_report
from qpeft.report.cross_task import cross_task_rows
from qpeft.report.tables import markdown_table, summary_table
from qpeft.settings import AnalysisSettings, Experiment


def run_train(args: argparse.Namespace) -> None:
    get_method(args.method)  # an unknown name is a one-line error
    config = collect_dataclass_flags(args, args.method)
    if args.learning_rate is not None:
        config["learning_rate"] = args.learning_rate
    metrics = train_run(args.output, experiment_from_args(args), args.method, config, args.data_dir)
    print(format_metrics(metrics))


def comparison_rows(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The rows of ``compare`` / ``tune`` (``--methods``, then ``--variants``: row -> method) and each one's options."""
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    for name in methods:
        get_method(name)  # an unknown name is a one-line error
    variants = parse_variants(args.variants)
    rows = rows_of(methods, variants)
    flags = {name: collect_dataclass_flags(args, name) for name in set(rows.values())}
    return rows, row_configs(rows, variants, flags)


def run_compare(args: argparse.Namespace) -> int:
    rows, configs = comparison_rows(args)
    analysis = AnalysisSettings(convergence_margin=args.convergence_margin, reference=args.reference,
                                bootstrap_resamples=args.bootstrap_resamples, latency_repeats=args.latency_repeats,
                                robustness=args.robustness)
    experiment = experiment_from_args(args)
    failed: list[str] = []

    def compare_one(output: Path, task_experiment: Experiment) -> dict[str, Any]:
        payload = compare(output, task_experiment, list(rows), configs, args.data_dir,
                          seeds=parse_seeds(args.seeds), analysis=analysis, fresh_process=not args.same_process,
                          tune=tune_settings_from_args(args) if args.tune else None, method_of=rows,
                          tuned_from=args.tuned_from)
        if payload:  # empty on another process than the main one under a multi-process launcher
            write_report(output, payload)
            print(summary_table(payload))
            print(f"\nreport: {output / 'report.md'} and {output / 'report.html'}")
            failed.extend(name for name, figures in payload["methods"].items() if figures.get("status") == FAILED)
        return payload

    if args.datasets is None:
        compare_one(args.output, experiment)
    else:
        summary = compare_tasks(args.output, experiment, parse_datasets(args.datasets), rows, configs, args.data_dir,
                                compare_one)
        if summary:
            write_cross_task_report(args.output, summary)
            print(markdown_table(*cross_task_rows(summary)))
            print(f"\ncross-task report: {args.output / 'report.md'} and {args.output / 'report.html'}")
    if failed:
        print(f"qpeft: {', '.join(sorted(set(failed)))} failed (see the report); the other rows are complete",
              file=sys.stderr)
        return 1
    return 0


def run_tune(args: argparse.Namespace) -> None:
    rows, configs = comparison_rows(args)
    records = tune(args.output, experiment_from_args(args), rows, configs, args.data_dir,
                   tune_settings_from_args(args), fresh_process=not args.same_process)
    print(tuning_table(records))
    print(f"\nchosen rates: {args.output / 'tuning' / 'tuned.yaml'} (qpeft compare --config reads it)")


def tuning_table(records: dict[str, dict[str, Any]]) -> str:
    """One line per trial: method, learning rate, validation loss (or how it ended), the chosen one marked."""
    lines = [f"{'method':<10} {'learning rate':>13} {'validation loss':>16}"]
    for name, record in records.items():
        for trial in record["trials"]:
            loss = trial["validation_loss"]
            shown = f"{loss:.4f}" if loss is not None else trial["status"]
            mark = "  <- chosen" if trial["factor"] == record["chosen_factor"] else ""
            lines.append(f"{name:<10} {trial['learning_rate']:>13.3g} {shown:>16}{mark}")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> None:
    method = REGISTRY.get(RunDir(args.run_dir).config()["method"])
    options = None
    if method is not None:
        options = method.eval_options_class(**collect_dataclass_flags(args, method.name))
    metrics = evaluate_run(args.run_dir, args.data_dir, eval_overrides(args), options, args.tag)
    print(format_metrics(metrics))


def run_generate(args: argparse.Namespace) -> None:
    model, tokenizer, config = load_run(args.run_dir)
    experiment = Experiment.from_dict(config["experiment"])
    settings = experiment.eval
    settings.max_new_tokens = args.max_new_tokens or settings.max_new_tokens
    settings.num_beams = args.num_beams or settings.num_beams
    settings.validate()
    # Stop as the run's own evaluation did ("auto" was resolved against its training targets then).
    stop = RunDir(args.run_dir).metrics().get("stop_at_newline")
    stop = settings.stop_at_newline == "on" if stop is None else bool(stop)
    completions, _ = generate(model, tokenizer, args.input, experiment.train.template, settings, progress=False,
                              stop_at_newline=stop)
    for completion in completions:
        print(completion)


def run_sora_export(args: argparse.Namespace) -> None:
    adapter_dir = RunDir(args.run_dir).require("sora", "SoRA")
    summary = export_lora(read_sora_adapter(adapter_dir), args.out_dir)
    ranks = summary["ranks"]
    print(f"LoRA adapter: {args.out_dir} ({summary['modules_kept']} of {len(ranks)} modules kept, "
          f"{summary['params_before_pruning']:,} -> {summary['params_after_pruning']:,} parameters)")


def run_qasm(args: argparse.Namespace) -> None:
    check_version(args.version)
    adapter_dir = RunDir(args.run_dir).require("qaa", "QAA", "only QAA adapters are quantum circuits")
    folder = args.output if args.output is not None else args.run_dir / "qasm"
    written = export_qasm(read_qaa_adapter(adapter_dir), folder, args.version, run=str(args.run_dir))
    print(f"OpenQASM: {len(written)} files in {folder} (index.json lists the circuits)")


def format_metrics(metrics: dict[str, Any]) -> str:
    keys = ["bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1", "test_loss", "trainable_params", "trainable_pct"]
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in keys if isinstance(metrics.get(k), (int, float)))


COMMANDS = {"train": run_train, "compare": run_compare, "tune": run_tune, "evaluate": run_evaluate,
            "generate": run_generate, "sora-export": run_sora_export, "qasm": run_qasm}

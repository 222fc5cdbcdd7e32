"""The ``qpeft`` argument parser, and the settings it fills in.

Every method's config field becomes a flag ``--<method>-<field>`` (e.g. ``--lora-r``),
and every field of its eval options one on ``qpeft evaluate``, so a new method needs
no change here. A flag's help is its field's ``metadata["help"]`` followed by its default,
for the settings flags too, so the text lives once, on the field.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from qpeft.data import TASK_TYPES
from qpeft.methods import REGISTRY
from qpeft.settings import (
    METRIC_PROFILES,
    PRECISIONS,
    STOP_MODES,
    AnalysisSettings,
    EvalSettings,
    Experiment,
    TrainSettings,
    TuneSettings,
)
from qpeft.utils.errors import UsageError

DESCRIPTION = "The ``qpeft`` command: train, evaluate, generate, compare."


def field_flag(prefix: str, name: str) -> str:
    return f"--{prefix}-{name.replace('_', '-')}"


def field_help(cls: type, name: str) -> str:
    """The help text a dataclass field carries (``field(metadata={"help": ...})``)."""
    return next(f for f in fields(cls) if f.name == name).metadata["help"]


def flag_help(cls: type, name: str, default: Any) -> str:
    """A field's help text followed by its flag's default, as argparse takes it: argparse formats help with %,
    so a literal % (a field's "95%", a default's) is doubled."""
    return f"{field_help(cls, name)} (default {default})".replace("%", "%%")


def add_dataclass_flags(parser: argparse.ArgumentParser, prefix: str, cls: type) -> None:
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        kind = type(default)
        dest = f"{prefix}__{f.name}"
        help_text = flag_help(cls, f.name, default)
        if kind is bool:
            parser.add_argument(field_flag(prefix, f.name), dest=dest, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(field_flag(prefix, f.name), dest=dest, type=kind, default=None,
                                metavar=kind.__name__.upper(), help=help_text)


def collect_dataclass_flags(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    marker = f"{prefix}__"
    return {k[len(marker):]: v for k, v in vars(args).items() if k.startswith(marker) and v is not None}


def add_setting_flag(group: argparse._ActionsContainer, settings: Any, name: str, **options: Any) -> None:
    """``--<name>`` for the field ``name`` of a settings object: its value is the default, its help the help."""
    default = getattr(settings, name)
    group.add_argument(f"--{name.replace('_', '-')}", default=default, help=flag_help(type(settings), name, default),
                       **options)


def add_tuning_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("learning-rate tuning")
    settings = TuneSettings()
    add_setting_flag(group, settings, "lr_grid", metavar="N|F1,F2,...")
    add_setting_flag(group, settings, "lr_extend", type=int, metavar="N")
    add_setting_flag(group, settings, "storage", metavar="URL")


def add_variants_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", default=None, metavar="JSON",
                        help="named configurations of a method as rows of their own, e.g. "
                             "'{\"lora-r4\": {\"method\": \"lora\", \"r\": 4}}' (in a --config file: variants: ...)")


def tune_settings_from_args(args: argparse.Namespace) -> TuneSettings:
    return TuneSettings(lr_grid=args.lr_grid, lr_extend=args.lr_extend, storage=args.storage)


def add_experiment_flags(parser: argparse.ArgumentParser) -> None:
    experiment, train = Experiment(), TrainSettings()
    data = parser.add_argument_group("model and data")
    add_setting_flag(data, experiment, "model")
    add_setting_flag(data, experiment, "split_qkv", action="store_true")
    add_setting_flag(data, experiment, "dataset")
    add_setting_flag(data, experiment, "task", choices=["auto", *TASK_TYPES])
    data.add_argument("--data-dir", default=None,
                      help="folder holding the built-in data sets e2e/, dart/, sst2/, rte/ (default: $QPEFT_DATA_DIR)")
    add_setting_flag(data, experiment, "input_column")
    add_setting_flag(data, experiment, "target_column")
    add_setting_flag(data, experiment, "validation_fraction", type=float)
    add_setting_flag(data, train, "template", choices=["plain", "chat"])
    add_setting_flag(data, experiment, "seed", type=int)
    budget = parser.add_argument_group("training budget")
    for name in ("steps", "batch_size", "grad_accum", "max_length"):
        add_setting_flag(budget, train, name, type=int)
    for name in ("warmup_ratio", "weight_decay", "label_smoothing"):
        add_setting_flag(budget, train, name, type=float)
    add_setting_flag(budget, train, "save_steps", type=int)
    add_setting_flag(budget, train, "precision", choices=PRECISIONS)
    add_setting_flag(budget, train, "gradient_checkpointing", action="store_true")
    for name in ("eval_steps", "validation_items"):
        add_setting_flag(budget, train, name, type=int)
    add_eval_flags(parser, EvalSettings())


def add_eval_flags(parser: argparse.ArgumentParser, defaults: EvalSettings | None) -> None:
    """Generation flags; with ``defaults`` None every flag defaults to 'keep the run's value'."""
    group = parser.add_argument_group("evaluation")

    def add(flag: str, name: str, **options: Any) -> None:
        default = getattr(defaults, name) if defaults else None
        shown = "the run's value" if defaults is None else default
        group.add_argument(flag, default=default, help=flag_help(EvalSettings, name, shown), **options)

    add("--max-new-tokens", "max_new_tokens", type=int)
    add("--num-beams", "num_beams", type=int)
    add("--length-penalty", "length_penalty", type=float)
    add("--no-repeat-ngram-size", "no_repeat_ngram_size", type=int)
    add("--eval-batch-size", "batch_size", type=int)
    add("--max-test-items", "max_test_items", type=int)
    add("--bertscore-model", "bertscore_model")
    add("--bertscore-num-layers", "bertscore_num_layers", type=int)
    add("--stop-at-newline", "stop_at_newline", choices=STOP_MODES)
    add("--fewshot-examples", "fewshot_examples", type=int)
    add("--metrics", "metrics", choices=METRIC_PROFILES)


def eval_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {"max_new_tokens": "max_new_tokens", "num_beams": "num_beams", "length_penalty": "length_penalty",
             "no_repeat_ngram_size": "no_repeat_ngram_size", "eval_batch_size": "batch_size",
             "max_test_items": "max_test_items", "bertscore_model": "bertscore_model",
             "bertscore_num_layers": "bertscore_num_layers",
             "stop_at_newline": "stop_at_newline", "fewshot_examples": "fewshot_examples", "metrics": "metrics"}
    return {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag) is not None}


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    train = TrainSettings(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, max_length=args.max_length,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        save_steps=args.save_steps,
        precision=args.precision, gradient_checkpointing=args.gradient_checkpointing, template=args.template,
        eval_steps=args.eval_steps, validation_items=args.validation_items,
    )
    return Experiment(
        model=args.model, split_qkv=args.split_qkv, dataset=args.dataset, task=args.task,
        input_column=args.input_column, target_column=args.target_column,
        validation_fraction=args.validation_fraction, seed=args.seed, train=train,
        eval=EvalSettings(**eval_overrides(args)),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpeft", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train and evaluate one method into a run folder")
    train.add_argument("--method", required=True, help=f"one of {', '.join(REGISTRY)}")
    train.add_argument("--output", required=True, type=Path, help="run folder")
    train.add_argument("--learning-rate", type=float, default=None, help="override the method's default")
    add_experiment_flags(train)

    compare = commands.add_parser("compare", help="train and evaluate several methods under one budget")
    compare.add_argument("--methods", default=",".join(REGISTRY),
                         help="comma-separated method names (default: all)")
    compare.add_argument("--output", required=True, type=Path, help="output folder")
    compare.add_argument("--seeds", default=None, metavar="S1,S2,...",
                         help="run everything once per seed (into OUTPUT/seed-<s>/) and report mean and standard "
                              "deviation; overrides --seed")
    compare.add_argument("--datasets", default=None, metavar="D1,D2,...",
                         help="run the same comparison on each data set into OUTPUT/<task>/ and write a cross-task "
                              "summary (OUTPUT/summary.json, report.md, report.html); overrides --dataset")
    analysis = AnalysisSettings()
    add_setting_flag(compare, analysis, "convergence_margin", type=float, metavar="FRACTION")
    add_setting_flag(compare, analysis, "reference")
    compare.add_argument("--same-process", action="store_true",
                         help="train every method in this process (starts faster; each method's peak memory then "
                              "includes what the methods before it left behind)")
    add_setting_flag(compare, analysis, "bootstrap_resamples", type=int)
    add_setting_flag(compare, analysis, "latency_repeats", type=int)
    add_setting_flag(compare, analysis, "robustness", metavar="default|none|OPTION=VALUE,...")
    compare.add_argument("--tune", action="store_true",
                         help="first choose every method's learning rates on the validation loss, on one grid "
                              "(as qpeft tune; the chosen trial is the method's run)")
    compare.add_argument("--tuned-from", type=Path, default=None, metavar="TUNING_JSON",
                         help="the tuning.json the learning rates were chosen by (a tuned.yaml names it): checked "
                              "against them, and the report says the rates were tuned")
    add_tuning_flags(compare)
    add_variants_flag(compare)
    add_experiment_flags(compare)

    tune = commands.add_parser("tune", help="choose every method's learning rates on the validation loss, one grid "
                                            "for all (several processes on one output share the trials)")
    tune.add_argument("--methods", default=",".join(REGISTRY), help="comma-separated method names (default: all)")
    tune.add_argument("--output", required=True, type=Path, help="output folder (trials under OUTPUT/tuning/)")
    tune.add_argument("--same-process", action="store_true", help="train every trial in this process")
    add_tuning_flags(tune)
    add_variants_flag(tune)
    add_experiment_flags(tune)

    evaluate = commands.add_parser("evaluate", help="(re)evaluate a trained run")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--data-dir", default=None,
                          help="folder holding the built-in data sets (default: $QPEFT_DATA_DIR)")
    evaluate.add_argument("--tag", default="", help="write metrics_<tag>.json instead of metrics.json")
    add_eval_flags(evaluate, None)

    generate = commands.add_parser("generate", help="print completions from a trained run")
    generate.add_argument("run_dir", type=Path)
    generate.add_argument("--input", action="append", required=True, help="an input text (repeatable)")
    generate.add_argument("--max-new-tokens", type=int, default=None,
                          help=flag_help(EvalSettings, "max_new_tokens", "the run's value"))
    generate.add_argument("--num-beams", type=int, default=None,
                          help=flag_help(EvalSettings, "num_beams", "the run's value"))

    sora_export = commands.add_parser("sora-export", help="prune a trained SoRA run into a plain PEFT LoRA adapter")
    sora_export.add_argument("run_dir", type=Path, help="a finished SoRA run folder")
    sora_export.add_argument("out_dir", type=Path, help="folder for adapter_config.json + adapter_model.safetensors")

    qasm = commands.add_parser("qasm", help="write each trained QAA circuit as OpenQASM 2 and/or 3")
    qasm.add_argument("run_dir", type=Path, help="a trained QAA run folder")
    qasm.add_argument("--output", type=Path, default=None, help="folder for the files (default RUN_DIR/qasm)")
    qasm.add_argument("--version", choices=["2", "3", "both"], default="both", help="OpenQASM version (default both)")

    for name, method in REGISTRY.items():
        for sub in (train, compare, tune):
            add_dataclass_flags(sub.add_argument_group(f"{name} options"), name, method.config_class)
        add_dataclass_flags(evaluate.add_argument_group(f"{name} evaluation options"), name,
                            method.eval_options_class)
    return parser


def parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` as a list of ints (None when the flag is absent)."""
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--seeds: give comma-separated integers, got {text!r}") from None
    if not seeds:
        raise UsageError("--seeds: name at least one seed")
    return seeds

"""The ``qpeft`` argument parser, and the settings it fills in.

Every method's config field becomes a flag ``--<method>-<field>`` (e.g. ``--lora-r``),
and every field of its eval options one on ``qpeft evaluate``, so a new method needs
no change here.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from qpeft.methods import REGISTRY
from qpeft.settings import (
    DEFAULT_DATASET,
    DEFAULT_MODEL,
    PRECISIONS,
    STOP_MODES,
    EvalSettings,
    Experiment,
    TrainSettings,
)
from qpeft.utils.errors import UsageError

DESCRIPTION = "The ``qpeft`` command: train, evaluate, generate, compare."


def field_flag(prefix: str, name: str) -> str:
    return f"--{prefix}-{name.replace('_', '-')}"


def add_dataclass_flags(parser: argparse.ArgumentParser, prefix: str, cls: type) -> None:
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        kind = type(default)
        dest = f"{prefix}__{f.name}"
        if kind is bool:
            parser.add_argument(field_flag(prefix, f.name), dest=dest, action=argparse.BooleanOptionalAction,
                                default=None, help=f"(default {default})")
        else:
            parser.add_argument(field_flag(prefix, f.name), dest=dest, type=kind, default=None,
                                metavar=kind.__name__.upper(), help=f"(default {default})")


def collect_dataclass_flags(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    marker = f"{prefix}__"
    return {k[len(marker):]: v for k, v in vars(args).items() if k.startswith(marker) and v is not None}


def add_experiment_flags(parser: argparse.ArgumentParser) -> None:
    train, evaluation = TrainSettings(), EvalSettings()
    data = parser.add_argument_group("model and data")
    data.add_argument("--model", default=DEFAULT_MODEL,
                      help="Hugging Face model id, local directory, or 'smollm2-135m' (default)")
    data.add_argument("--dataset", default=DEFAULT_DATASET, help="'e2e' (default) or a .jsonl/.csv file or folder")
    data.add_argument("--data-dir", default=None, help="folder holding e2e/ (default: $QPEFT_DATA_DIR)")
    data.add_argument("--input-column", default="input")
    data.add_argument("--target-column", default="target")
    data.add_argument("--validation-fraction", type=float, default=0.05)
    data.add_argument("--template", choices=["plain", "chat"], default=train.template,
                      help="prompt format: plain 'Input: ...\\nOutput:' or the model's chat template")
    data.add_argument("--seed", type=int, default=0)
    budget = parser.add_argument_group("training budget")
    budget.add_argument("--steps", type=int, default=train.steps, help="optimizer steps")
    budget.add_argument("--batch-size", type=int, default=train.batch_size)
    budget.add_argument("--grad-accum", type=int, default=train.grad_accum)
    budget.add_argument("--max-length", type=int, default=train.max_length, help="tokens per example")
    budget.add_argument("--warmup-ratio", type=float, default=train.warmup_ratio)
    budget.add_argument("--weight-decay", type=float, default=train.weight_decay)
    budget.add_argument("--save-steps", type=int, default=train.save_steps, help="checkpoint interval")
    budget.add_argument("--precision", choices=PRECISIONS, default=train.precision)
    budget.add_argument("--gradient-checkpointing", action="store_true")
    budget.add_argument("--eval-steps", type=int, default=train.eval_steps,
                        help="validation loss every N optimizer steps and at the end (default 0: four times a run)")
    budget.add_argument("--validation-items", type=int, default=train.validation_items,
                        help=f"validation (input, target) pairs scored each time, a fixed seeded sample "
                             f"(default {train.validation_items})")
    add_eval_flags(parser, evaluation)


def add_eval_flags(parser: argparse.ArgumentParser, defaults: EvalSettings | None) -> None:
    """Generation flags; with ``defaults`` None every flag defaults to 'keep the run's value'."""
    group = parser.add_argument_group("evaluation")

    def value(name: str) -> Any:
        return getattr(defaults, name) if defaults else None

    group.add_argument("--max-new-tokens", type=int, default=value("max_new_tokens"))
    group.add_argument("--num-beams", type=int, default=value("num_beams"), help="1: greedy decoding")
    group.add_argument("--eval-batch-size", type=int, default=value("batch_size"))
    group.add_argument("--max-test-items", type=int, default=value("max_test_items"),
                       help="score a random sample of N test items, drawn with the seed (0: all)")
    group.add_argument("--bertscore-model", default=value("bertscore_model"),
                       help="model id or path for BERTScore, or 'none' to skip it")
    group.add_argument("--stop-at-newline", choices=STOP_MODES, default=value("stop_at_newline"),
                       help="cut each output at its first line break; auto (default): when no training target "
                            "holds one")
    group.add_argument("--fewshot-examples", type=int, default=value("fewshot_examples"),
                       help="solved training examples in the prompt of the base-fewshot row (default 3; 0: no row)")


def eval_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {"max_new_tokens": "max_new_tokens", "num_beams": "num_beams", "eval_batch_size": "batch_size",
             "max_test_items": "max_test_items", "bertscore_model": "bertscore_model",
             "stop_at_newline": "stop_at_newline", "fewshot_examples": "fewshot_examples"}
    return {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag) is not None}


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    train = TrainSettings(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, max_length=args.max_length,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, save_steps=args.save_steps,
        precision=args.precision, gradient_checkpointing=args.gradient_checkpointing, template=args.template,
        eval_steps=args.eval_steps, validation_items=args.validation_items,
    )
    return Experiment(
        model=args.model, dataset=args.dataset, input_column=args.input_column, target_column=args.target_column,
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
    compare.add_argument("--convergence-margin", type=float, default=0.05, metavar="FRACTION",
                         help="a method has converged when its smoothed loss is within this fraction of its best "
                              "(default 0.05)")
    compare.add_argument("--reference", default="lora",
                         help="the row every p-value is against (default lora; the base model when absent)")
    compare.add_argument("--same-process", action="store_true",
                         help="train every method in this process (starts faster; each method's peak memory then "
                              "includes what the methods before it left behind)")
    compare.add_argument("--bootstrap-resamples", type=int, default=1000,
                         help="paired bootstrap resamples of the test items (and seeds) (default 1000)")
    add_experiment_flags(compare)

    evaluate = commands.add_parser("evaluate", help="(re)evaluate a trained run")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--data-dir", default=None)
    evaluate.add_argument("--tag", default="", help="write metrics_<tag>.json instead of metrics.json")
    add_eval_flags(evaluate, None)

    generate = commands.add_parser("generate", help="print completions from a trained run")
    generate.add_argument("run_dir", type=Path)
    generate.add_argument("--input", action="append", required=True, help="an input text (repeatable)")
    generate.add_argument("--max-new-tokens", type=int, default=None)
    generate.add_argument("--num-beams", type=int, default=None)

    sora_export = commands.add_parser("sora-export", help="prune a trained SoRA run into a plain PEFT LoRA adapter")
    sora_export.add_argument("run_dir", type=Path, help="a finished SoRA run folder")
    sora_export.add_argument("out_dir", type=Path, help="folder for adapter_config.json + adapter_model.safetensors")

    qasm = commands.add_parser("qasm", help="write each trained QAA circuit as OpenQASM 2 and/or 3")
    qasm.add_argument("run_dir", type=Path, help="a trained QAA run folder")
    qasm.add_argument("--output", type=Path, default=None, help="folder for the files (default RUN_DIR/qasm)")
    qasm.add_argument("--version", choices=["2", "3", "both"], default="both", help="OpenQASM version (default both)")

    for name, method in REGISTRY.items():
        for sub in (train, compare):
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

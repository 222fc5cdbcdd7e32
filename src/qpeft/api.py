"""The Python API: qpeft's methods inside your own training script, and the CLI's commands as calls.

``prepare`` injects any registered method's adapter into a model you loaded, so that your own
``transformers.Trainer`` or TRL ``SFTTrainer`` trains it; ``save_adapter`` / ``load_adapter``
write and read it in the method's own on-disk format with a small JSON record of the method
and its config beside it, so that loading needs nothing but the folder. ``optimizer`` and
``sora_optimizer`` give the optimizer qpeft itself trains with (SoRA's proximal gate step,
QAA's angle learning rate), for ``Trainer(optimizers=(opt, None))``.

``train``, ``compare`` and ``evaluate`` are ``qpeft train``, ``qpeft compare`` and ``qpeft
evaluate``: the same run folders and reports, the results returned as Python objects.

``import qpeft`` stays cheap: the package exposes these names lazily, and this module imports
the model libraries only when one of them is called.
"""

from __future__ import annotations

import warnings
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qpeft.methods import REGISTRY, get_method
from qpeft.methods.base import Method, MethodConfig
from qpeft.settings import AnalysisSettings, EvalSettings, Experiment, TrainSettings
from qpeft.utils.atomic import read_json, write_json
from qpeft.utils.errors import UsageError
from qpeft.utils.version import __version__

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedTokenizerBase

#: The attribute ``prepare`` sets on the model it returns: which method, with which config.
ADAPTER_ATTRIBUTE = "qpeft_adapter"
#: The record ``save_adapter`` writes beside the adapter's own files, and ``load_adapter`` reads.
METADATA_FILE = "qpeft_adapter.json"
METADATA_FORMAT = "qpeft-adapter/1"
#: Files that could hold pickled objects: ``load_adapter`` refuses a folder that holds any.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


# The adapter in your own training loop ----------------------------------------------------------------------------


def prepare(model: nn.Module, method: str, /, *, tokenizer: PreTrainedTokenizerBase | None = None,
            **options: Any) -> nn.Module:
    """Inject ``method``'s adapter into ``model`` and freeze everything else; returns the model to train.

    ``options`` are the method's config fields (the CLI's ``--<method>-<option>`` flags, e.g.
    ``r=16`` for LoRA, ``layers=3`` for QAA); an unknown name, a value of the wrong type or an
    impossible value raises ``UsageError`` before the model is touched. With ``tokenizer`` the
    method's data-dependent initialisation runs too (Prefix tuning's real-token prefix), as in
    ``qpeft train``. LoRA and Prefix tuning return a PEFT model wrapping ``model``; the others
    change ``model`` in place and return it.
    """
    chosen = get_method(method)
    config = method_config(chosen, options)
    prepared = chosen.prepare(model, config)
    if tokenizer is not None:
        chosen.initialise(prepared, config, tokenizer, [])
    elif type(chosen).initialise is not Method.initialise:
        warnings.warn(f"qpeft.prepare({method!r}) without tokenizer= skips the method's data-dependent "
                      "initialisation; pass the tokenizer to start as qpeft train does", stacklevel=2)
    setattr(prepared, ADAPTER_ATTRIBUTE, {"method": chosen.name, "config": config.to_dict()})
    return prepared


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the trained adapter of a ``prepare``d model into ``path``; returns the folder.

    The weights go in the method's own format (PEFT's layout for LoRA and Prefix tuning, so
    ``peft.PeftModel.from_pretrained`` reads them without qpeft; qpeft's safetensors + JSON for
    SoRA and QAA; ``model.safetensors`` for full fine-tuning), and ``qpeft_adapter.json`` records
    the method and its config, so that ``load_adapter`` needs no other argument.
    """
    record = adapter_record(model)
    method = get_method(record["method"])
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    method.save(model, method.config_class.from_dict(record["config"]), folder)
    write_json(folder / METADATA_FILE, {"format": METADATA_FORMAT, "qpeft_version": __version__, **record})
    return folder


def load_adapter(base_model: nn.Module, path: str | Path) -> nn.Module:
    """The model ``save_adapter`` saved, rebuilt on a fresh ``base_model``, ready for inference.

    Only JSON and safetensors are read: a folder that holds a file that could carry pickled
    objects (``.bin``, ``.pt``, ...) is refused rather than left to a loader's fallback.
    """
    folder = Path(path)
    record = read_record(folder)
    check_safe_files(folder)
    return get_method(record["method"]).load(base_model, folder)


def optimizer(model: nn.Module, *, weight_decay: float = 0.0, max_steps: int = 1) -> torch.optim.Optimizer:
    """The optimizer ``qpeft train`` gives a ``prepare``d model's method, for ``Trainer(optimizers=(opt, None))``.

    SoRA's AdamW with the proximal gate step, QAA's AdamW with the angles at their own rate, and
    plain AdamW over the trainable parameters at the method's learning rate for the others.
    ``max_steps`` is the run's optimizer steps (SoRA's sparsity schedule spans them).
    """
    import torch

    record = adapter_record(model)
    method = get_method(record["method"])
    config = method.config_class.from_dict(record["config"])
    made = method.create_optimizer(model, config, weight_decay, max_steps)
    if made is not None:
        return made
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=weight_decay)


def sora_optimizer(model: nn.Module, *, weight_decay: float = 0.0, max_steps: int = 1,
                   **options: Any) -> torch.optim.Optimizer:
    """SoRA's optimizer (AdamW, then the proximal L1 step that prunes gates) for a model with SoRA layers.

    The config is the one ``prepare(model, "sora", ...)`` recorded (SoRA's defaults for a model
    prepared otherwise), with ``options`` (``sparsity``, ``gate_learning_rate``, ``schedule``, ...)
    on top. The Trainer's learning-rate schedule scales the gates' threshold too, as in qpeft's runs.
    """
    from qpeft.methods.sora.model import sora_layers

    if not list(sora_layers(model)):
        raise UsageError("this model carries no SoRA layers; prepare it with qpeft.prepare(model, 'sora') first")
    sora = get_method("sora")
    record = getattr(model, ADAPTER_ATTRIBUTE, None) or {}
    recorded = record.get("config", {}) if record.get("method") == sora.name else {}
    config = method_config(sora, {**recorded, **options})
    return sora.create_optimizer(model, config, weight_decay, max_steps)


# The CLI's commands as calls --------------------------------------------------------------------------------------


def train(output: str | Path, method: str = "lora", *, data_dir: str | None = None,
          options: dict[str, Any] | None = None, experiment: Experiment | None = None,
          **settings: Any) -> dict[str, Any]:
    """``qpeft train --method METHOD --output OUTPUT``: train and evaluate one method; returns its ``metrics.json``.

    ``settings`` are the shared flags by their field names (``model``, ``dataset``, ``steps``,
    ``batch_size``, ``max_test_items``, ``eval_batch_size``, ...; see ``experiment_from``), or
    pass a whole ``experiment``; ``options`` are the method's own (``{"r": 16}``).
    """
    config = method_config(get_method(method), dict(options or {}))
    chosen = experiment if experiment is not None else experiment_from(**settings)
    from qpeft.experiment.runs import train_run

    return train_run(Path(output), chosen, method, config.to_dict(), data_dir)


def compare(output: str | Path, methods: list[str] | None = None, *, data_dir: str | None = None,
            options: dict[str, dict[str, Any]] | None = None, seeds: list[int] | None = None,
            same_process: bool = False, analysis: AnalysisSettings | None = None,
            experiment: Experiment | None = None, **settings: Any) -> dict[str, Any]:
    """``qpeft compare --output OUTPUT``: every method under one budget; returns the ``results.json`` payload.

    Writes the same folder as the CLI: one run per method, ``results.json``/``.csv`` and
    ``report.md``/``report.html`` in ``output``. ``methods`` defaults to every registered one;
    ``options`` maps a method to its options. A failed method is a row with ``status ==
    "failed"`` (the CLI's exit code 1), not an exception. Each run trains in a fresh process
    unless ``same_process``: call it under ``if __name__ == "__main__":`` in a script.
    """
    chosen = experiment if experiment is not None else experiment_from(**settings)
    names = list(methods) if methods is not None else list(REGISTRY)
    stray = sorted(set(options or {}) - set(names))
    if stray:
        raise UsageError(f"options given for {', '.join(stray)}, which the comparison does not run")
    configs = {name: method_config(get_method(name), dict(given)).to_dict() for name, given in (options or {}).items()}
    from qpeft.experiment.compare import compare as run_comparison
    from qpeft.report import write_report

    payload = run_comparison(Path(output), chosen, names, configs, data_dir, seeds=seeds, analysis=analysis,
                             fresh_process=not same_process)
    if payload:  # empty on the other processes of a multi-process launch: the main one reports
        write_report(Path(output), payload)
    return payload


def evaluate(run_dir: str | Path, *, data_dir: str | None = None, tag: str = "",
             options: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """``qpeft evaluate RUN_DIR``: re-evaluate a finished run; returns its new metrics.

    ``overrides`` are generation settings (``num_beams``, ``max_new_tokens``, ``eval_batch_size``,
    ...); ``options`` the method's eval options (QAA's ``shots``, ``depolarizing``). With a ``tag``
    the results go to ``metrics_<tag>.json`` beside the run's own.
    """
    from qpeft.experiment.run_dir import RunDir
    from qpeft.experiment.runs import evaluate_run

    method = REGISTRY.get(RunDir(Path(run_dir)).config()["method"])
    eval_options = None
    if method is not None:
        eval_options = checked_dataclass(method.eval_options_class, dict(options or {}), f"{method.name} eval")
    elif options:
        raise UsageError(f"{run_dir} is a baseline run; it takes no method eval options")
    return evaluate_run(Path(run_dir), data_dir, eval_overrides(overrides), eval_options, tag)


# Helpers ----------------------------------------------------------------------------------------------------------


def method_config(method: Method, options: dict[str, Any]) -> MethodConfig:
    """The method's config from keyword options: unknown names, wrong types and bad values are ``UsageError``."""
    config = checked_dataclass(method.config_class, options, method.name)
    config.validate()
    return config


def checked_dataclass(cls: type, values: dict[str, Any], what: str) -> Any:
    """``cls(**values)`` after checking each name and each value's type against the field's default."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UsageError(f"{what} has no option {', '.join(map(repr, unknown))} (its options: {', '.join(known)})")
    for name, value in values.items():
        check_type(what, name, known[name].default, value)
    return cls(**values)


def check_type(what: str, name: str, default: Any, value: Any) -> None:
    """Refuse a value of another type than the field's default (an int is a float; a bool is no number)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        wanted = int if isinstance(default, int) else (int, float)
        ok = isinstance(value, wanted) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        kind = type(default).__name__
        raise UsageError(f"{what} option {name!r} takes {'an' if kind[0] in 'aeiou' else 'a'} {kind}, got {value!r}")


EXPERIMENT_FIELDS = tuple(f.name for f in fields(Experiment) if f.name not in ("train", "eval"))
TRAIN_FIELDS = tuple(f.name for f in fields(TrainSettings))
#: EvalSettings fields by their CLI names: ``batch_size`` is the training batch, so generation's is ``eval_batch_size``.
EVAL_FIELDS = {("eval_batch_size" if f.name == "batch_size" else f.name): f.name for f in fields(EvalSettings)}


def experiment_from(**settings: Any) -> Experiment:
    """An ``Experiment`` from flat keyword settings named as the CLI's shared flags (``steps``, ``eval_batch_size``)."""
    top, training, evaluation = {}, {}, {}
    for key, value in settings.items():
        if key in EXPERIMENT_FIELDS:
            top[key] = value
        elif key in TRAIN_FIELDS:
            training[key] = value
        elif key in EVAL_FIELDS:
            evaluation[EVAL_FIELDS[key]] = value
        else:
            known = ", ".join([*EXPERIMENT_FIELDS, *TRAIN_FIELDS, *EVAL_FIELDS])
            raise UsageError(f"unknown setting {key!r} (settings: {known})")
    experiment = Experiment(**top, train=checked_dataclass(TrainSettings, training, "training"),
                            eval=checked_dataclass(EvalSettings, evaluation, "evaluation"))
    experiment.validate()
    return experiment


def eval_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Generation overrides by EvalSettings field name, checked as ``experiment_from`` checks them."""
    unknown = sorted(set(overrides) - set(EVAL_FIELDS))
    if unknown:
        raise UsageError(f"unknown evaluation setting {', '.join(map(repr, unknown))} "
                         f"(settings: {', '.join(EVAL_FIELDS)})")
    renamed = {EVAL_FIELDS[key]: value for key, value in overrides.items()}
    checked_dataclass(EvalSettings, renamed, "evaluation").validate()
    return renamed


def adapter_record(model: nn.Module) -> dict[str, Any]:
    """What ``prepare`` recorded on the model; a model it did not prepare is a ``UsageError``."""
    record = getattr(model, ADAPTER_ATTRIBUTE, None)
    if not isinstance(record, dict):
        raise UsageError("this model was not prepared by qpeft.prepare(model, method, ...)")
    return record


def read_record(folder: Path) -> dict[str, Any]:
    """The method and config ``save_adapter`` wrote, with a one-line error for anything else."""
    path = folder / METADATA_FILE
    if not path.is_file():
        raise UsageError(f"{folder} holds no qpeft adapter ({METADATA_FILE}); save it with qpeft.save_adapter")
    record = read_json(path)
    if record.get("format") != METADATA_FORMAT:
        raise UsageError(f"{path}: unknown format {record.get('format')!r}")
    get_method(record.get("method", ""))
    return record


def check_safe_files(folder: Path) -> None:
    """Refuse a folder with a pickle-capable file, or without a safetensors file to read the weights from."""
    names = [child.name for child in folder.iterdir() if child.is_file()]
    risky = sorted(name for name in names if name.lower().endswith(PICKLE_SUFFIXES))
    if risky:
        raise UsageError(f"{folder} holds {', '.join(risky)}: qpeft reads adapters only from safetensors and JSON")
    if not any(name.endswith(".safetensors") for name in names):
        raise UsageError(f"{folder} holds no .safetensors weights")

"""The one reader and writer of qpeft's own adapter folders (SoRA, QAA), in PEFT's on-disk layout.

A folder holds ``adapter_config.json`` and ``adapter_model.safetensors``, as a PEFT adapter does:

- ``adapter_config.json``: ``qpeft_type`` (``"sora"``, ``"qaa"``; PEFT's own files say
  ``peft_type``), a ``format`` tag, the method config, the base model's name and, per adapted
  module, what it takes to rebuild that module's layer;
- ``adapter_model.safetensors``: the tensors under PEFT's keys,
  ``base_model.model.<module>.<parameter name>`` (e.g. ``base_model.model.transformer.h.0.attn.c_attn.sora_A``).

Folders written before this layout (``<type>_config.json`` + ``<type>_adapter.safetensors``
with ``<module>.<parameter name>`` keys) are read as well. Only safetensors and JSON are
read: nothing is unpickled.

The files are untrusted input: whatever is truncated, tampered with or meant for another model
is a one-line ``UsageError`` naming the file, before any tensor is copied. Every module name is
a dotted path of identifiers (it becomes a file name in ``qpeft qasm``), every module's facts
have their types and every tensor its shape and a floating-point dtype. PEFT's own folders
(LoRA, Prefix tuning) are loaded by PEFT through ``load_peft_adapter``, after the same checks.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from qpeft.methods.base import AdapterLayer, MethodConfig
from qpeft.methods.targets import LINEAR_TYPES, linear_shape
from qpeft.utils.atomic import read_json, write_json
from qpeft.utils.errors import UsageError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: PEFT's prefix of every tensor key: the module names are those of the base model.
KEY_PREFIX = "base_model.model."
#: A module name as PyTorch names submodules: dotted identifiers, so no separator, no "..", nothing absolute.
MODULE_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def one_line(error: BaseException) -> str:
    """A library's error message on one line (they often span several)."""
    return " ".join(str(error).split())


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; unreadable or invalid JSON is a one-line error naming it."""
    try:
        value = read_json(path)
    except (OSError, ValueError, RecursionError) as error:  # ValueError: invalid JSON or UTF-8
        raise UsageError(f"{path} is not a readable JSON file ({one_line(error)})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} holds no JSON object")
    return value


def tensor_headers(path: Path) -> dict[str, tuple[str, list[int]]]:
    """name -> (dtype such as ``F32``, shape) of every tensor of a safetensors file, from its header alone.

    A truncated, corrupt or unreadable file is a one-line error naming it.
    """
    try:
        with safe_open(str(path), "pt") as handle:
            slices = {key: handle.get_slice(key) for key in handle.keys()}
            return {key: (tensor.get_dtype(), tensor.get_shape()) for key, tensor in slices.items()}
    except (SafetensorError, OSError) as error:
        raise UsageError(f"{path} is not a whole safetensors file ({one_line(error)})") from None


def check_float(path: Path, key: str, dtype: str) -> None:
    """A trained weight is floating point (``F16``, ``BF16``, ``F32``, ...): an integer tensor is tampering."""
    if not dtype.startswith(("F", "BF")):
        raise UsageError(f"{path}: tensor {key} is {dtype}, not floating point")


def float_tensor_names(path: Path) -> set[str]:
    """The tensor names of a whole safetensors file that holds adapter weights, every one floating point."""
    headers = tensor_headers(path)
    for key, (dtype, _) in sorted(headers.items()):
        check_float(path, key, dtype)
    return set(headers)


def check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    """A saved tensor has the shape its module's facts give it (``SavedAdapter.read`` names the module)."""
    if tuple(tensor.shape) != tuple(expected):
        raise UsageError(f"{name} has shape {tuple(tensor.shape)}, its facts give {tuple(expected)}")


def has_type(value: Any, kind: Any) -> bool:
    """isinstance, with JSON's numbers: a bool is no int, an int is a float."""
    if isinstance(value, bool) and kind in (int, float):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def check_module(where: str, module: str, facts: Any, types: dict[str, type]) -> None:
    """A module's name (a dotted path: it becomes a file name) and its facts (an object with every key of
    ``types``, of that type; whole numbers positive)."""
    if not MODULE_NAME.fullmatch(module):
        raise UsageError(f"{where}: module name {module!r} is not a dotted module path")
    if not isinstance(facts, dict):
        raise UsageError(f"{where}: module {module!r} is described by no JSON object")
    for key, kind in types.items():
        value = facts.get(key)
        if not has_type(value, kind) or (kind is int and value < 1):
            wanted = "a positive integer" if kind is int else f"a {kind.__name__}"
            raise UsageError(f"{where}: module {module!r}: {key} must be {wanted}, got {value!r}")


def check_config(where: str, values: dict[str, Any], config_class: type[MethodConfig]) -> None:
    """The saved method config: every known field of its type, and valid as a whole."""
    types = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.name in values and not has_type(values[field.name], types[field.name]):
            raise UsageError(f"{where}: config field {field.name} has the wrong type ({values[field.name]!r})")
    try:
        config_class.from_dict(values).validate()
    except UsageError as error:
        raise UsageError(f"{where}: {error}") from None


@dataclass(frozen=True)
class AdapterFormat:
    """Which adapter a folder holds: ``qpeft_type``, the ``format`` tag, and the name in messages."""

    qpeft_type: str
    version: str
    label: str

    @property
    def legacy_files(self) -> tuple[str, str]:
        """(config, weights) file names of the layout before PEFT's (keys without ``KEY_PREFIX``)."""
        return f"{self.qpeft_type}_config.json", f"{self.qpeft_type}_adapter.safetensors"


@dataclass
class AdapterFiles:
    """What an adapter folder holds, whatever the method."""

    config: dict[str, Any]
    #: Per adapted module: what it takes to rebuild its layer (widths, qubits, ...).
    modules: dict[str, dict[str, Any]]
    #: Per adapted module: parameter name -> tensor (None, or left out: absent, such as a switched-off bias).
    tensors: dict[str, dict[str, torch.Tensor | None]]
    base_model_name_or_path: str | None = None


def write_adapter_files(out_dir: Path, adapter_format: AdapterFormat, files: AdapterFiles) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = {f"{KEY_PREFIX}{module}.{key}": value.contiguous()
            for module, values in files.tensors.items() for key, value in values.items() if value is not None}
    save_file(flat, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    write_json(out_dir / CONFIG_FILE, {
        "qpeft_type": adapter_format.qpeft_type, "format": adapter_format.version, "config": files.config,
        "base_model_name_or_path": files.base_model_name_or_path, "modules": files.modules,
    })


def read_adapter_files(
    adapter_dir: Path,
    adapter_format: AdapterFormat,
    tensor_names: Callable[[dict[str, Any]], tuple[str, ...]],
    fact_types: dict[str, type],
) -> AdapterFiles:
    """An adapter folder in PEFT's layout or the earlier one, with one-line errors for anything else.

    ``tensor_names(module facts)`` names the tensors each module must have in the weights file;
    ``fact_types`` are the keys and types every module's facts must have.
    """
    config_path, weights_path, prefix = adapter_paths(Path(adapter_dir), adapter_format)
    header = read_header(config_path, adapter_format, legacy=not prefix)
    for module, facts in header["modules"].items():
        check_module(str(config_path), module, facts, fact_types)
    wanted = {module: {name: f"{prefix}{module}.{name}" for name in tensor_names(facts)}
              for module, facts in header["modules"].items()}
    flat = read_tensors(weights_path, {key for keys in wanted.values() for key in keys.values()})
    tensors = {module: {name: flat[key] for name, key in keys.items()} for module, keys in wanted.items()}
    return AdapterFiles(header["config"], header["modules"], tensors, header.get("base_model_name_or_path"))


def adapter_paths(adapter_dir: Path, adapter_format: AdapterFormat) -> tuple[Path, Path, str]:
    """(config file, weights file, key prefix) of PEFT's layout, or of the earlier one where only that is there."""
    config_file, weights_file, prefix = CONFIG_FILE, WEIGHTS_FILE, KEY_PREFIX
    if not (adapter_dir / config_file).exists() and (adapter_dir / adapter_format.legacy_files[0]).exists():
        (config_file, weights_file), prefix = adapter_format.legacy_files, ""
    if not (adapter_dir / config_file).is_file() or not (adapter_dir / weights_file).is_file():
        raise UsageError(f"{adapter_dir} holds no {adapter_format.label} adapter ({CONFIG_FILE} + {WEIGHTS_FILE})")
    return adapter_dir / config_file, adapter_dir / weights_file, prefix


def read_header(config_path: Path, adapter_format: AdapterFormat, legacy: bool) -> dict[str, Any]:
    """The adapter's JSON: of this method (the earlier layout names no type) and format, a config and modules."""
    header = read_json_object(config_path)
    if not legacy and header.get("qpeft_type") != adapter_format.qpeft_type:
        found = header.get("qpeft_type") or header.get("peft_type")
        raise UsageError(f"{config_path.parent} holds no {adapter_format.label} adapter "
                         f"({config_path.name} is of type {found!r})")
    if header.get("format") != adapter_format.version:
        raise UsageError(f"{config_path}: unknown format {header.get('format')!r}")
    for key in ("config", "modules"):
        if not isinstance(header.get(key), dict):
            found = f"a {type(header[key]).__name__}" if key in header else "nothing"
            raise UsageError(f"{config_path}: {key!r} must be a JSON object, found {found}")
    return header


def read_tensors(weights_path: Path, keys: set[str]) -> dict[str, torch.Tensor]:
    """Exactly the tensors ``keys`` of a safetensors file, all floating point, checked on its header first."""
    found = float_tensor_names(weights_path)
    if missing := sorted(keys - found):
        raise UsageError(f"{weights_path} lacks tensor {missing[0]!r}")
    if extra := sorted(found - keys):  # a module dropped from the JSON would silently go missing
        raise UsageError(f"{weights_path} holds tensor {extra[0]!r} of no module of the adapter's JSON")
    return load_file(str(weights_path))


def base_model_name(model: nn.Module) -> str | None:
    """The ``name_or_path`` of the model an adapter was trained on, as its files record it."""
    return getattr(getattr(model, "config", None), "name_or_path", None) or None


def trained_layers(layers: Iterator[tuple[str, nn.Module]], what: str) -> dict[str, nn.Module]:
    """name -> layer of a model's adapter layers; a model without any is a one-line error."""
    found = dict(layers)
    if not found:
        raise UsageError(f"this model carries no {what} adapter")
    return found


class ModuleRecord(Protocol):
    """One adapted module of a saved adapter: its tensors and what it takes to rebuild its layer."""

    #: The keys and types of ``facts()``, which every module of a saved adapter must have.
    fact_types: ClassVar[dict[str, type]]

    @classmethod
    def from_layer(cls, layer: Any) -> ModuleRecord: ...

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> ModuleRecord:
        """The record of checked facts and tensors; a tensor whose shape the facts contradict is a UsageError."""

    def state(self) -> dict[str, torch.Tensor | None]: ...

    def facts(self) -> dict[str, Any]: ...


Saved = TypeVar("Saved", bound="SavedAdapter")


def describe_linear(module: nn.Module) -> str:
    if not isinstance(module, LINEAR_TYPES):
        return f"a {type(module).__name__}, not a plain linear layer"
    in_features, out_features = linear_shape(module)
    return f"a {type(module).__name__} {in_features} -> {out_features}"


def describe_facts(facts: dict[str, Any]) -> str:
    return f"a {'Conv1D' if facts['conv1d'] else 'Linear'} {facts['in_features']} -> {facts['out_features']}"


@dataclass
class SavedAdapter:
    """A trained adapter without its base model: the method config and a record per adapted module.

    A method's subclass names its layer class, its module record and its on-disk format (as a
    PEFT tuner names ``tuner_layer_cls`` and ``prefix``); building one from a model, writing it
    and reading it back are the same for every method.
    """

    config: dict[str, Any]
    modules: dict[str, Any]
    base_model_name_or_path: str | None = None

    layer_class: ClassVar[type[AdapterLayer]]
    module_class: ClassVar[type[ModuleRecord]]
    adapter_format: ClassVar[AdapterFormat]
    config_class: ClassVar[type[MethodConfig]]

    @classmethod
    def tensor_names(cls, facts: dict[str, Any]) -> tuple[str, ...]:
        """The tensors a module's entry must have in the weights file (all of the layer's by default)."""
        return cls.layer_class.adapter_param_names

    @classmethod
    def from_model(cls: type[Saved], model: nn.Module, config: dict[str, Any]) -> Saved:
        """The adapter of a model's layers, copied to the CPU; a model without any is a one-line error."""
        layers = trained_layers(cls.layer_class.layers_in(model), cls.adapter_format.label)
        return cls(dict(config), {name: cls.module_class.from_layer(layer) for name, layer in layers.items()},
                   base_model_name(model))

    def write(self, out_dir: Path) -> None:
        modules = {name: record.facts() for name, record in self.modules.items()}
        tensors = {name: record.state() for name, record in self.modules.items()}
        write_adapter_files(out_dir, self.adapter_format, AdapterFiles(self.config, modules, tensors,
                                                                       self.base_model_name_or_path))

    @classmethod
    def read(cls: type[Saved], adapter_dir: Path) -> Saved:
        """The adapter of a folder, every file, fact and tensor checked (one-line errors naming the folder)."""
        files = read_adapter_files(adapter_dir, cls.adapter_format, cls.tensor_names, cls.module_class.fact_types)
        check_config(str(adapter_dir), files.config, cls.config_class)
        modules = {}
        for name, values in files.tensors.items():
            try:
                modules[name] = cls.module_class.from_saved(values, files.modules[name])
            except UsageError as error:
                raise UsageError(f"{adapter_dir}: module {name!r}: {error}") from None
        return cls(files.config, modules, files.base_model_name_or_path)

    def check_fits(self, base_model: nn.Module) -> None:
        """Every adapted module is a linear layer of ``base_model`` of the kind and widths its facts record."""
        label = self.adapter_format.label
        for name, record in self.modules.items():
            try:
                module = base_model.get_submodule(name)
            except AttributeError:
                raise UsageError(f"the {label} adapter does not fit this model: it has no module {name!r}") from None
            facts = record.facts()
            saved = (facts["in_features"], facts["out_features"], facts["conv1d"])
            if not isinstance(module, LINEAR_TYPES) or (*linear_shape(module), isinstance(module, Conv1D)) != saved:
                raise UsageError(f"the {label} adapter does not fit this model: module {name!r} is "
                                 f"{describe_linear(module)}, the adapter's is {describe_facts(facts)}")

    def load_into(self, base_model: nn.Module, **overrides: Any) -> dict[str, AdapterLayer]:
        """Check that the adapter fits ``base_model``, then inject its layers (config with ``overrides``) and copy
        its tensors in; name -> layer."""
        self.check_fits(base_model)
        config = dataclasses.replace(self.config_class.from_dict(self.config), **overrides)
        return self.layer_class.load_saved(base_model, config, self.saved_state())

    def saved_state(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """Per module, the tensors under the layer's parameter names (what loading copies in)."""
        return {name: record.state() for name, record in self.modules.items()}


# PEFT's own folders (LoRA, Prefix tuning) ----------------------------------------------------------------------

#: What PEFT raises on a config or weights file it cannot use (wrong types, unknown names, sizes that do not fit).
PEFT_LOAD_ERRORS = (ValueError, TypeError, KeyError, RuntimeError, OSError, SafetensorError)


def load_peft_adapter(base_model: nn.Module, adapter_dir: Path, peft_type: str, label: str) -> PeftModel:
    """PEFT's ``from_pretrained`` of an adapter folder, with one-line errors naming the folder.

    Checked first: both files are there (so PEFT never falls back to a pickled ``adapter_model.bin``
    or to the Hub), the adapter is of ``peft_type``, and the weights file is whole and floating point.
    Checked after: PEFT used exactly the file's tensors (it only warns about missing ones, and
    silently skips those no module of its config takes).
    """
    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / CONFIG_FILE, adapter_dir / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise UsageError(f"{adapter_dir} holds no {label} adapter ({CONFIG_FILE} + {WEIGHTS_FILE})")
    header = read_json_object(config_path)
    if header.get("peft_type") != peft_type:
        kind = header.get("peft_type") or header.get("qpeft_type")
        raise UsageError(f"{adapter_dir} holds no {label} adapter ({CONFIG_FILE} is of type {kind!r})")
    found = float_tensor_names(weights_path)
    try:
        model = PeftModel.from_pretrained(base_model, adapter_dir)
    except PEFT_LOAD_ERRORS as error:
        raise UsageError(f"{adapter_dir}: PEFT cannot load this {label} adapter: {one_line(error)}") from None
    used = set(get_peft_model_state_dict(model))
    if used != found:
        missing, extra = sorted(used - found), sorted(found - used)
        raise UsageError(f"{adapter_dir}: the {label} adapter does not match its config: "
                         + (f"{weights_path.name} lacks tensor {missing[0]!r}" if missing else
                            f"no module takes tensor {extra[0]!r}"))
    return model

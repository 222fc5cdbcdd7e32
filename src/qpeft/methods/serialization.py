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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from qpeft.methods.base import AdapterLayer
from qpeft.utils.atomic import read_json, write_json
from qpeft.utils.errors import UsageError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: PEFT's prefix of every tensor key: the module names are those of the base model.
KEY_PREFIX = "base_model.model."


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
    adapter_dir: Path, adapter_format: AdapterFormat, tensor_names: Callable[[dict[str, Any]], tuple[str, ...]]
) -> AdapterFiles:
    """An adapter folder in PEFT's layout or the earlier one, with one-line errors for anything else.

    ``tensor_names(module facts)`` names the tensors each module must have in the weights file.
    """
    adapter_dir = Path(adapter_dir)
    config_file, weights_file, prefix = CONFIG_FILE, WEIGHTS_FILE, KEY_PREFIX
    if not (adapter_dir / config_file).exists() and (adapter_dir / adapter_format.legacy_files[0]).exists():
        (config_file, weights_file), prefix = adapter_format.legacy_files, ""
    if not (adapter_dir / config_file).exists() or not (adapter_dir / weights_file).exists():
        raise UsageError(f"{adapter_dir} holds no {adapter_format.label} adapter ({CONFIG_FILE} + {WEIGHTS_FILE})")
    header = read_json(adapter_dir / config_file)
    if prefix and header.get("qpeft_type") != adapter_format.qpeft_type:
        found = header.get("qpeft_type") or header.get("peft_type")
        raise UsageError(f"{adapter_dir} holds no {adapter_format.label} adapter ({config_file} is of type {found!r})")
    if header.get("format") != adapter_format.version:
        raise UsageError(f"{adapter_dir / config_file}: unknown format {header.get('format')!r}")
    flat = load_file(str(adapter_dir / weights_file))
    tensors = {}
    for module, facts in header["modules"].items():
        try:
            tensors[module] = {name: flat[f"{prefix}{module}.{name}"] for name in tensor_names(facts)}
        except KeyError as error:
            raise UsageError(f"{adapter_dir / weights_file} lacks tensor {error}") from None
    return AdapterFiles(header["config"], header["modules"], tensors, header.get("base_model_name_or_path"))


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

    @classmethod
    def from_layer(cls, layer: Any) -> ModuleRecord: ...

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> ModuleRecord: ...

    def state(self) -> dict[str, torch.Tensor | None]: ...

    def facts(self) -> dict[str, Any]: ...


Saved = TypeVar("Saved", bound="SavedAdapter")


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
        files = read_adapter_files(adapter_dir, cls.adapter_format, cls.tensor_names)
        modules = {name: cls.module_class.from_saved(values, files.modules[name])
                   for name, values in files.tensors.items()}
        return cls(files.config, modules, files.base_model_name_or_path)

    def saved_state(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """Per module, the tensors under the layer's parameter names (what loading copies in)."""
        return {name: record.state() for name, record in self.modules.items()}

"""The files of qpeft's own adapters (SoRA, QAA): named tensors in safetensors, facts in JSON.

An adapter folder holds ``<weights_file>`` (``<module>.<tensor>`` keys) and ``<config_file>``:
a format tag, the method config, the base model's name and, per adapted module, what it
takes to rebuild that module's layer. Only safetensors are read: nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from qpeft.utils.atomic import read_json, write_json
from qpeft.utils.errors import UsageError


def write_adapter_files(
    out_dir: Path,
    weights_file: str,
    config_file: str,
    format_tag: str,
    config: dict[str, Any],
    base_model_name_or_path: str | None,
    modules: dict[str, dict[str, Any]],
    tensors: dict[str, torch.Tensor],
) -> None:
    """Write ``tensors`` and the JSON header (format, method config, base model, per-module facts) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(out_dir / weights_file),
              metadata={"format": "pt"})
    header = {"format": format_tag, "config": config, "base_model_name_or_path": base_model_name_or_path,
              "modules": modules}
    write_json(out_dir / config_file, header)


def read_adapter_files(
    adapter_dir: Path, weights_file: str, config_file: str, format_tag: str, what: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON header and the tensors of an adapter folder, with one-line errors for anything else."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / config_file).exists() or not (adapter_dir / weights_file).exists():
        raise UsageError(f"{adapter_dir} holds no {what} adapter ({config_file} + {weights_file})")
    header = read_json(adapter_dir / config_file)
    if header.get("format") != format_tag:
        raise UsageError(f"{adapter_dir / config_file}: unknown format {header.get('format')!r}")
    return header, load_file(str(adapter_dir / weights_file))


def missing_tensor(adapter_dir: Path, weights_file: str, error: KeyError) -> UsageError:
    return UsageError(f"{Path(adapter_dir) / weights_file} lacks tensor {error}")


def base_model_name(model: nn.Module) -> str | None:
    """The ``name_or_path`` of the model an adapter was trained on, as its files record it."""
    return getattr(getattr(model, "config", None), "name_or_path", None) or None


def trained_layers(layers: Iterator[tuple[str, nn.Module]], what: str) -> dict[str, nn.Module]:
    """name -> layer of a model's adapter layers; a model without any is a one-line error."""
    found = dict(layers)
    if not found:
        raise UsageError(f"this model carries no {what} adapter")
    return found


def detached(layer: nn.Module, names: tuple[str, ...]) -> dict[str, torch.Tensor | None]:
    """CPU copies of a layer's named tensors (None for an absent one, such as a switched-off bias)."""
    values = {}
    for name in names:
        tensor = getattr(layer, name)
        values[name] = None if tensor is None else tensor.detach().cpu().clone()
    return values


def flat_tensors(modules: dict[str, dict[str, torch.Tensor | None]]) -> dict[str, torch.Tensor]:
    """``<module>.<tensor>`` -> tensor, as the weights file stores them (absent tensors left out)."""
    return {f"{module}.{key}": value for module, values in modules.items() for key, value in values.items()
            if value is not None}


def module_tensors(
    tensors: dict[str, torch.Tensor], module: str, names: tuple[str, ...], adapter_dir: Path, weights_file: str
) -> dict[str, torch.Tensor]:
    """The named tensors of one module from a weights file's flat dict; a missing one is a one-line error."""
    try:
        return {name: tensors[f"{module}.{name}"] for name in names}
    except KeyError as error:
        raise missing_tensor(adapter_dir, weights_file, error) from None


def load_adapter_tensors(
    layers: dict[str, nn.Module], saved: dict[str, dict[str, torch.Tensor | None]], what: str
) -> None:
    """Copy each module's saved tensors into the freshly injected layer's parameters of the same name.

    Every shape is checked first; a tensor that is absent (None) in the file must be absent in the layer.
    """
    with torch.no_grad():
        for name, layer in layers.items():
            for key, value in saved[name].items():
                param = getattr(layer, key)
                if (param is None) != (value is None):
                    raise UsageError(f"{what} adapter module {name!r}: {key} does not match the config")
                if value is None:
                    continue
                if param.shape != value.shape:
                    raise UsageError(f"{what} adapter module {name!r}: shape {tuple(value.shape)} does not fit "
                                     f"{tuple(param.shape)}")
                param.copy_(value)

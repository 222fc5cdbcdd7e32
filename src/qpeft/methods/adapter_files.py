"""The files of qpeft's own adapters (SoRA, QAA): named tensors in safetensors, facts in JSON.

An adapter folder holds ``<weights_file>`` (``<module>.<tensor>`` keys) and ``<config_file>``:
a format tag, the method config, the base model's name and, per adapted module, what it
takes to rebuild that module's layer. Only safetensors are read: nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from qpeft.errors import UsageError
from qpeft.io import read_json, write_json


def write_adapter_files(
    out_dir: Path,
    weights_file: str,
    config_file: str,
    header: dict[str, Any],
    tensors: dict[str, torch.Tensor],
) -> None:
    """Write ``tensors`` and the JSON ``header`` (format, config, base model, modules) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(out_dir / weights_file),
              metadata={"format": "pt"})
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

"""QAA's adapter files: the trained tensors of every adapted module and the shape of its circuit.

``run_dir/adapter`` holds ``qaa_config.json`` (format tag, the method config, and per
adapted module its widths, qubits and whether it wraps a GPT-2 Conv1D) and
``qaa_adapter.safetensors`` (``<module>.qaa_angles``, ``<module>.qaa_up`` and, with a bias,
``<module>.qaa_bias``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qpeft.methods.qaa.layer import qaa_layers
from qpeft.methods.serialization import (
    base_model_name,
    detached,
    flat_tensors,
    module_tensors,
    read_adapter_files,
    trained_layers,
    write_adapter_files,
)
from qpeft.quantum import CircuitSpec

CONFIG_FILE = "qaa_config.json"
WEIGHTS_FILE = "qaa_adapter.safetensors"
FORMAT = "qpeft-qaa/1"
#: The tensors of one module in the weights file (``<module>.<name>``); the bias only with ``bias=True``.
TENSORS = ("qaa_angles", "qaa_up", "qaa_bias")


@dataclass
class ModuleAdapter:
    """The trained tensors of one adapted module and the shape of its circuit."""

    spec: CircuitSpec
    in_features: int
    out_features: int
    angles: torch.Tensor
    up: torch.Tensor
    bias: torch.Tensor | None = None
    conv1d: bool = False


@dataclass
class QAAAdapter:
    config: dict[str, Any]
    modules: dict[str, ModuleAdapter]
    base_model_name_or_path: str | None = None


def adapter_from_model(model: nn.Module, config: dict[str, Any]) -> QAAAdapter:
    modules = {}
    for name, layer in trained_layers(qaa_layers(model), "QAA").items():
        tensors = detached(layer, TENSORS)
        modules[name] = ModuleAdapter(layer.spec, layer.in_features, layer.out_features, tensors["qaa_angles"],
                                      tensors["qaa_up"], tensors["qaa_bias"], layer.is_conv1d)
    return QAAAdapter(dict(config), modules, base_model_name(model))


def module_state(module: ModuleAdapter) -> dict[str, torch.Tensor | None]:
    """The tensors of one module under their parameter names (what ``QAA.load`` copies into the layer)."""
    return {"qaa_angles": module.angles, "qaa_up": module.up, "qaa_bias": module.bias}


def write_adapter(adapter: QAAAdapter, out_dir: Path) -> None:
    tensors = flat_tensors({name: module_state(module) for name, module in adapter.modules.items()})
    modules = {
        name: {"in_features": m.in_features, "out_features": m.out_features, "conv1d": m.conv1d,
               "n_qubits": m.spec.n_qubits, "layers": m.spec.n_layers, "ansatz": m.spec.ansatz,
               "readout": m.spec.readout, "bias": m.bias is not None}
        for name, m in adapter.modules.items()
    }
    write_adapter_files(out_dir, WEIGHTS_FILE, CONFIG_FILE, FORMAT, adapter.config, adapter.base_model_name_or_path,
                        modules, tensors)


def read_adapter(adapter_dir: Path) -> QAAAdapter:
    meta, tensors = read_adapter_files(adapter_dir, WEIGHTS_FILE, CONFIG_FILE, FORMAT, "QAA")
    modules = {}
    for name, info in meta["modules"].items():
        spec = CircuitSpec(int(info["n_qubits"]), int(info["layers"]), info["ansatz"], info["readout"])
        names = TENSORS if info["bias"] else TENSORS[:2]
        values = module_tensors(tensors, name, names, adapter_dir, WEIGHTS_FILE)
        modules[name] = ModuleAdapter(spec, int(info["in_features"]), int(info["out_features"]), values["qaa_angles"],
                                      values["qaa_up"], values.get("qaa_bias"), bool(info["conv1d"]))
    return QAAAdapter(meta["config"], modules, meta.get("base_model_name_or_path"))

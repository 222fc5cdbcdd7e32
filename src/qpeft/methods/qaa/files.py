"""QAA's adapter files, and the trained circuits as OpenQASM (``qpeft qasm``).

``run_dir/adapter`` holds ``qaa_config.json`` (format tag, the method config, and per
adapted module its widths, qubits and whether it wraps a GPT-2 Conv1D) and
``qaa_adapter.safetensors`` (``<module>.qaa_angles``, ``<module>.qaa_up`` and, with a bias,
``<module>.qaa_bias``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qpeft.errors import UsageError
from qpeft.io import read_json, write_json
from qpeft.methods.adapter_files import missing_tensor, read_adapter_files, write_adapter_files
from qpeft.methods.qaa.layer import qaa_layers
from qpeft.quantum import CircuitSpec, to_qasm

CONFIG_FILE = "qaa_config.json"
WEIGHTS_FILE = "qaa_adapter.safetensors"
FORMAT = "qpeft-qaa/1"
QASM_VERSIONS = {"2": (2,), "3": (3,), "both": (2, 3)}
QASM_SUFFIX = {2: ".qasm", 3: ".qasm3"}


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
    extra: dict[str, Any] = field(default_factory=dict)


def adapter_from_model(model: nn.Module, config: dict[str, Any]) -> QAAAdapter:
    modules = {
        name: ModuleAdapter(
            spec=layer.spec,
            in_features=layer.in_features,
            out_features=layer.out_features,
            angles=layer.qaa_angles.detach().cpu().clone(),
            up=layer.qaa_up.detach().cpu().clone(),
            bias=None if layer.qaa_bias is None else layer.qaa_bias.detach().cpu().clone(),
            conv1d=layer.is_conv1d,
        )
        for name, layer in qaa_layers(model)
    }
    if not modules:
        raise UsageError("this model carries no QAA adapter")
    model_config = getattr(model, "config", None)
    return QAAAdapter(dict(config), modules, getattr(model_config, "name_or_path", None) or None)


def write_adapter(adapter: QAAAdapter, out_dir: Path) -> None:
    tensors = {}
    for name, module in adapter.modules.items():
        tensors[f"{name}.qaa_angles"] = module.angles
        tensors[f"{name}.qaa_up"] = module.up
        if module.bias is not None:
            tensors[f"{name}.qaa_bias"] = module.bias
    write_adapter_files(out_dir, WEIGHTS_FILE, CONFIG_FILE, {
        "format": FORMAT,
        "config": adapter.config,
        "base_model_name_or_path": adapter.base_model_name_or_path,
        "modules": {
            name: {"in_features": m.in_features, "out_features": m.out_features, "conv1d": m.conv1d,
                   "n_qubits": m.spec.n_qubits, "layers": m.spec.n_layers, "ansatz": m.spec.ansatz,
                   "readout": m.spec.readout, "bias": m.bias is not None}
            for name, m in adapter.modules.items()
        },
    }, tensors)


def read_adapter(adapter_dir: Path) -> QAAAdapter:
    meta, tensors = read_adapter_files(adapter_dir, WEIGHTS_FILE, CONFIG_FILE, FORMAT, "QAA")
    modules = {}
    for name, info in meta["modules"].items():
        spec = CircuitSpec(int(info["n_qubits"]), int(info["layers"]), info["ansatz"], info["readout"])
        try:
            modules[name] = ModuleAdapter(
                spec, int(info["in_features"]), int(info["out_features"]), tensors[f"{name}.qaa_angles"],
                tensors[f"{name}.qaa_up"], tensors[f"{name}.qaa_bias"] if info["bias"] else None,
                bool(info["conv1d"]),
            )
        except KeyError as error:
            raise missing_tensor(adapter_dir, WEIGHTS_FILE, error) from None
    return QAAAdapter(meta["config"], modules, meta.get("base_model_name_or_path"))


def qaa_run_adapter(run_dir: Path) -> QAAAdapter:
    """The trained adapter of a QAA run folder, with clear errors for anything else."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise UsageError(f"{run_dir} is not a qpeft run folder (no config.json)")
    method = read_json(config_path).get("method")
    if method != "qaa":
        raise UsageError(f"{run_dir} is a {method!r} run, not a QAA run: only QAA adapters are quantum circuits")
    if not (run_dir / "adapter").exists():
        raise UsageError(f"{run_dir} has no trained adapter yet; run training to the end first")
    return read_adapter(run_dir / "adapter")


def export_qasm(run_dir: Path, out_dir: Path | None = None, version: str = "both") -> list[Path]:
    """Write every trained circuit of a QAA run as OpenQASM 2 (``.qasm``) and/or 3 (``.qasm3``).

    Files are ``<out_dir>/<module name>.qasm[3]`` (default ``out_dir``: ``run_dir/qasm``) plus
    ``index.json``. Each circuit is the parameterised part only, with the trained angles; on
    hardware it follows the amplitude embedding of the token's input (normalised, zero-padded to
    2**n) and ends with a Z measurement of every qubit. Qiskit numbers qubits little-endian: qpeft's
    wire q is ``q[n-1-q]`` in the files.
    """
    if version not in QASM_VERSIONS:
        raise UsageError(f"--version must be one of {', '.join(QASM_VERSIONS)}, got {version!r}")
    adapter = qaa_run_adapter(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "qasm"
    out_dir.mkdir(parents=True, exist_ok=True)
    written, index = [], {}
    for name, module in adapter.modules.items():
        files = []
        for number in QASM_VERSIONS[version]:
            path = out_dir / f"{name}{QASM_SUFFIX[number]}"
            path.write_text(to_qasm(module.spec, module.angles.double(), number))
            written.append(path)
            files.append(path.name)
        index[name] = {"files": files, "n_qubits": module.spec.n_qubits, "layers": module.spec.n_layers,
                       "ansatz": module.spec.ansatz, "readout": module.spec.readout,
                       "in_features": module.in_features, "out_features": module.out_features}
    write_json(out_dir / "index.json", {
        "run": str(run_dir),
        "note": "parameterised circuit only: prepare the amplitude-embedded input first (normalised, zero-padded "
                "to 2**n); qpeft wire q is Qiskit qubit n-1-q; readout: Z expectation of every qubit ('z') or "
                "the basis probabilities ('probs')",
        "modules": index,
    })
    return written

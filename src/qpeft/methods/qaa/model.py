"""QAA on a model: inject the layers, find them, and save and load the adapter folder.

``run_dir/adapter`` holds PEFT's two files (see ``qpeft.methods.serialization``):
``adapter_config.json`` (format tag, the method config, and per adapted module its widths,
qubits and whether it wraps a GPT-2 Conv1D) and ``adapter_model.safetensors`` (the
``qaa_angles``, ``qaa_up`` and, with a bias, ``qaa_bias`` of each module). Runs saved before
that layout (``qaa_config.json`` + ``qaa_adapter.safetensors``) load as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from qpeft.methods.qaa.config import QAAConfig
from qpeft.methods.qaa.layer import QAALinear
from qpeft.methods.serialization import AdapterFormat, SavedAdapter, check_shape
from qpeft.quantum import CircuitSpec, n_qubits_for_width
from qpeft.utils.errors import UsageError


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

    fact_types: ClassVar[dict[str, type]] = {
        "in_features": int, "out_features": int, "conv1d": bool, "n_qubits": int, "layers": int, "ansatz": str,
        "readout": str, "bias": bool}

    @classmethod
    def from_layer(cls, layer: QAALinear) -> ModuleAdapter:
        state = layer.adapter_state()
        return cls(layer.spec, layer.in_features, layer.out_features, state["qaa_angles"], state["qaa_up"],
                   state["qaa_bias"], layer.is_conv1d)

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> ModuleAdapter:
        """The module from checked facts (``fact_types``); tensors whose shapes the facts contradict are refused."""
        spec = CircuitSpec(facts["n_qubits"], facts["layers"], facts["ansatz"], facts["readout"])
        in_features, out_features = facts["in_features"], facts["out_features"]
        if spec.n_qubits != n_qubits_for_width(in_features):  # the amplitude embedding fixes the qubits
            raise UsageError(f"n_qubits {spec.n_qubits} does not fit in_features {in_features}")
        check_shape("qaa_angles", tensors["qaa_angles"], spec.angle_shape)
        check_shape("qaa_up", tensors["qaa_up"], (out_features, spec.output_dim))
        if facts["bias"]:
            check_shape("qaa_bias", tensors["qaa_bias"], (out_features,))
        return cls(spec, in_features, out_features, tensors["qaa_angles"], tensors["qaa_up"], tensors.get("qaa_bias"),
                   facts["conv1d"])

    def state(self) -> dict[str, torch.Tensor | None]:
        """The tensors under the layer's parameter names (``QAALinear.adapter_param_names``)."""
        return {"qaa_angles": self.angles, "qaa_up": self.up, "qaa_bias": self.bias}

    def facts(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "conv1d": self.conv1d,
                "n_qubits": self.spec.n_qubits, "layers": self.spec.n_layers, "ansatz": self.spec.ansatz,
                "readout": self.spec.readout, "bias": self.bias is not None}


@dataclass
class QAAAdapter(SavedAdapter):
    """Everything needed to rebuild a trained QAA adapter or export its circuits, without the base model."""

    modules: dict[str, ModuleAdapter]

    layer_class = QAALinear
    module_class = ModuleAdapter
    adapter_format = AdapterFormat("qaa", "qpeft-qaa/1", "QAA")
    config_class = QAAConfig

    @classmethod
    def tensor_names(cls, facts: dict[str, Any]) -> tuple[str, ...]:
        """The bias only with ``bias=True``."""
        return tuple(name for name in QAALinear.adapter_param_names if facts["bias"] or name != "qaa_bias")


#: (name, layer) for every QAALinear of a model; the name is that of the wrapped module.
qaa_layers = QAALinear.layers_in
#: Wrap a model's target linear layers (by ``config.target_modules``, or exactly ``names``) in place.
inject = QAALinear.inject
adapter_from_model = QAAAdapter.from_model
read_adapter = QAAAdapter.read
write_adapter = QAAAdapter.write


def from_pretrained(base_model: nn.Module, adapter_dir: Path) -> nn.Module:
    """The trained model rebuilt on ``base_model`` in its inference form (``QAALinear.to_inference``), frozen."""
    # The saved angles overwrite the start, so none is drawn (no random numbers are used up).
    for layer in read_adapter(adapter_dir).load_into(base_model, angle_init="zeros").values():
        layer.to_inference()
    return base_model.requires_grad_(False).eval()

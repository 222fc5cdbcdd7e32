"""What a trained QAA adapter costs on quantum hardware: gates, depth and state preparation, per token and step."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from qpeft.methods.qaa.layer import QAALinear
from qpeft.quantum import PROFILES, resources
from qpeft.quantum.hardware import device_figures
from qpeft.utils.extras import QUANTUM_INSTALL, is_available

log = logging.getLogger(__name__)

#: What ``metrics.json`` says in place of the figures when Qiskit, which counts them, is not installed.
UNAVAILABLE_NOTE = f"not computed: the state-preparation and gate counts need Qiskit ({QUANTUM_INSTALL})"


def resource_figures(layers: dict[str, QAALinear], step_tokens: float | None) -> dict[str, Any]:
    """``metrics.json`` figures: quantum resources per adapter and in total, per token and per step.

    One token through the model runs every adapter's circuit once, each on a freshly prepared
    amplitude-embedded state; a training step does that for every token of the batch (forward
    pass only: gradients on hardware would need further runs, e.g. two per angle by parameter
    shift). Counts are per circuit run; multiply by shots for executions on hardware.
    Without Qiskit (an optional extra) the figures are marked unavailable, see ``unavailable_figures``.
    """
    if not layers:
        return {}
    if not is_available("qiskit"):
        return unavailable_figures()
    per_adapter = {}
    for name, layer in layers.items():
        with quiet_qiskit():
            figures = resources(layer.spec)
        per_adapter[name] = {**figures, "in_features": layer.in_features, "out_features": layer.out_features,
                             "readout": layer.spec.readout, "ansatz": layer.spec.ansatz}
    entries = list(per_adapter.values())
    total: dict[str, Any] = {
        "adapters": len(entries),
        "qubits_max": max(e["qubits"] for e in entries),
        "qubits_total": sum(e["qubits"] for e in entries),
        "depth_max": max(e["depth"] for e in entries),
        "circuit_runs_per_token": len(entries),
        "rotations_per_token": sum(e["rotations"] for e in entries),
        "cnots_per_token": sum(e["cnots"] for e in entries),
        "state_prep_cnots_per_token": sum(e["state_prep"]["cnots"] for e in entries),
        "state_prep_single_qubit_per_token": sum(e["state_prep"]["single_qubit"] for e in entries),
        "state_prep_depth_max": max(e["state_prep"]["depth"] for e in entries),
        "tokens_per_step": step_tokens,
    }
    if step_tokens is not None:
        for key in ("circuit_runs", "rotations", "cnots", "state_prep_cnots", "state_prep_single_qubit"):
            total[f"{key}_per_step"] = step_tokens * total[f"{key}_per_token"]
    first = entries[0]
    return {
        "qaa_adapters": total["adapters"],
        "qaa_qubits": total["qubits_max"],
        "qaa_circuit_depth": total["depth_max"],
        "qaa_rotations_per_circuit": first["rotations"] if _uniform(entries, "rotations") else None,
        "qaa_cnots_per_circuit": first["cnots"] if _uniform(entries, "cnots") else None,
        "qaa_state_prep_cnots_per_circuit": max(e["state_prep"]["cnots"] for e in entries),
        "qaa_state_prep_cnots_per_token": total["state_prep_cnots_per_token"],
        "qaa_tokens_per_step": step_tokens,
        "qaa_circuit_runs_per_step": total.get("circuit_runs_per_step"),
        "qaa_state_prep_cnots_per_step": total.get("state_prep_cnots_per_step"),
        "qaa_resources": {"total": total, "per_adapter": per_adapter},
        "qaa_hardware": hardware_figures(layers),
    }


def hardware_figures(layers: dict[str, QAALinear]) -> dict[str, dict[str, Any]]:
    """Per device profile: the circuits' fidelity and what one token costs in time, per shot.

    One token runs every adapter's circuit, one after another (each needs the previous layer's
    output), each ``shots`` times: ``seconds_per_token_per_shot`` is the sum of their shot times,
    so a token at S shots takes S times as long. Queueing, compilation and classical transfer
    between circuits are not counted.
    """
    figures = {}
    for name, profile in PROFILES.items():
        with quiet_qiskit():
            per_layer = [device_figures(layer.spec, profile) for layer in layers.values()]
        figures[name] = {
            **profile.describe(),
            "two_qubit_gates_per_circuit_max": max(f["two_qubit_gates"] for f in per_layer),
            "fidelity_min": min(f["fidelity"] for f in per_layer),
            "fidelity_max": max(f["fidelity"] for f in per_layer),
            "circuit_runs_per_token": len(per_layer),
            "seconds_per_token_per_shot": sum(f["shot_seconds"] for f in per_layer),
        }
    return figures


def unavailable_figures() -> dict[str, Any]:
    """The honest stand-in: no numbers, a note saying why, and one log line, so training still succeeds."""
    log.info("QAA gate and state-preparation counts not computed: %s adds them to metrics.json", QUANTUM_INSTALL)
    return {"qaa_resources": None, "qaa_resources_note": UNAVAILABLE_NOTE}


@contextlib.contextmanager
def quiet_qiskit() -> Iterator[None]:
    """Qiskit's transpiler logs every pass at INFO, which the CLI's logging would print."""
    logger = logging.getLogger("qiskit")
    previous = logger.level
    logger.setLevel(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _uniform(entries: list[dict[str, Any]], key: str) -> bool:
    return len({e[key] for e in entries}) == 1

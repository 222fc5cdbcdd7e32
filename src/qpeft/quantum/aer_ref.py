"""Qiskit Aer's density-matrix simulation of the device circuit under per-gate noise: the reference that checks
the hardware model's global-depolarising approximation (``qpeft.quantum.hardware``).

Slow (O(4**n) per gate, one input at a time) and needs ``qiskit-aer`` (the ``test`` and ``bench`` extras).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from qpeft.quantum.circuit import CircuitSpec, z_signs
from qpeft.quantum.hardware import GateErrors


def aer_noise_model(errors: GateErrors) -> Any:
    """Depolarising channels of the errors' average infidelities after every u and cx, and a bit flip of the
    readout probability on a final ``id`` per qubit (Aer keeps its own readout errors out of saved states)."""
    from qiskit_aer.noise import NoiseModel, depolarizing_error, pauli_error

    model = NoiseModel(basis_gates=["cx", "u", "id"])
    if errors.single:
        model.add_all_qubit_quantum_error(depolarizing_error(errors.depolarizing_parameter(1), 1), ["u"])
    if errors.two:
        model.add_all_qubit_quantum_error(depolarizing_error(errors.depolarizing_parameter(2), 2), ["cx"])
    if errors.readout:
        model.add_all_qubit_quantum_error(pauli_error([("X", errors.readout), ("I", 1 - errors.readout)]), ["id"])
    return model


def aer_density_readout(x: Tensor, angles: Tensor, spec: CircuitSpec, errors: GateErrors) -> tuple[Tensor, Any]:
    """The readout (spec.output_dim) of one input under per-gate noise, and the transpiled circuit it ran.

    The circuit is the device's: state preparation and trained layers transpiled to {cx, u}
    (all-to-all), then the readout bit flips and the basis probabilities of the density matrix.
    """
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    from qpeft.quantum.qiskit_export import to_qiskit

    circuit = transpile(to_qiskit(spec, angles, x), basis_gates=["cx", "u"], optimization_level=1, seed_transpiler=0)
    measured = circuit.copy()
    for qubit in range(spec.n_qubits):
        measured.id(qubit)
    measured.save_probabilities()
    simulator = AerSimulator(method="density_matrix", noise_model=aer_noise_model(errors))
    result = simulator.run(transpile(measured, simulator, optimization_level=0)).result()
    probs = torch.tensor(result.data()["probabilities"], dtype=torch.float64)  # Qiskit's little-endian = ours
    readout = probs @ z_signs(spec.n_qubits, probs.device, probs.dtype) if spec.readout == "z" else probs
    return readout, circuit

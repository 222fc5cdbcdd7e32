"""The QAA circuit for quantum hardware: Qiskit circuits, OpenQASM, and resource counts.

Qiskit numbers qubits little-endian (qubit 0 is the least significant bit of a basis index)
while qpeft's wire 0 is the most significant. Our wire q is therefore Qiskit qubit n - 1 - q;
with that mapping a basis index means the same state in both, so ``Statevector`` data and
our amplitudes line up index for index.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from qpeft.quantum.circuit import CircuitSpec
from qpeft.utils.errors import UsageError


def to_qiskit(spec: CircuitSpec, angles: Tensor | None = None, x: Tensor | None = None) -> Any:
    """The circuit as a ``qiskit.QuantumCircuit``.

    ``angles`` (shape ``spec.angle_shape``) fixes the rotations; without it they are free
    parameters ``theta[i]`` in the flattened order of an angle tensor. ``x`` (one input of
    width <= 2**n) prepends the preparation of its amplitude-embedded state.
    """
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    n = spec.n_qubits
    if angles is None:
        values = list(ParameterVector("theta", spec.n_angles))
    elif tuple(angles.shape) != spec.angle_shape:
        raise UsageError(f"angles have shape {tuple(angles.shape)}, expected {spec.angle_shape}")
    else:
        values = angles.detach().cpu().double().reshape(-1).tolist()
    circuit = QuantumCircuit(n, name="qaa")
    if x is not None:
        circuit.append(_state_preparation(x, spec.dim), range(n))
    for gate in spec.gates():
        qubits = [n - 1 - q for q in gate.wires]
        if gate.name == "CNOT":
            circuit.cx(*qubits)
        else:
            angle = values[_flat_index(gate.angle, spec.angle_shape)]
            getattr(circuit, gate.name.lower())(angle, *qubits)
    return circuit


def _flat_index(index: tuple[int, ...], shape: tuple[int, ...]) -> int:
    flat = 0
    for i, size in zip(index, shape, strict=True):
        flat = flat * size + i
    return flat


def _state_preparation(x: Tensor, dim: int) -> Any:
    from qiskit.circuit.library import StatePreparation

    if x.dim() != 1 or x.shape[0] > dim:
        raise UsageError(f"x must be one vector of width <= {dim}, got shape {tuple(x.shape)}")
    amplitudes = torch.zeros(dim, dtype=torch.float64)
    amplitudes[: x.shape[0]] = x.detach().cpu().double()
    norm = amplitudes.norm()
    if norm == 0:
        raise UsageError("a zero input vector has no quantum state to prepare")
    return StatePreparation((amplitudes / norm).tolist())


def to_qasm(spec: CircuitSpec, angles: Tensor, version: int = 2) -> str:
    """OpenQASM 2 or 3 text of the circuit with the given angles (without the state preparation)."""
    circuit = to_qiskit(spec, angles)
    if version == 2:
        from qiskit import qasm2

        return qasm2.dumps(circuit)
    if version == 3:
        from qiskit import qasm3

        return qasm3.dumps(circuit)
    raise UsageError(f"OpenQASM version must be 2 or 3, got {version}")


def resources(spec: CircuitSpec) -> dict[str, Any]:
    """Quantum resources to run the circuit on one token (one input vector).

    ``depth``, ``rotations`` and ``cnots`` describe the parameterised circuit; ``state_prep``
    is the cost of loading one dense input into amplitudes (see ``state_prep_cost``), which
    dominates. Multiply by tokens per step (and by shots on hardware) for totals.
    """
    circuit = to_qiskit(spec)
    ops = circuit.count_ops()
    return {
        "qubits": spec.n_qubits,
        "layers": spec.n_layers,
        "depth": circuit.depth(),
        "rotations": ops.get("ry", 0) + ops.get("rz", 0),
        "cnots": ops.get("cx", 0),
        "state_prep": state_prep_cost(spec.n_qubits),
    }


@functools.cache
def state_prep_cost(n_qubits: int) -> dict[str, int]:
    """CNOTs, single-qubit gates and depth to prepare a generic dense real state on n qubits.

    Qiskit's ``StatePreparation`` of a random dense vector, transpiled to the basis
    {cx, u} at optimisation level 1; the count is the same for every dense input.
    """
    from qiskit import QuantumCircuit, transpile

    generator = torch.Generator().manual_seed(0)
    vector = torch.randn(2**n_qubits, generator=generator, dtype=torch.float64)
    circuit = QuantumCircuit(n_qubits)
    circuit.append(_state_preparation(vector, 2**n_qubits), range(n_qubits))
    compiled = transpile(circuit, basis_gates=["cx", "u"], optimization_level=1)
    ops = compiled.count_ops()
    return {"cnots": ops.get("cx", 0), "single_qubit": ops.get("u", 0), "depth": compiled.depth()}

"""Qiskit export: same states as the simulator, QASM that parses back, resource counts."""

import importlib.util
import re

import pytest
import torch
from qiskit import qasm2, qasm3
from qiskit.quantum_info import Statevector

from qpeft.quantum import CircuitSpec, resources, simulate, state_prep_cost, to_qasm, to_qiskit
from qpeft.utils.errors import UsageError


def draw(spec: CircuitSpec, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(max(1, spec.dim - 3), generator=gen, dtype=torch.float64)
    return x, torch.randn(spec.angle_shape, generator=gen, dtype=torch.float64) * 2


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("ansatz", ["ry", "ry_rz"])
def test_statevector_readout_matches_simulator(n, ansatz):
    spec = CircuitSpec(n, 2, ansatz)
    x, angles = draw(spec, seed=n)
    state = Statevector(to_qiskit(spec, angles, x))
    probs = torch.tensor(state.probabilities(), dtype=torch.float64)
    ours_probs = simulate(x, angles, CircuitSpec(n, 2, ansatz, "probs"))
    assert (probs - ours_probs).abs().max() <= 1e-8
    # Z on our wire q is Qiskit's qubit n - 1 - q.
    z = torch.tensor(
        [state.expectation_value(_pauli_z(n, n - 1 - q)).real for q in range(n)], dtype=torch.float64
    )
    assert (z - simulate(x, angles, spec)).abs().max() <= 1e-8


def _pauli_z(n: int, qubit: int):
    from qiskit.quantum_info import Pauli

    return Pauli("".join("Z" if i == qubit else "I" for i in reversed(range(n))))


def test_parametric_circuit_binds_to_the_same_circuit():
    spec = CircuitSpec(3, 2, "ry_rz")
    _, angles = draw(spec)
    free = to_qiskit(spec)
    assert free.num_parameters == spec.n_angles
    bound = free.assign_parameters(dict(zip(free.parameters, _sorted_values(free, angles), strict=True)))
    assert Statevector(bound).equiv(Statevector(to_qiskit(spec, angles)))


def _sorted_values(circuit, angles):
    # ParameterVector elements sort by index, which is the flattened angle order.
    return [angles.reshape(-1)[p.index].item() for p in circuit.parameters]


def test_qasm2_round_trip():
    spec = CircuitSpec(4, 2, "ry_rz")
    _, angles = draw(spec)
    text = to_qasm(spec, angles, version=2)
    assert text.startswith("OPENQASM 2.0;")
    back = qasm2.loads(text)
    assert Statevector(back).equiv(Statevector(to_qiskit(spec, angles)))


def test_qasm3_text():
    spec = CircuitSpec(3, 1)
    _, angles = draw(spec)
    text = to_qasm(spec, angles, version=3)
    assert text.startswith("OPENQASM 3.0;")
    assert len(re.findall(r"^ry\(", text, flags=re.M)) == 3
    # Ring CNOT(0,1), (1,2), (2,0) on our wires is cx q[2],q[1]; cx q[1],q[0]; cx q[0],q[2] in Qiskit's.
    assert re.findall(r"^cx q\[(\d)\], q\[(\d)\];", text, flags=re.M) == [("2", "1"), ("1", "0"), ("0", "2")]
    if importlib.util.find_spec("qiskit_qasm3_import") is not None:
        assert Statevector(qasm3.loads(text)).equiv(Statevector(to_qiskit(spec, angles)))
    with pytest.raises(UsageError):
        to_qasm(spec, angles, version=4)


@pytest.mark.parametrize(
    ("n", "layers", "ansatz"), [(1, 3, "ry"), (2, 2, "ry"), (5, 3, "ry_rz"), (10, 2, "ry")]
)
def test_resources(n, layers, ansatz):
    spec = CircuitSpec(n, layers, ansatz)
    counts = resources(spec)
    assert counts["qubits"] == n and counts["layers"] == layers
    assert counts["rotations"] == spec.n_angles
    assert counts["cnots"] == (layers * n if n >= 2 else 0)
    assert counts["depth"] >= layers * (2 if ansatz == "ry_rz" else 1)
    prep = counts["state_prep"]
    assert prep == state_prep_cost(n)
    assert prep["cnots"] <= 2**n and prep["single_qubit"] >= 1 and prep["depth"] >= 1


def test_export_rejects_bad_inputs():
    spec = CircuitSpec(2, 1)
    with pytest.raises(UsageError):
        to_qiskit(spec, torch.zeros(2, 2))
    with pytest.raises(UsageError):
        to_qiskit(spec, torch.zeros(1, 2), torch.zeros(3))
    with pytest.raises(UsageError):
        to_qiskit(spec, torch.zeros(1, 2), torch.ones(5))

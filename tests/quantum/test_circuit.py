"""The circuit description: validation, sizes and gate order."""

import pytest

from qpeft.quantum import CircuitSpec, Gate, n_qubits_for_width
from qpeft.utils.errors import UsageError


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_qubits": 0, "n_layers": 1},
        {"n_qubits": -2, "n_layers": 1},
        {"n_qubits": 3, "n_layers": 0},
        {"n_qubits": 3, "n_layers": -1},
        {"n_qubits": 3, "n_layers": 1, "ansatz": "rx"},
        {"n_qubits": 3, "n_layers": 1, "readout": "x"},
    ],
)
def test_bad_specs_raise_usage_error(kwargs):
    with pytest.raises(UsageError):
        CircuitSpec(**kwargs)


def test_widths_and_sizes():
    assert [n_qubits_for_width(d) for d in (1, 2, 3, 4, 5, 576, 1024, 1025)] == [1, 1, 2, 2, 3, 10, 10, 11]
    with pytest.raises(UsageError):
        n_qubits_for_width(0)
    spec = CircuitSpec(10, 2)
    assert (spec.angle_shape, spec.n_angles, spec.output_dim, spec.dim) == ((2, 10), 20, 10, 1024)
    rich = CircuitSpec(3, 2, "ry_rz", "probs")
    assert (rich.angle_shape, rich.n_angles, rich.output_dim) == ((2, 2, 3), 12, 8)


def test_gate_order():
    assert CircuitSpec(2, 1).gates() == [
        Gate("RY", (0,), (0, 0)),
        Gate("RY", (1,), (0, 1)),
        Gate("CNOT", (0, 1)),
        Gate("CNOT", (1, 0)),
    ]
    ring = [g.wires for g in CircuitSpec(4, 1).gates() if g.name == "CNOT"]
    assert ring == [(0, 1), (1, 2), (2, 3), (3, 0)]
    # One qubit: no ring; ry_rz puts RZ right after RY on the same wire.
    assert CircuitSpec(1, 2, "ry_rz").gates() == [
        Gate("RY", (0,), (0, 0, 0)),
        Gate("RZ", (0,), (0, 1, 0)),
        Gate("RY", (0,), (1, 0, 0)),
        Gate("RZ", (0,), (1, 1, 0)),
    ]

"""QAA — quantum-amplitude embedded adaptation.

Each target linear layer becomes y = W0 x + s (W_up z(x) + b): x is amplitude-embedded
into n = ceil(log2 d_in) qubits, a parameterised circuit of L layers (RY rotations and a
CNOT ring) acts on it, and z is its measured readout (the n Pauli-Z expectations, or the 2**n
basis probabilities). W_up starts at zero, so training starts exactly at the base model.
The circuit is simulated exactly by ``qpeft.quantum.simulate`` (batched over tokens, with a
memory-lean backward); the trained circuits export to OpenQASM (``qpeft qasm``), evaluate
under shots and depolarising noise (``qpeft evaluate --qaa-shots N --qaa-depolarizing p``),
and report the quantum resources they need.
"""

from qpeft.methods.qaa.adapter import QAAAdapter, read_adapter
from qpeft.methods.qaa.config import ROBUSTNESS_GRID, QAAConfig, QAAEvalOptions
from qpeft.methods.qaa.layer import ANGLE_INITS, QAALinear, inject, qaa_layers
from qpeft.methods.qaa.method import QAA
from qpeft.methods.qaa.qasm import export_qasm

__all__ = [
    "ANGLE_INITS", "QAA", "ROBUSTNESS_GRID", "QAAAdapter", "QAAConfig", "QAAEvalOptions", "QAALinear", "export_qasm",
    "inject", "qaa_layers", "read_adapter",
]

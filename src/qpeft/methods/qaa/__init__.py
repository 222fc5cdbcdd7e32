"""QAA — quantum-amplitude embedded adaptation.

Each target linear layer becomes y = W0 x + s (W_up z(x) + b): x is amplitude-embedded
into n = ceil(log2 d_in) qubits, a parameterised circuit of L layers (RY rotations and a
CNOT ring) acts on it, and z is its measured readout (the n Pauli-Z expectations, or the 2**n
basis probabilities). W_up starts at zero, so training starts exactly at the base model.
The circuit is simulated exactly by ``qpeft.quantum.simulate`` (batched over tokens, with a
memory-lean backward); the trained circuits export to OpenQASM (``qpeft qasm``), evaluate
under shots and depolarising noise (``qpeft evaluate --qaa-shots N --qaa-depolarizing p``),
and report the quantum resources they need.

Files, as in every PEFT tuner: ``config`` (the options, eval options and robustness grid),
``layer`` (``QAALinear``), ``model`` (inject, find layers, save and load the adapter folder),
plus ``capacity``, ``resources``, ``qasm`` and ``method`` (the recipe hooks).
"""

from qpeft.methods.qaa.config import ANGLE_INITS, ROBUSTNESS_GRID, QAAConfig, QAAEvalOptions
from qpeft.methods.qaa.layer import QAALinear
from qpeft.methods.qaa.method import QAA
from qpeft.methods.qaa.model import QAAAdapter, from_pretrained, inject, qaa_layers, read_adapter
from qpeft.methods.qaa.qasm import export_qasm

__all__ = [
    "ANGLE_INITS", "QAA", "ROBUSTNESS_GRID", "QAAAdapter", "QAAConfig", "QAAEvalOptions", "QAALinear", "export_qasm",
    "from_pretrained", "inject", "qaa_layers", "read_adapter",
]

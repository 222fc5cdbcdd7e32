"""QAA's quantum circuit: its description, a fast PyTorch simulator, noise, and hardware export.

The PennyLane and Qiskit back-ends import their (optional) libraries only when called.
"""

from qpeft.quantum.circuit import CircuitSpec, Gate, n_qubits_for_width
from qpeft.quantum.hardware import PROFILES, DeviceProfile, GateErrors, device_profile
from qpeft.quantum.noise import depolarized_probs, hardware_probs, sample_readout, simulate_noisy
from qpeft.quantum.pennylane_ref import pennylane_reference
from qpeft.quantum.qiskit_export import resources, state_prep_cost, to_qasm, to_qiskit
from qpeft.quantum.simulator import simulate

__all__ = [
    "PROFILES",
    "CircuitSpec",
    "DeviceProfile",
    "Gate",
    "GateErrors",
    "depolarized_probs",
    "device_profile",
    "hardware_probs",
    "n_qubits_for_width",
    "pennylane_reference",
    "resources",
    "sample_readout",
    "simulate",
    "simulate_noisy",
    "state_prep_cost",
    "to_qasm",
    "to_qiskit",
]

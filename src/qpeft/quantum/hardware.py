"""The QAA circuit on a real device: per-gate error rates, device profiles, the circuit a device runs, and its time.

Error convention (one for all of qpeft's hardware evaluation). A gate's error rate ε is what
vendors publish: its average gate infidelity from randomised benchmarking. The model puts a
depolarising channel after each gate whose average infidelity is ε: on k qubits (d = 2**k) it
applies a uniformly random non-identity Pauli with probability e = ε (d + 1) / d (Qiskit's
``depolarizing_error`` with parameter ε d / (d - 1)). Readout flips each measured bit with
probability ε_readout, whatever its value.

The circuit a device runs is the whole of it: the amplitude-embedding state preparation
(Qiskit's ``StatePreparation`` of a dense input), the trained layers and the measurement,
transpiled to the basis {cx, u} at optimisation level 1, and routed onto a heavy-hex lattice
for a heavy-hex device. The counts do not depend on the input (any dense vector needs the same
gates), so one representative circuit per (qubits, layers, ansatz, connectivity) gives them.

Its total fidelity F is the probability that no gate's error fires: the product of (1 - e)
over all its gates. The evaluation's global-depolarising approximation (``noise.hardware_probs``)
keeps the ideal state with probability F and replaces it by the maximally mixed one otherwise;
``benchmarks/qaa_hardware_noise.py`` measures that against Qiskit Aer's density matrix under
the per-gate channels. Not modelled: crosstalk, leakage, idle decoherence (T1, T2 between
gates), coherent and non-uniform errors, and calibration drift.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from qpeft.quantum.circuit import CircuitSpec
from qpeft.utils.errors import UsageError

#: The connectivities a device profile can have: any pair interacts, or IBM's heavy-hex lattice.
CONNECTIVITIES = ("all-to-all", "heavy-hex")


@dataclass(frozen=True)
class GateErrors:
    """Error rates per single-qubit gate (u), per two-qubit gate (cx) and per measured bit (readout)."""

    single: float
    two: float
    readout: float

    def __post_init__(self) -> None:
        # Full depolarisation of a d-level system has average infidelity (d - 1) / d: 1/2 for one qubit,
        # 3/4 for two; a readout flip beyond 1/2 would be a relabelled bit, not an error.
        limits = {"single-qubit": (self.single, 0.5), "two-qubit": (self.two, 0.75), "readout": (self.readout, 0.5)}
        for name, (value, limit) in limits.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= limit):
                raise UsageError(f"the {name} error rate must lie in [0, {limit}], got {value!r}")

    @classmethod
    def parse(cls, text: str) -> GateErrors:
        """``"1q,2q,readout"``, e.g. ``"1e-4,1e-3,1e-2"``."""
        parts = [part.strip() for part in text.split(",")]
        try:
            values = [float(part) for part in parts]
        except ValueError:
            values = []
        if len(values) != 3:
            raise UsageError(f"--qaa-gate-errors takes three numbers 1q,2q,readout (e.g. 1e-4,1e-3,1e-2), got {text!r}")
        return cls(*values)

    def as_list(self) -> list[float]:
        return [self.single, self.two, self.readout]

    def pauli_error(self, qubits: int) -> float:
        """Probability e that the gate's channel applies a non-identity Pauli."""
        epsilon, d = self._infidelity_and_dimension(qubits)
        return epsilon * (d + 1) / d

    def depolarizing_parameter(self, qubits: int) -> float:
        """The parameter of Qiskit's ``depolarizing_error`` with this average infidelity."""
        epsilon, d = self._infidelity_and_dimension(qubits)
        return epsilon * d / (d - 1)

    def _infidelity_and_dimension(self, qubits: int) -> tuple[float, int]:
        return (self.single, 2) if qubits == 1 else (self.two, 4)


@dataclass(frozen=True)
class DeviceProfile:
    """A device's median error rates and timing, for ``--qaa-device``."""

    name: str
    description: str
    errors: GateErrors
    single_gate_s: float  # one u gate
    two_gate_s: float  # one cx (or, on a transport-based device, one layer of two-qubit gates)
    measure_s: float  # the final measurement
    shot_overhead_s: float  # reset, cooling or repetition delay before the next shot
    connectivity: str
    source: str

    def __post_init__(self) -> None:
        if self.connectivity not in CONNECTIVITIES:
            raise UsageError(f"profile {self.name}: connectivity must be one of {', '.join(CONNECTIVITIES)}")
        times = (self.single_gate_s, self.two_gate_s, self.measure_s, self.shot_overhead_s)
        if not all(math.isfinite(t) and t >= 0 for t in times):
            raise UsageError(f"profile {self.name}: gate and shot times must be non-negative seconds")

    def describe(self) -> dict[str, Any]:
        return {"device": self.name, "description": self.description, "gate_errors": self.errors.as_list(),
                "connectivity": self.connectivity, "source": self.source}


PROFILES = {
    profile.name: profile
    for profile in (
        # IBM Heron r2, the 156-qubit ibm_kingston: the medians over its qubits and pairs of the calibration
        # snapshot of 2026-04-15 that qiskit-ibm-runtime 0.51.0 ships (fake_provider/backends/kingston):
        # SX error 2.30e-4 and 32 ns, CZ error 1.80e-3 and 68 ns, readout error 9.5e-3 and 2.28 µs,
        # default repetition delay 250 µs. A u gate is two SX pulses and virtual RZ turns, so 4.6e-4 and 64 ns;
        # a CNOT is one CZ between single-qubit gates. Routing onto the heavy-hex lattice adds SWAPs.
        DeviceProfile("ibm-heron", "IBM Heron r2 (superconducting, ibm_kingston medians, 2026-04-15)",
                      GateErrors(4.6e-4, 1.8e-3, 9.5e-3), 64e-9, 68e-9, 2.28e-6, 250e-6, "heavy-hex",
                      "qiskit-ibm-runtime 0.51.0 fake_provider snapshot of ibm_kingston, 2026-04-15"),
        # Quantinuum H2 (trapped ions, all-to-all through ion transport): S. A. Moses et al., "A Race Track
        # Trapped-Ion Quantum Processor", Phys. Rev. X 13, 041052 (2023): single-qubit infidelity 1.8e-5,
        # two-qubit 1.0e-3, state preparation and measurement 1.6e-3. Its time is transport-dominated and
        # Quantinuum publishes it only as an average depth-1 circuit time in its data sheets, which were not
        # at hand: 1 ms per two-qubit layer and 1 ms of cooling, preparation and measurement per shot are an
        # order-of-magnitude assumption, not a published figure (replace them with the data sheet's).
        DeviceProfile("quantinuum-h2", "Quantinuum H2 (trapped ions; times an order-of-magnitude assumption)",
                      GateErrors(1.8e-5, 1.0e-3, 1.6e-3), 10e-6, 1e-3, 0.5e-3, 0.5e-3, "all-to-all",
                      "Moses et al., Phys. Rev. X 13, 041052 (2023); times assumed"),
    )
}


def device_profile(name: str) -> DeviceProfile:
    if name not in PROFILES:
        raise UsageError(f"unknown QAA device profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


@functools.cache
def device_circuit(n_qubits: int, layers: int, ansatz: str, connectivity: str = "all-to-all") -> Any:
    """The transpiled circuit a device runs for one token (a representative dense input and angles)."""
    from qiskit import transpile
    from qiskit.transpiler import CouplingMap

    from qpeft.quantum.qiskit_export import to_qiskit

    if connectivity not in CONNECTIVITIES:
        raise UsageError(f"connectivity must be one of {', '.join(CONNECTIVITIES)}, got {connectivity!r}")
    spec = CircuitSpec(n_qubits, layers, ansatz, "z")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(spec.dim, generator=generator, dtype=torch.float64)
    angles = torch.rand(spec.angle_shape, generator=generator, dtype=torch.float64) * (2 * math.pi)
    coupling = CouplingMap.from_heavy_hex(heavy_hex_distance(n_qubits)) if connectivity == "heavy-hex" else None
    return transpile(to_qiskit(spec, angles, x), basis_gates=["cx", "u"], coupling_map=coupling,
                     optimization_level=1, seed_transpiler=0)


def heavy_hex_distance(n_qubits: int) -> int:
    """The smallest (odd) heavy-hex code distance whose lattice, (5 d**2 - 2 d - 1) / 2 qubits, holds n."""
    distance = 3
    while (5 * distance**2 - 2 * distance - 1) // 2 < n_qubits:
        distance += 2
    return distance


def gate_counts(circuit: Any) -> dict[str, int]:
    """Single- and two-qubit gates of a transpiled circuit, and the qubits it measures (the circuit's own)."""
    ops = circuit.count_ops()
    unknown = set(ops) - {"u", "cx", "barrier"}
    if unknown:
        raise ValueError(f"expected a circuit in the basis {{cx, u}}, found {sorted(unknown)}")
    return {"single": ops.get("u", 0), "two": ops.get("cx", 0), "measured": circuit.num_qubits}


def circuit_fidelity(counts: dict[str, int], errors: GateErrors) -> float:
    """F: the probability that none of the circuit's gate errors fires (see the module docstring)."""
    return (1 - errors.pauli_error(1)) ** counts["single"] * (1 - errors.pauli_error(2)) ** counts["two"]


def circuit_seconds(circuit: Any, profile: DeviceProfile) -> float:
    """The circuit's duration as-soon-as-possible scheduled: a gate starts when all its qubits are free."""
    free = [0.0] * circuit.num_qubits
    for instruction in circuit.data:
        name = instruction.operation.name
        if name == "barrier":
            continue
        qubits = [circuit.find_bit(q).index for q in instruction.qubits]
        start = max(free[q] for q in qubits)
        end = start + (profile.two_gate_s if len(qubits) == 2 else profile.single_gate_s)
        for q in qubits:
            free[q] = end
    return max(free, default=0.0)


def shot_seconds(circuit: Any, profile: DeviceProfile) -> float:
    """One shot: the circuit, its measurement, and the device's overhead before the next shot."""
    return circuit_seconds(circuit, profile) + profile.measure_s + profile.shot_overhead_s


def device_figures(spec: CircuitSpec, profile: DeviceProfile) -> dict[str, Any]:
    """Gate counts, fidelity and one shot's time of the circuit ``spec`` on the device ``profile``."""
    circuit = device_circuit(spec.n_qubits, spec.n_layers, spec.ansatz, profile.connectivity)
    counts = gate_counts(circuit)
    return {**profile.describe(), "single_qubit_gates": counts["single"], "two_qubit_gates": counts["two"],
            "fidelity": circuit_fidelity(counts, profile.errors), "shot_seconds": shot_seconds(circuit, profile)}

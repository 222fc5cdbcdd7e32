"""QAA's config (``--qaa-<field>`` on train and compare), its eval options (``--qaa-<field>`` on evaluate) and the
robustness grid ``qpeft compare`` re-evaluates under, each with its help and its validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from qpeft.methods.base import EvalOptions, MethodConfig
from qpeft.quantum.circuit import ANSATZE, READOUTS
from qpeft.quantum.hardware import PROFILES, GateErrors, device_profile
from qpeft.utils.errors import UsageError
from qpeft.utils.extras import QUANTUM_INSTALL, is_available

#: How the circuit angles start (``angle_init``).
ANGLE_INITS = ("uniform", "normal", "zeros")


@dataclass
class QAAConfig(MethodConfig):
    # W_up and b. Measured on SmolLM2-135M / E2E at the demo budget (see README, "QAA"):
    # LoRA's 2e-4 barely moves a zero-initialised W_up whose inputs are bounded readouts.
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW learning rate of W_up and b"})
    # The angles are periodic, so they get no weight decay.
    angle_learning_rate: float = field(
        default=2e-2, metadata={"help": "the circuit angles' own learning rate (0: the same as learning_rate)"}
    )
    layers: int = field(default=2, metadata={"help": "circuit layers L (RY rotations and a CNOT ring each)"})
    ansatz: str = field(default="ry", metadata={"help": "ry, or ry_rz (adds RZ rotations: complex amplitudes)"})
    readout: str = field(
        default="z", metadata={"help": "z (n Pauli-Z expectations) or probs (2**n basis probabilities)"}
    )
    # z lies in [-1, 1]^n, like a unit-scale hidden state: no rescaling is needed, and the
    # learning rate alone sets how fast the update grows (as LoRA's alpha / r = 2 with its lr).
    scale: float = field(default=1.0, metadata={"help": "s, the factor of the update s (W_up z(x) + b)"})
    bias: bool = field(default=True, metadata={"help": "train the bias b of the update"})
    # The ablation of the circuit: frozen, z(x) is a fixed random quadratic map of the input.
    train_angles: bool = field(
        default=True, metadata={"help": "train the circuit angles (off: a fixed random circuit)"}
    )
    angle_init: str = field(
        default="uniform", metadata={"help": "the angles' start: uniform in [0, 2π), normal (N(0, 0.1²)) or zeros"}
    )
    target_modules: str = field(
        default="auto", metadata={"help": "'auto' (PEFT's per-architecture targets), 'all-linear' or module names"}
    )
    memory_lean: bool = field(
        default=True, metadata={"help": "the simulator's memory-lean backward (recomputes instead of storing states)"}
    )

    #: A learning-rate search scales both: the angles' rate keeps its ratio to W_up's.
    learning_rate_fields = ("learning_rate", "angle_learning_rate")

    def angle_lr(self) -> float:
        return self.angle_learning_rate or self.learning_rate

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.layers, int) or self.layers < 1:
            raise UsageError(f"QAA needs at least one circuit layer, got layers={self.layers}")
        if self.ansatz not in ANSATZE:
            raise UsageError(f"unknown QAA ansatz {self.ansatz!r} (choose from {', '.join(ANSATZE)})")
        if self.readout not in READOUTS:
            raise UsageError(f"unknown QAA readout {self.readout!r} (choose from {', '.join(READOUTS)})")
        if self.angle_init not in ANGLE_INITS:
            raise UsageError(f"unknown QAA angle_init {self.angle_init!r} (choose from {', '.join(ANGLE_INITS)})")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise UsageError(f"QAA scale must be a positive number, got {self.scale}")
        if not self.angle_learning_rate >= 0:
            raise UsageError(f"angle_learning_rate must be positive (or 0: same as learning_rate), "
                             f"got {self.angle_learning_rate}")
        if not self.target_modules.strip():
            raise UsageError("QAA target_modules: give 'auto', 'all-linear' or comma-separated module names")


@dataclass
class QAAEvalOptions(EvalOptions):
    """How the circuits are read at evaluation: ``qpeft evaluate --qaa-shots N`` with at most one noise model,
    ``--qaa-depolarizing p``, ``--qaa-gate-errors 1q,2q,readout`` or ``--qaa-device PROFILE``."""

    shots: int = field(
        default=0, metadata={"help": "0: exact expectation values; N: estimated from N measurements per token"}
    )
    depolarizing: float = field(
        default=0.0, metadata={"help": "strength p of rho -> (1 - p) rho + p I/2 on every qubit after every layer"}
    )
    gate_errors: str = field(
        default="", metadata={"help": "hardware noise on every gate of the device's circuit, state preparation "
                                      "included: error rates 1q,2q,readout (or 1q/2q/readout), all-to-all qubits"}
    )
    device: str = field(
        default="", metadata={"help": f"hardware noise of a device profile: {', '.join(PROFILES)}"}
    )
    noise_seed: int = field(
        default=0, metadata={"help": "seed of the shot draws (each adapted module gets noise_seed + its index)"}
    )

    def validate(self) -> None:
        if not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 0:
            raise UsageError(f"--qaa-shots must be a non-negative integer (0: exact), got {self.shots!r}")
        if not 0.0 <= self.depolarizing <= 1.0:
            raise UsageError(f"--qaa-depolarizing must lie in [0, 1], got {self.depolarizing}")
        models = [flag for flag, given in (("--qaa-depolarizing", self.depolarizing), ("--qaa-gate-errors",
                  self.gate_errors), ("--qaa-device", self.device)) if given]
        if len(models) > 1:
            raise UsageError(f"choose one noise model, not {' and '.join(models)}")
        if self.hardware() is not None and not is_available("qiskit"):
            raise UsageError(f"the hardware noise model counts the device's gates with Qiskit: {QUANTUM_INSTALL}")

    def hardware(self) -> tuple[GateErrors, str] | None:
        """The hardware model's error rates and connectivity, or None without one."""
        if self.device:
            profile = device_profile(self.device)
            return profile.errors, profile.connectivity
        if self.gate_errors:
            return GateErrors.parse(self.gate_errors.replace("/", ",")), "all-to-all"
        return None

    def describe(self) -> dict[str, Any]:
        hardware = self.hardware()
        return {"shots": self.shots or None, "depolarizing": float(self.depolarizing),
                "gate_errors": hardware[0].as_list() if hardware else None, "device": self.device or None,
                "noise_seed": self.noise_seed}

    def draws_samples(self) -> bool:
        return bool(self.shots)

    def tag(self) -> str:
        hardware = self.hardware()
        parts = [f"shots{self.shots}"] if self.shots else []
        parts += [f"dep{self.depolarizing:g}"] if self.depolarizing else []
        parts += [f"device-{self.device}"] if self.device else []
        parts += ["gates" + "-".join(f"{e:g}" for e in hardware[0].as_list())] if hardware and not self.device else []
        parts += [f"seed{self.noise_seed}"] if self.noise_seed else []
        return "_".join(parts) or "exact"


def gate_error_sweep(two_qubit: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)) -> tuple[QAAEvalOptions, ...]:
    """Hardware settings as two-qubit error rates fall: single-qubit a tenth of it, readout equal to it."""
    return tuple(QAAEvalOptions(gate_errors=f"{e / 10:g},{e:g},{e:g}") for e in two_qubit)


#: The circuit fully depolarised: every readout at its fully-mixed value (z = 0), so that every token gets the
#: same update (s b with the z readout). What QAA scores without anything its circuit computes from the input:
#: the floor that noise can take it down to, and the measure of how much of its gain is the circuit's.
CONSTANT_OUTPUT = QAAEvalOptions(depolarizing=1.0)

#: What ``qpeft compare`` re-evaluates a QAA run under (each is a full test-set evaluation): shot counts
#: without noise (which of them leaves the predictions unchanged), the hardware model as error rates fall,
#: each device profile, and the circuit's constant output.
ROBUSTNESS_GRID = (
    QAAEvalOptions(shots=100),
    QAAEvalOptions(shots=1000),
    QAAEvalOptions(shots=10000),
    QAAEvalOptions(shots=100000),
    QAAEvalOptions(shots=1000000),
    *gate_error_sweep(),
    *(QAAEvalOptions(device=name) for name in PROFILES),
    CONSTANT_OUTPUT,
)

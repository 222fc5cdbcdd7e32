"""What the QAA circuit is, independent of how it is simulated, and the index tables every simulator shares.

Conventions shared by every back-end:

- Wire 0 is the most significant bit of a basis index k (PennyLane's convention).
- Angle tensors: shape ``(L, n)`` for the ``"ry"`` ansatz (``angles[l, q]`` is RY on wire q
  in layer l); shape ``(L, 2, n)`` for ``"ry_rz"`` (``angles[l, 0, q]`` is the RY angle,
  ``angles[l, 1, q]`` the RZ angle that follows it).
- Each layer ends with a CNOT ring, control q, target (q + 1) mod n, for q = 0 .. n-1.
  With one qubit there is no other qubit to entangle, so the ring is empty.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from qpeft.utils.errors import UsageError

ANSATZE = ("ry", "ry_rz")
READOUTS = ("z", "probs")


@dataclass(frozen=True)
class Gate:
    """One gate: its name ("RY", "RZ" or "CNOT"), wires, and the index of its angle, if any."""

    name: str
    wires: tuple[int, ...]
    angle: tuple[int, ...] | None = None


def n_qubits_for_width(d: int) -> int:
    """Qubits whose amplitudes hold a vector of width d (at least one)."""
    if d < 1:
        raise UsageError(f"input width must be positive, got {d}")
    return max(1, math.ceil(math.log2(d)))


def ring_pairs(n: int) -> list[tuple[int, int]]:
    """(control, target) of the CNOT ring, in application order; empty for one qubit."""
    return [] if n == 1 else [(q, (q + 1) % n) for q in range(n)]


@dataclass(frozen=True)
class CircuitSpec:
    """Shape of a QAA circuit: qubits, layers, ansatz ("ry" | "ry_rz"), readout ("z" | "probs")."""

    n_qubits: int
    n_layers: int
    ansatz: str = "ry"
    readout: str = "z"

    def __post_init__(self) -> None:
        if not isinstance(self.n_qubits, int) or self.n_qubits < 1:
            raise UsageError(f"a circuit needs at least one qubit, got n_qubits={self.n_qubits}")
        if not isinstance(self.n_layers, int) or self.n_layers < 1:
            raise UsageError(f"a circuit needs at least one layer, got n_layers={self.n_layers}")
        if self.ansatz not in ANSATZE:
            raise UsageError(f"unknown ansatz {self.ansatz!r}; choose one of {', '.join(ANSATZE)}")
        if self.readout not in READOUTS:
            raise UsageError(f"unknown readout {self.readout!r}; choose one of {', '.join(READOUTS)}")

    @property
    def dim(self) -> int:
        """Length of the statevector, 2**n."""
        return 2**self.n_qubits

    @property
    def angle_shape(self) -> tuple[int, ...]:
        if self.ansatz == "ry":
            return (self.n_layers, self.n_qubits)
        return (self.n_layers, 2, self.n_qubits)

    @property
    def n_angles(self) -> int:
        return math.prod(self.angle_shape)

    @property
    def output_dim(self) -> int:
        return self.n_qubits if self.readout == "z" else self.dim

    def layer_gates(self, layer: int) -> list[Gate]:
        """The gates of one layer, in order: rotations on every wire, then the CNOT ring."""
        gates = []
        for q in range(self.n_qubits):
            if self.ansatz == "ry":
                gates.append(Gate("RY", (q,), (layer, q)))
            else:
                gates += [Gate("RY", (q,), (layer, 0, q)), Gate("RZ", (q,), (layer, 1, q))]
        return gates + [Gate("CNOT", pair) for pair in ring_pairs(self.n_qubits)]

    def gates(self) -> list[Gate]:
        """Every gate of the circuit, in order (after the amplitude embedding)."""
        return [g for layer in range(self.n_layers) for g in self.layer_gates(layer)]


# Index tables (built once per size and device) ------------------------------------------------


@functools.cache
def ring_permutation(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(forward, inverse) index maps of one CNOT ring: it sends |k> to |forward[k]>."""
    forward = torch.arange(2**n)
    for control, target in ring_pairs(n):
        forward ^= ((forward >> (n - 1 - control)) & 1) << (n - 1 - target)
    return forward.to(device), torch.argsort(forward).to(device)


@functools.cache
def z_signs(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(2**n, n) table of (-1)**bit_q(k): the eigenvalue of Z on wire q for basis state k."""
    k = torch.arange(2**n)[:, None]
    bits = (k >> (n - 1 - torch.arange(n))) & 1
    return (1 - 2 * bits).to(device=device, dtype=dtype)


@functools.cache
def folded_signs_t(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    # Z readout of ring(state) equals the readout of state with the ring folded into the table.
    return z_signs(n, device, dtype)[ring_permutation(n, device)[0]].T.contiguous()

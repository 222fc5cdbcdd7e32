"""The QAA circuit in the simulators a user could pick instead of qpeft's, for ``qaa_sim_speed.py``.

Each peer takes the same float64 problem: inputs ``x`` (tokens, width), angles (layers, n), readout
weights (tokens, n); it amplitude-embeds each input (zero-padded to 2**n, normalised), applies per layer
an RY on every wire and the CNOT ring, reads ⟨Z_q⟩ on every wire, and returns ``(outputs, gradient of
sum(outputs * weights) wrt the angles or None, wrt the inputs or None)`` as numpy arrays. A peer that
cannot do a part returns None there and says why in ``LIMITS``. Wire 0 is the most significant bit
(PennyLane's and qpeft's order); peers that count the other way get their wires mirrored.

Every peer is an optional benchmark dependency (``pip install -e '.[bench]'``); ``available`` names the
ones that import.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable

import numpy as np

Peer = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]

#: peer -> the package it needs
PACKAGES = {
    "lightning.qubit": "pennylane_lightning",
    "qulacs": "qulacs",
    "tensorcircuit-ng": "tensorcircuit",
    "qiskit-aer": "qiskit_aer",
    "default.qubit": "pennylane",
}
#: what a peer cannot do on this workload, in words
LIMITS = {
    "lightning.qubit": "no batching with the adjoint method (one circuit per input, forward and gradient as two "
                       "passes); no gradient through the state preparation (angles only)",
    "qulacs": "no batching (one state per input, in a Python loop); gradients by a hand-written adjoint sweep "
              "over Qulacs' own gates",
    "qiskit-aer": "no gradients (forward only); one circuit per input, run as one batch",
}


def available() -> dict[str, bool]:
    return {name: importlib.util.find_spec(package) is not None for name, package in PACKAGES.items()}


def ring(n: int) -> list[tuple[int, int]]:
    return [] if n == 1 else [(q, (q + 1) % n) for q in range(n)]


def embedded(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(states (tokens, 2**n), norms): each input zero-padded and normalised."""
    padded = np.zeros((x.shape[0], 2**n))
    padded[:, : x.shape[1]] = x
    norms = np.linalg.norm(padded, axis=1, keepdims=True)
    return padded / norms, norms


def input_gradient(state_gradient: np.ndarray, states: np.ndarray, norms: np.ndarray, width: int) -> np.ndarray:
    """Chain a gradient wrt the normalised state back through the normalisation and the padding."""
    along = np.sum(state_gradient * states, axis=1, keepdims=True)
    return ((state_gradient - states * along) / norms)[:, :width]


def lightning(x: np.ndarray, angles: np.ndarray, weights: np.ndarray):
    import pennylane as qml
    from pennylane import numpy as pnp

    layers, n = angles.shape
    device = qml.device("lightning.qubit", wires=n, c_dtype=np.complex128)

    # the autograd interface: through the torch interface lightning's outputs differ from float64 by ~4e-9
    @qml.qnode(device, diff_method="adjoint")
    def circuit(state, theta):
        qml.StatePrep(state, wires=range(n))
        for layer in range(layers):
            for q in range(n):
                qml.RY(theta[layer, q], wires=q)
            for control, target in ring(n):
                qml.CNOT(wires=[control, target])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    states, _ = embedded(x, n)
    fixed = [pnp.array(state, requires_grad=False) for state in states]

    def weighted(theta):
        return sum(pnp.dot(pnp.stack(circuit(state, theta)), weight)
                   for state, weight in zip(fixed, weights, strict=True))

    outputs = np.array([np.array(circuit(state, angles)) for state in fixed])
    gradient = qml.grad(weighted)(pnp.array(angles, requires_grad=True))
    return outputs, np.asarray(gradient), None


def qulacs(x: np.ndarray, angles: np.ndarray, weights: np.ndarray):
    from qulacs import QuantumState
    from qulacs.gate import CNOT, RY, Y
    from qulacs.state import inner_product

    layers, n = angles.shape
    wire = [n - 1 - q for q in range(n)]  # Qulacs' qubit 0 is the least significant bit
    # Qulacs' RY(a) is exp(+i a Y / 2): the standard RY(theta) is Qulacs' RY(-theta)
    gates = []
    for layer in range(layers):
        gates += [(RY(wire[q], -angles[layer, q]), (layer, q), wire[q]) for q in range(n)]
        gates += [(CNOT(wire[c], wire[t]), None, None) for c, t in ring(n)]
    inverses = [gate.get_inverse() for gate, _, _ in gates]
    z_sign = np.array([[1 - 2 * ((index >> wire[q]) & 1) for q in range(n)] for index in range(2**n)], float)
    states, norms = embedded(x, n)
    outputs = np.zeros((len(x), n))
    grad_angles = np.zeros_like(angles)
    grad_states = np.zeros_like(states)
    state, adjoint = QuantumState(n), QuantumState(n)
    for row, vector in enumerate(states):
        state.load(vector)
        for gate, _, _ in gates:
            gate.update_quantum_state(state)
        amplitudes = state.get_vector()
        probabilities = np.abs(amplitudes) ** 2
        outputs[row] = probabilities @ z_sign
        # adjoint sweep: lambda = O psi for O = sum_q w_q Z_q, then undo each gate on both states
        adjoint.load(amplitudes * (z_sign @ weights[row]))
        for (_, angle, qubit), inverse in zip(reversed(gates), reversed(inverses), strict=True):
            if angle is not None:
                # for RY(theta) = exp(-i theta Y / 2): d<O>/d theta = Im <lambda| Y |psi>, both after the gate
                turned = state.copy()
                Y(qubit).update_quantum_state(turned)
                grad_angles[angle] += inner_product(adjoint, turned).imag
            inverse.update_quantum_state(state)
            inverse.update_quantum_state(adjoint)
        grad_states[row] = 2 * adjoint.get_vector().real
    return outputs, grad_angles, input_gradient(grad_states, states, norms, x.shape[1])


def tensorcircuit(x: np.ndarray, angles: np.ndarray, weights: np.ndarray):
    (_, outputs), (grad_x, grad_theta) = _tensorcircuit_job(*angles.shape, x.shape[1])(x, angles, weights)
    return np.asarray(outputs), np.asarray(grad_theta).sum(0), np.asarray(grad_x)


@functools.cache
def _tensorcircuit_job(layers: int, n: int, width: int) -> Callable:
    """The compiled job (kept: compiling is the first call's cost, not every call's)."""
    import jax
    import jax.numpy as jnp
    import tensorcircuit as tc

    tc.set_backend("jax")
    tc.set_dtype("complex128")
    # the readout from the final state (|psi|^2 times the Z signs): one contraction, not one per wire
    signs = jnp.asarray([[1 - 2 * ((index >> (n - 1 - q)) & 1) for q in range(n)] for index in range(2**n)],
                        dtype=jnp.float64)

    def readout(row, theta):
        padded = jnp.concatenate([row, jnp.zeros(2**n - width)])
        circuit = tc.Circuit(n, inputs=(padded / jnp.linalg.norm(padded)).astype(jnp.complex128))
        for layer in range(layers):
            for q in range(n):
                circuit.ry(q, theta=theta[layer, q])
            for control, target in ring(n):
                circuit.cnot(control, target)
        return (jnp.abs(circuit.state()) ** 2) @ signs

    def weighted(row, theta, weight):
        out = readout(row, theta)
        return jnp.sum(out * weight), out

    # vectorised over the batch; outputs and both gradients from one call
    return jax.jit(jax.vmap(jax.value_and_grad(weighted, argnums=(0, 1), has_aux=True), in_axes=(0, None, 0)))


def qiskit_aer(x: np.ndarray, angles: np.ndarray, weights: np.ndarray):
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_aer import AerSimulator

    layers, n = angles.shape
    states, _ = embedded(x, n)
    observables = [SparsePauliOp("I" * (n - 1 - q) + "Z" + "I" * q) for q in range(n)]  # qubit 0 rightmost
    circuits = []
    for vector in states:
        circuit = QuantumCircuit(n)
        # qpeft's wire w is Qiskit's qubit n - 1 - w, so the state vector's index reads the same
        circuit.set_statevector(vector.astype(complex))
        for layer in range(layers):
            for q in range(n):
                circuit.ry(angles[layer, q], n - 1 - q)
            for control, target in ring(n):
                circuit.cx(n - 1 - control, n - 1 - target)
        for q, observable in enumerate(observables):
            circuit.save_expectation_value(observable, range(n), label=f"z{q}")
        circuits.append(circuit)
    result = AerSimulator(method="statevector", precision="double").run(circuits).result()
    outputs = np.array([[result.data(i)[f"z{n - 1 - q}"] for q in range(n)] for i in range(len(circuits))])
    return outputs.real, None, None


def default_qubit(x: np.ndarray, angles: np.ndarray, weights: np.ndarray):
    import torch

    from qpeft.quantum import CircuitSpec, pennylane_reference

    layers, n = angles.shape
    inputs = torch.tensor(x, requires_grad=True)
    theta = torch.tensor(angles, requires_grad=True)
    outputs = pennylane_reference(inputs, theta, CircuitSpec(n, layers))
    (outputs * torch.tensor(weights)).sum().backward()
    return outputs.detach().numpy(), theta.grad.numpy(), inputs.grad.numpy()


PEERS: dict[str, Peer] = {
    "lightning.qubit": lightning,
    "qulacs": qulacs,
    "tensorcircuit-ng": tensorcircuit,
    "qiskit-aer": qiskit_aer,
    "default.qubit": default_qubit,
}

"""Reference back-end: the same circuit run gate by gate in PennyLane (an optional extra).

It is slow and exists to check the fast simulator and the noise model against an
independent implementation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qpeft.quantum.circuit import CircuitSpec


def pennylane_reference(x: Tensor, angles: Tensor, spec: CircuitSpec, depolarizing: float = 0.0) -> Tensor:
    """Readout (..., spec.output_dim) of inputs (..., d) from PennyLane, differentiable by backprop.

    Without noise it runs ``default.qubit``; with ``depolarizing = p > 0`` it runs
    ``default.mixed`` with ``qml.DepolarizingChannel(3p/4)`` on every wire after every layer,
    which is qpeft's channel rho -> (1 - p) rho + p I/2 in PennyLane's parameterisation.
    Zero inputs have no state; PennyLane would return NaN, so they read out zero here too.
    """
    import pennylane as qml

    n = spec.n_qubits
    x2 = x.reshape(-1, x.shape[-1])
    zero = (x2 == 0).all(-1, keepdim=True)
    # Any valid state will do for zero rows: their output is replaced by zero below.
    placeholder = torch.zeros_like(x2)
    placeholder[:, 0] = 1
    features = torch.where(zero, placeholder, x2)

    device = qml.device("default.mixed" if depolarizing else "default.qubit", wires=n)

    @qml.qnode(device, interface="torch", diff_method="backprop")
    def circuit(feats: Tensor, theta: Tensor):
        qml.AmplitudeEmbedding(features=feats, wires=range(n), pad_with=0.0, normalize=True)
        for layer in range(spec.n_layers):
            for gate in spec.layer_gates(layer):
                params = [] if gate.angle is None else [theta[gate.angle]]
                getattr(qml, gate.name)(*params, wires=gate.wires)
            if depolarizing:
                for q in range(n):
                    qml.DepolarizingChannel(0.75 * depolarizing, wires=q)
        if spec.readout == "z":
            return [qml.expval(qml.PauliZ(q)) for q in range(n)]
        return qml.probs(wires=range(n))

    out = circuit(features, angles)
    out = torch.stack(out, -1) if spec.readout == "z" else out
    out = torch.where(zero, torch.zeros_like(out), out.reshape(x2.shape[0], -1))
    return out.reshape(*x.shape[:-1], spec.output_dim)

"""The QAA circuit as one matrix: an accelerator's kernel.

The circuit's 2**n x 2**n unitary U does not depend on the input, so it is built once per call from
each layer's rotation factors (their Kronecker product) and CNOT ring (a row permutation), then
applied to every token in one matrix multiply; the readout is (phi ⊙ conj(phi)) times the Z-sign
table, divided by ||x||**2. Plain autograd differentiates it: U is kept once per call, not per token.

It costs about 2 * 4**n multiply-adds per token against the statevector kernel's ~3 n L 2**n, which
a GPU's large matrix multiplies can afford and a CPU cannot beyond a few qubits; ``simulator``
chooses between the kernels.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from qpeft.quantum.circuit import CircuitSpec, ring_permutation, z_signs
from qpeft.quantum.statevector import embed, layer_factors, safe_norm_sq


def circuit_unitary(angles: Tensor, spec: CircuitSpec) -> Tensor:
    """U (2**n, 2**n) of every layer's rotations and CNOT ring, first layer applied first."""
    factors = layer_factors(angles, spec)
    _, inverse = ring_permutation(spec.n_qubits, angles.device)
    unitary = None
    for layer in range(spec.n_layers):
        rotation = functools.reduce(torch.kron, [factor[layer] for factor in factors])
        unitary = rotation if unitary is None else rotation @ unitary
        if spec.n_qubits > 1:
            unitary = unitary[inverse]  # the ring sends |k> to |forward[k]>: row j of the result is row inverse[j]
    return unitary


def simulate_unitary(x2: Tensor, angles: Tensor, spec: CircuitSpec) -> Tensor:
    """Readout (tokens, spec.output_dim) of (tokens, d) inputs, d <= 2**n, through one matrix multiply."""
    unitary = circuit_unitary(angles, spec)
    psi = embed(x2, spec, x2.dtype).T  # (tokens, 2**n), complex for the ry_rz ansatz
    phi = psi @ unitary.T
    probs = phi.real**2 + phi.imag**2 if phi.is_complex() else phi * phi
    out = probs @ z_signs(spec.n_qubits, x2.device, probs.dtype) if spec.readout == "z" else probs
    return out / safe_norm_sq(x2)[:, None]

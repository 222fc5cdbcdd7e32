"""The QAA circuit as hardware would run it: finite shots, depolarising noise and the hardware model (inference only).

Noise convention (one for all of qpeft): depolarising strength ``p`` in [0, 1] is the channel
rho -> (1 - p) rho + p I/2 on every qubit after every layer (after its CNOT ring); p = 1
erases a qubit completely. PennyLane's ``DepolarizingChannel(q)`` is the same channel with
q = 3p/4.

Exact and cheap for L <= 2 layers ("pauli" method). In the Heisenberg picture a Z-string
Z_T (T a set of wires) picks up (1 - p)^|T| from the noise after the last layer. The ring
before it maps Z_T to another Z-string Z_g(T), the rotations then turn each of its factors
into a traceless one-qubit operator on the same wire, and the depolarising channel scales a
product of traceless factors by (1 - p) per factor, so the noise after layer L - 1 adds
(1 - p)^|g(T)|. Hence <Z_T>_noisy = (1 - p)^(|T| + |g(T)|) <Z_T>_exact for L = 2 (only the
first factor for L = 1). The basis probabilities follow from all 2**n values <Z_T> by a
Walsh-Hadamard transform and back: O(n 2**n) per token. With three or more layers the
operators spread over many Pauli strings and no such shortcut holds, so the "density" method
evolves the 2**n x 2**n density matrix exactly (O(4**n) per token: keep n small there).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import Tensor

from qpeft.quantum.circuit import CircuitSpec, ring_permutation, z_signs
from qpeft.quantum.simulator import simulate
from qpeft.quantum.statevector import compute_dtype, embed, layer_factors, rotate
from qpeft.utils.errors import UsageError

#: Density-matrix elements per block of tokens in the density method (128 MB in float64).
_DENSITY_BUDGET = 2**24


def sample_readout(
    probs: Tensor, spec: CircuitSpec, shots: int, generator: torch.Generator | None = None
) -> Tensor:
    """Readout estimated from ``shots`` measurements drawn from basis probabilities (..., 2**n).

    z_q is the mean of (-1)**bit_q over the shots, "probs" the observed frequencies. All-zero
    probabilities (the zero input, which has no state) give a zero readout. ``generator``
    (on the probabilities' device) makes the draw reproducible.
    """
    if not isinstance(shots, int) or shots < 1:
        raise UsageError(f"shots must be a positive integer, got {shots!r}")
    flat = probs.detach().reshape(-1, spec.dim).clamp(min=0)
    freq = _multinomial_counts(flat, shots, generator) / shots
    out = freq @ z_signs(spec.n_qubits, freq.device, freq.dtype) if spec.readout == "z" else freq
    return out.reshape(*probs.shape[:-1], spec.output_dim)


def _multinomial_counts(probs: Tensor, shots: int, generator: torch.Generator | None) -> Tensor:
    # Exact multinomial draw as a binary tree of binomials, one wire (bit) per level: n vectorised
    # steps and O(2**n) memory per token, whatever the number of shots.
    rows, dim = probs.shape
    counts = (probs.sum(-1, keepdim=True) > 0).to(probs.dtype) * shots
    for level in range(1, dim.bit_length()):
        mass = probs.reshape(rows, 2**level, dim // 2**level).sum(-1)
        left, parent = mass[:, 0::2], mass[:, 0::2] + mass[:, 1::2]
        share = torch.where(parent > 0, left / parent, torch.zeros_like(parent)).clamp(0, 1)
        left_counts = torch.binomial(counts, share, generator=generator)
        counts = torch.stack([left_counts, counts - left_counts], -1).reshape(rows, 2**level)
    return counts


def depolarized_probs(x: Tensor, angles: Tensor, spec: CircuitSpec, p: float, method: str = "auto") -> Tensor:
    """Basis probabilities (..., 2**n) of inputs (..., d) under depolarising noise of strength p.

    ``method``: "pauli" (exact, fast, needs at most 2 layers), "density" (exact density
    matrices, any depth, O(4**n) per token) or "auto" (the first that applies).
    """
    if not 0 <= p <= 1:
        raise UsageError(f"depolarizing strength must lie in [0, 1], got {p}")
    if method == "auto":
        method = "pauli" if spec.n_layers <= 2 else "density"
    if method not in ("pauli", "density"):
        raise UsageError(f"unknown noise method {method!r}; choose auto, pauli or density")
    if method == "pauli" and spec.n_layers > 2:
        raise UsageError("the pauli noise method is exact only for circuits with at most 2 layers")
    probs_spec = dataclasses.replace(spec, readout="probs")
    with torch.no_grad():
        if method == "pauli":
            probs = simulate(x, angles, probs_spec).reshape(-1, spec.dim)
            weights = _pauli_weights(spec.n_qubits, spec.n_layers, probs.device)
            damping = probs.new_tensor(1 - p) ** weights
            probs = _walsh_hadamard(_walsh_hadamard(probs) * damping) / spec.dim
        else:
            probs = _density_probs(x.reshape(-1, x.shape[-1]), angles, spec, p)
    return probs.reshape(*x.shape[:-1], spec.dim)


@functools.cache
def _pauli_weights(n: int, layers: int, device: torch.device) -> Tensor:
    """For every Z-string mask t: |t|, plus |g(t)| for two layers (see the module docstring)."""
    t = torch.arange(2**n)
    weights = _popcount(t, n)
    if layers == 2:
        # The ring sends |k> to |f(k)>, so Z_t becomes Z_g with bit m of g = parity(t & f(2**m)).
        images = ring_permutation(n, torch.device("cpu"))[0][2 ** torch.arange(n)]
        g = ((_popcount(t[:, None] & images, n) % 2) << torch.arange(n)).sum(-1)
        weights = weights + _popcount(g, n)
    return weights.to(device)


@functools.cache
def _string_weights(n: int, device: torch.device) -> Tensor:
    """|t| for every Z-string mask t: the number of measured bits a readout flip can reach."""
    return _popcount(torch.arange(2**n), n).to(device)


def _popcount(values: Tensor, n: int) -> Tensor:
    return sum((values >> i) & 1 for i in range(n))


def _walsh_hadamard(values: Tensor) -> Tensor:
    """Unnormalised Walsh-Hadamard transform over the last dim (a power of two)."""
    rows, dim = values.shape
    half = 1
    while half < dim:
        pairs = values.reshape(rows, dim // (2 * half), 2, half)
        values = torch.stack([pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]], 2)
        half *= 2
    return values.reshape(rows, dim)


def _density_probs(x2: Tensor, angles: Tensor, spec: CircuitSpec, p: float) -> Tensor:
    """Exact density-matrix evolution, in chunks of tokens; returns (tokens, 2**n) probabilities."""
    dtype = compute_dtype(x2, angles)
    factors = layer_factors(angles.to(dtype), spec)
    inverse = ring_permutation(spec.n_qubits, x2.device)[1]
    chunk = max(1, _DENSITY_BUDGET // spec.dim**2)
    out = []
    for part in x2.split(chunk):
        psi = embed(part.to(dtype), spec, dtype)
        psi = psi / psi.norm(dim=0).clamp(min=torch.finfo(dtype).tiny)  # zero tokens stay zero
        rho = psi[:, None, :] * psi.conj()[None, :, :]  # (2**n, 2**n, tokens)
        for layer in range(spec.n_layers):
            rotation = [f[layer] for f in factors]
            rho = rotate(rho.reshape(spec.dim, -1), rotation).reshape(rho.shape)  # K rho
            rho = rotate(rho, [m.conj() for m in rotation])  # (K rho) K^dagger
            rho = rho.index_select(0, inverse).index_select(1, inverse)
            rho = _depolarize(rho, spec.n_qubits, p)
        out.append(rho.diagonal(0, 0, 1).real)
    return torch.cat(out)


def _depolarize(rho: Tensor, n: int, p: float) -> Tensor:
    """rho -> (1 - p) rho + p Tr_q(rho) (x) I/2, on every qubit q of (2**n, 2**n, tokens) matrices."""
    tokens = rho.shape[-1]
    for q in range(n):
        view = rho.reshape(2**q, 2, 2 ** (n - q - 1), 2**q, 2, 2 ** (n - q - 1), tokens)
        traced = view[:, 0, :, :, 0] + view[:, 1, :, :, 1]
        view = (1 - p) * view
        view[:, 0, :, :, 0] += p / 2 * traced
        view[:, 1, :, :, 1] += p / 2 * traced
        rho = view.reshape(rho.shape)
    return rho


def hardware_probs(probs: Tensor, n: int, fidelity: float, readout_error: float) -> Tensor:
    """Basis probabilities (..., 2**n) under the global-depolarising approximation and readout bit flips.

    The state stays ideal with probability ``fidelity`` F and is otherwise maximally mixed, so every
    Z-string expectation <Z_T> with T non-empty is scaled by F; a bit flip of probability e on each
    measured qubit scales it by (1 - 2e)**|T|. Probabilities go to the Z-string basis and back by
    Walsh-Hadamard transforms (the empty string, the total, is kept: zero inputs stay zero).
    """
    dim = 2**n
    flat = probs.reshape(-1, dim)
    weights = _string_weights(n, probs.device).to(probs.dtype)
    damping = fidelity * (1 - 2 * readout_error) ** weights
    damping[0] = 1.0
    return (_walsh_hadamard(_walsh_hadamard(flat) * damping) / dim).reshape(probs.shape)


def simulate_noisy(
    x: Tensor,
    angles: Tensor,
    spec: CircuitSpec,
    *,
    shots: int | None = None,
    depolarizing: float = 0.0,
    fidelity: float = 1.0,
    readout_error: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Readout (..., spec.output_dim) under noise and/or finite shots, without gradients.

    Two noise models, one at a time: ``depolarizing`` (every qubit after every layer) or the
    hardware model's global-depolarising approximation (``fidelity`` F of the whole circuit and
    ``readout_error``, from ``qpeft.quantum.hardware``). With ``shots=None`` and no noise it is
    exactly ``simulate``.
    """
    hardware = fidelity != 1.0 or readout_error != 0.0
    if depolarizing and hardware:
        raise UsageError("choose one noise model: depolarizing, or the hardware model's fidelity and readout error")
    if not 0 <= fidelity <= 1 or not 0 <= readout_error <= 0.5:
        raise UsageError(f"fidelity must lie in [0, 1] and readout error in [0, 0.5], got {fidelity}, {readout_error}")
    with torch.no_grad():
        if shots is None and not depolarizing:
            z_or_probs = simulate(x, angles, spec)
            if not hardware:
                return z_or_probs
            if spec.readout == "z":  # <Z_q> scaled by F (1 - 2e): the transform below on the n one-qubit strings
                return z_or_probs * (fidelity * (1 - 2 * readout_error))
            return hardware_probs(z_or_probs, spec.n_qubits, fidelity, readout_error)
        if depolarizing:
            probs = depolarized_probs(x, angles, spec, depolarizing)
        else:
            probs = simulate(x, angles, dataclasses.replace(spec, readout="probs"))
            if hardware:
                probs = hardware_probs(probs, spec.n_qubits, fidelity, readout_error)
        if shots is not None:
            return sample_readout(probs, spec, shots, generator)
        if spec.readout == "probs":
            return probs
        return probs @ z_signs(spec.n_qubits, probs.device, probs.dtype)

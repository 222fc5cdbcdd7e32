"""Fast, exact, batched statevector simulation of the QAA circuit in PyTorch.

How the circuit's structure is used:

- States are stored basis-index first, tokens last: shape ``(2**n, tokens)``. A layer of
  single-qubit rotations is the Kronecker product ``M_a ⊗ M_b`` of the rotations on the first
  ``a = n // 2`` wires and on the remaining ``b`` wires, so it is two GEMMs with small
  ``2**a`` and ``2**b`` matrices on the state viewed as ``(2**a, 2**b, tokens)``.
- A CNOT ring permutes basis states. Its index table is built once per n, and applying it
  is one contiguous row gather in this layout.
- The last ring is never applied: the readout is diagonal, so it reads the permuted sign
  table (or permuted probability indices) instead.
- The embedding's normalisation is linear in the state, so the circuit runs on the padded,
  unnormalised x and the quadratic readout is divided by ``||x||**2`` at the end. A zero x
  then reads out exactly zero, with zero gradient, without special cases.
- ``memory_lean=True`` uses a hand-written backward that saves only the inputs: it reruns
  the circuit, then walks back layer by layer, un-computing the state with the inverse
  (adjoint) rotations while it propagates the gradient. Gradients equal plain autograd's.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from qpeft.errors import UsageError
from qpeft.quantum.circuit import CircuitSpec, ring_pairs


@functools.lru_cache(maxsize=None)
def ring_permutation(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(forward, inverse) index maps of one CNOT ring: it sends |k> to |forward[k]>."""
    forward = torch.arange(2**n)
    for control, target in ring_pairs(n):
        forward ^= ((forward >> (n - 1 - control)) & 1) << (n - 1 - target)
    return forward.to(device), torch.argsort(forward).to(device)


@functools.lru_cache(maxsize=None)
def z_signs(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(2**n, n) table of (-1)**bit_q(k): the eigenvalue of Z on wire q for basis state k."""
    k = torch.arange(2**n)[:, None]
    bits = (k >> (n - 1 - torch.arange(n))) & 1
    return (1 - 2 * bits).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=None)
def _folded_signs(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    # Z readout of ring(state) equals the readout of state with the ring folded into the table.
    return z_signs(n, device, dtype)[ring_permutation(n, device)[0]]


def compute_dtype(x: Tensor, angles: Tensor) -> torch.dtype:
    """Real dtype the circuit runs in: the promoted input dtype, at least float32."""
    dtype = torch.promote_types(x.dtype, angles.dtype)
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def layer_matrices(angles: Tensor, spec: CircuitSpec) -> tuple[Tensor, Tensor]:
    """Per-layer rotations as Kronecker factors: (L, 2**a, 2**a) and (L, 2**b, 2**b), a = n // 2."""
    half = angles / 2
    theta = half if spec.ansatz == "ry" else half[:, 0]
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (L, n, 2, 2)
    if spec.ansatz == "ry_rz":
        # RZ after RY multiplies row 0 by e^{-i phi/2} and row 1 by e^{+i phi/2}.
        phase = torch.polar(torch.ones_like(half[:, 1]), half[:, 1])
        rot = rot * torch.stack([phase.conj(), phase], -1)[..., None]
    a = spec.n_qubits // 2
    return _kron_chain(rot[:, :a]), _kron_chain(rot[:, a:])


def _kron_chain(rot: Tensor) -> Tensor:
    # kron(rot[:, 0], rot[:, 1], ...): the first wire is the most significant index bit.
    out = rot.new_ones((rot.shape[0], 1, 1))
    for q in range(rot.shape[1]):
        size = 2 * out.shape[-1]
        out = (out[:, :, None, :, None] * rot[:, q, None, :, None, :]).reshape(-1, size, size)
    return out


def _apply_a(state: Tensor, ma: Tensor) -> Tensor:
    """Apply ``ma`` to the high wires of states shaped (..., 2**n, tokens)."""
    lead, (dim, tokens) = state.shape[:-2], state.shape[-2:]
    out = torch.matmul(ma, state.reshape(*lead, ma.shape[-1], -1))
    return out.reshape(*lead, dim, tokens)


def _apply_b(state: Tensor, mb: Tensor) -> Tensor:
    """Apply ``mb`` to the low wires of states shaped (..., 2**n, tokens)."""
    tokens = state.shape[-1]
    out = torch.matmul(mb, state.reshape(-1, mb.shape[-1], tokens))
    return out.reshape(state.shape)


def rotate(state: Tensor, ma: Tensor, mb: Tensor) -> Tensor:
    """One layer of single-qubit rotations on states shaped (..., 2**n, tokens)."""
    return _apply_b(_apply_a(state, ma), mb)


def embed(x2: Tensor, spec: CircuitSpec, dtype: torch.dtype) -> Tensor:
    """Zero-padded, unnormalised amplitudes of (tokens, d) inputs, as (2**n, tokens)."""
    psi = torch.nn.functional.pad(x2.T, (0, 0, 0, spec.dim - x2.shape[1]))
    return psi.to(dtype.to_complex() if spec.ansatz == "ry_rz" else dtype)


def _evolve(psi: Tensor, ma: Tensor, mb: Tensor, spec: CircuitSpec) -> Tensor:
    """All layers on (2**n, tokens) states, stopping before the last CNOT ring."""
    inverse = ring_permutation(spec.n_qubits, psi.device)[1]
    for layer in range(spec.n_layers):
        if layer:
            psi = psi.index_select(0, inverse)
        psi = rotate(psi, ma[layer], mb[layer])
    return psi


def _readout(psi: Tensor, spec: CircuitSpec) -> Tensor:
    """Unnormalised readout (out, tokens) of the state before the last ring."""
    probs = (psi * psi.conj()).real if psi.is_complex() else psi * psi
    if spec.readout == "z":
        return _folded_signs(spec.n_qubits, psi.device, probs.dtype).T @ probs
    return probs.index_select(0, ring_permutation(spec.n_qubits, psi.device)[1])


def _norm_sq(x2: Tensor) -> Tensor:
    # ||x||^2 per token, with 1 for zero tokens: their readout is 0, so 0 / 1 gives the zero output.
    n2 = (x2 * x2).sum(-1)
    return torch.where(n2 > 0, n2, torch.ones_like(n2))


class _LeanCircuit(torch.autograd.Function):
    """The circuit with a backward that saves only its inputs (see the module docstring)."""

    @staticmethod
    def forward(ctx, x2: Tensor, ma: Tensor, mb: Tensor, spec: CircuitSpec) -> Tensor:
        ctx.save_for_backward(x2, ma, mb)
        ctx.spec = spec
        dtype = ma.real.dtype
        return _readout(_evolve(embed(x2, spec, dtype), ma, mb, spec), spec) / _norm_sq(x2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x2, ma, mb = ctx.saved_tensors
        spec: CircuitSpec = ctx.spec
        with torch.autocast(grad.device.type, enabled=False):
            psi = _evolve(embed(x2, spec, ma.real.dtype), ma, mb, spec)
            norm_sq = _norm_sq(x2)
            out = _readout(psi, spec) / norm_sq
            grad_r = grad / norm_sq
            forward_map = ring_permutation(spec.n_qubits, psi.device)[0]
            if spec.readout == "z":
                weight = _folded_signs(spec.n_qubits, psi.device, grad.dtype) @ grad_r
            else:
                weight = grad_r.index_select(0, forward_map)
            # Stack the state and its adjoint so every inverse rotation is one op for both.
            pair = torch.stack([psi, 2 * weight * psi])
            grad_a, grad_b = torch.empty_like(ma), torch.empty_like(mb)
            size_a, size_b, tokens = ma.shape[-1], mb.shape[-1], psi.shape[-1]
            for layer in reversed(range(spec.n_layers)):
                # Forward was T = Ma S, psi = Mb T (Mb on the low wires); undo Mb, then Ma.
                pair_t = _apply_b(pair, mb[layer].mH)
                lam = pair[1].reshape(size_a, size_b, tokens)
                grad_b[layer] = (lam @ pair_t[0].reshape(size_a, size_b, tokens).mH).sum(0)
                pair_s = _apply_a(pair_t, ma[layer].mH)
                lam_t = pair_t[1].reshape(size_a, -1)
                grad_a[layer] = lam_t @ pair_s[0].reshape(size_a, -1).mH
                pair = pair_s.index_select(1, forward_map) if layer else pair_s
            grad_norm_sq = -(grad * out).sum(0) / norm_sq
            grad_x = pair[1, : x2.shape[1]].real.T + 2 * x2 * grad_norm_sq[:, None]
        needs = ctx.needs_input_grad
        return (grad_x if needs[0] else None, grad_a if needs[1] else None,
                grad_b if needs[2] else None, None)


def _check(x: Tensor, angles: Tensor, spec: CircuitSpec) -> None:
    if x.shape[-1] > spec.dim:
        raise UsageError(f"input width {x.shape[-1]} exceeds 2**{spec.n_qubits} = {spec.dim} amplitudes")
    if tuple(angles.shape) != spec.angle_shape:
        raise UsageError(f"angles have shape {tuple(angles.shape)}, expected {spec.angle_shape}")


def simulate(x: Tensor, angles: Tensor, spec: CircuitSpec, *, memory_lean: bool = True) -> Tensor:
    """Exact readout of the QAA circuit for inputs (..., d), d <= 2**n: returns (..., spec.output_dim).

    Differentiable in ``x`` and ``angles``; runs on their device, in their promoted dtype
    (half precision is computed in float32). ``memory_lean`` keeps no intermediate states for
    backward (it recomputes them), at the cost of about one extra circuit evaluation.
    """
    _check(x, angles, spec)
    dtype = compute_dtype(x, angles)
    lead = x.shape[:-1]
    with torch.autocast(x.device.type, enabled=False):
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)
        ma, mb = layer_matrices(angles.to(dtype), spec)
        if memory_lean:
            out = _LeanCircuit.apply(x2, ma, mb, spec)
        else:
            out = _readout(_evolve(embed(x2, spec, dtype), ma, mb, spec), spec) / _norm_sq(x2)
    return out.T.contiguous().reshape(*lead, spec.output_dim)

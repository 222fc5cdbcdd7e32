"""The batched PyTorch statevector kernel of the QAA circuit: fast, exact, any circuit, any device.

How the circuit's structure is used:

- States are stored basis-index first, tokens last: shape ``(2**n, tokens)``. A layer of
  single-qubit rotations is a Kronecker product; grouping the wires into a few runs writes it
  as ``M_1 ⊗ M_2 ⊗ ...`` with small dense factors, each applied to the whole batch by one
  batched matmul (a few large ops per layer, no 2**n x 2**n matrix).
- A CNOT ring permutes basis states. Its index table is built once per n, and applying it
  is one contiguous row gather in this layout.
- The last ring is never applied: the readout is diagonal, so it reads the permuted sign
  table (or permuted probability indices) instead.
- The embedding's normalisation is linear in the state, so the circuit runs on the padded,
  unnormalised x and the quadratic readout is divided by ``||x||**2`` at the end. A zero x
  then reads out exactly zero, with zero gradient, without special cases.
- ``memory_lean=True`` (the default) uses a hand-written backward that saves only the inputs:
  it reruns the circuit, keeping the states it needs for just that call, then sends the
  adjoint state back through the layers, collecting each factor's gradient on the way. No
  2**n-wide state per token outlives the forward pass. It works on blocks of tokens sized to
  stay in cache on CPU (and to bound the transient memory on GPU).

On CPU, real (RY) circuits run instead in ``fused_cpu``: a C kernel that takes the
whole circuit through cache-sized chunks of tokens, two wires per pass. ``simulator.simulate``
picks between the two (``kernel=``); neither kernel imports it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qpeft.quantum.circuit import CircuitSpec, folded_signs_t, ring_permutation


def _tuning(device: torch.device) -> tuple[int, int]:
    """(largest run of wires in one factor, amplitudes per block of tokens) for a device.

    On CPU, factors of at most 2**4 rows cost fewer flops and blocks of ~2**18 amplitudes keep
    the working set in cache; a GPU prefers fewer, larger ops (two factors for 10 qubits).
    """
    return (5, 2**24) if device.type == "cuda" else (4, 2**18)


def compute_dtype(x: Tensor, angles: Tensor) -> torch.dtype:
    """Real dtype the circuit runs in: the promoted input dtype, at least float32."""
    dtype = torch.promote_types(x.dtype, angles.dtype)
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def layer_factors(angles: Tensor, spec: CircuitSpec) -> list[Tensor]:
    """Kronecker factors of every layer's rotations, first wires first: a list of (L, 2**g, 2**g)."""
    half = angles / 2
    theta = half if spec.ansatz == "ry" else half[:, 0]
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (L, n, 2, 2)
    if spec.ansatz == "ry_rz":
        # RZ after RY multiplies row 0 by e^{-i phi/2} and row 1 by e^{+i phi/2}.
        phase = torch.polar(torch.ones_like(half[:, 1]), half[:, 1])
        rot = rot * torch.stack([phase.conj(), phase], -1)[..., None]
    n = spec.n_qubits
    groups = -(-n // _tuning(angles.device)[0])
    bounds = [round(i * n / groups) for i in range(groups + 1)]
    return [_kron_chain(rot[:, lo:hi]) for lo, hi in itertools.pairwise(bounds)]


def _kron_chain(rot: Tensor) -> Tensor:
    # kron(rot[:, 0], rot[:, 1], ...): the first wire is the most significant index bit.
    out = rot.new_ones((rot.shape[0], 1, 1))
    for q in range(rot.shape[1]):
        size = 2 * out.shape[-1]
        out = (out[:, :, None, :, None] * rot[:, q, None, :, None, :]).reshape(-1, size, size)
    return out


def _apply(state: Tensor, matrix: Tensor, blocks: int) -> Tensor:
    """Apply ``matrix`` to the index bits below the first ``blocks`` (a power of two) of a state.

    ``state`` is (rows, tokens); the result has ``rows / matrix columns * matrix rows`` rows.
    """
    size_out, size_in = matrix.shape[-2:]
    # An explicit bmm: torch.matmul would fold a (transposed) matrix by copying the state.
    out = torch.bmm(matrix.expand(blocks, size_out, size_in), state.reshape(blocks, size_in, -1))
    return out.reshape(state.shape[0] // size_in * size_out, state.shape[-1])


def _placed(matrices: Sequence[Tensor], lead: int = 1) -> list[tuple[Tensor, int]]:
    """Each factor of one layer with the number of index blocks above its wires."""
    placed = []
    for matrix in matrices:
        placed.append((matrix, lead))
        lead *= matrix.shape[-1]
    return placed


def rotate(state: Tensor, matrices: Sequence[Tensor]) -> Tensor:
    """Apply the Kronecker product of one layer's factors to states shaped (..., 2**n, tokens)."""
    out = state.reshape(-1, state.shape[-1])
    for matrix, blocks in _placed(matrices, math.prod(state.shape[:-2])):
        out = _apply(out, matrix, blocks)
    return out.reshape(state.shape)


def layer_schedule(factors: Sequence[Tensor], spec: CircuitSpec, width: int) -> list[list[tuple[Tensor, int]]]:
    """Every layer's factors with their block counts, for inputs of the given width.

    Inputs narrower than 2**n leave the trailing amplitudes zero, so layer 0's first factor
    (on the leading wires) is cut to the columns of the index blocks that the input reaches.
    """
    layers = [_placed([f[layer] for f in factors]) for layer in range(spec.n_layers)]
    first = layers[0][0][0]
    reach = -(-width * first.shape[-1] // spec.dim)
    layers[0][0] = (first[:, :reach], 1)
    return layers


def safe_norm_sq(x2: Tensor) -> Tensor:
    # Zero tokens read out 0; dividing them by 1 instead of 0 keeps output and gradient zero.
    norm_sq = (x2 * x2).sum(-1)
    return torch.where(norm_sq > 0, norm_sq, torch.ones_like(norm_sq))


def embed(x2: Tensor, spec: CircuitSpec, dtype: torch.dtype, rows: int | None = None) -> Tensor:
    """Unnormalised amplitudes of (tokens, d) inputs, zero-padded to (rows or 2**n, tokens)."""
    psi = torch.nn.functional.pad(x2.T, (0, 0, 0, (rows or spec.dim) - x2.shape[1]))
    return psi.to(dtype.to_complex() if spec.ansatz == "ry_rz" else dtype)


def run_circuit(x2: Tensor, spec: CircuitSpec, schedule: list, keep: list[Tensor] | None = None):
    """The state before the last ring, and its readout (out, tokens) before normalisation.

    ``keep``, if given, collects the state entering every factor, in order.
    """
    first = schedule[0][0][0]
    psi = embed(x2, spec, first.real.dtype, first.shape[-1] * spec.dim // first.shape[-2])
    inverse = ring_permutation(spec.n_qubits, psi.device)[1]
    for layer, placed in enumerate(schedule):
        if layer:
            psi = psi.index_select(0, inverse)
        for matrix, blocks in placed:
            if keep is not None:
                keep.append(psi)
            psi = _apply(psi, matrix, blocks)
    # The readout folds in the last ring.
    probs = (psi * psi.conj()).real if psi.is_complex() else psi * psi
    if spec.readout == "z":
        return psi, folded_signs_t(spec.n_qubits, psi.device, probs.dtype) @ probs
    return psi, probs.index_select(0, inverse)


class LeanCircuit(torch.autograd.Function):
    """The circuit with a hand-written backward that saves only its inputs."""

    @staticmethod
    def forward(ctx, x2: Tensor, spec: CircuitSpec, *factors: Tensor) -> Tensor:
        ctx.save_for_backward(x2, *factors)
        ctx.spec = spec
        schedule = layer_schedule(factors, spec, x2.shape[1])
        readout = torch.cat([run_circuit(block, spec, schedule)[1] for block in _token_blocks(x2, spec)], 1)
        return readout / safe_norm_sq(x2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x2, *factors = ctx.saved_tensors
        spec: CircuitSpec = ctx.spec
        schedule = layer_schedule(factors, spec, x2.shape[1])
        grads = [torch.zeros_like(f) for f in factors]
        with torch.autocast(grad.device.type, enabled=False):
            norm_sq = safe_norm_sq(x2)
            grad_r = 2 * grad / norm_sq  # d loss / d readout, times the 2 of d|psi|^2 / d psi
            lam_x, readout, start = [], [], 0
            for block in _token_blocks(x2, spec):
                stop = start + block.shape[0]
                parts = _backward_block(block, grad_r[:, start:stop], spec, schedule, grads)
                lam_x.append(parts[0])
                readout.append(parts[1])
                start = stop
            grad_norm_sq = -(grad * torch.cat(readout, 1)).sum(0) / (norm_sq * norm_sq)
            grad_x = torch.cat(lam_x, 1).T + 2 * x2 * grad_norm_sq[:, None]
        return (grad_x, None, *grads)


def _token_blocks(x2: Tensor, spec: CircuitSpec) -> tuple[Tensor, ...]:
    return x2.split(max(1, _tuning(x2.device)[1] // spec.dim))


def _backward_block(
    x2: Tensor, grad_r: Tensor, spec: CircuitSpec, schedule: list, grads: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """For one block of tokens: d loss / d x through the state (d, tokens), and the raw readout.

    Adds the factors' gradients to ``grads``.
    """
    inputs: list[Tensor] = []  # the state entering every factor, in circuit order
    psi, readout = run_circuit(x2, spec, schedule, inputs)
    forward_map = ring_permutation(spec.n_qubits, psi.device)[0]
    if spec.readout == "z":
        weight = folded_signs_t(spec.n_qubits, psi.device, grad_r.dtype).T @ grad_r
    else:
        weight = grad_r.index_select(0, forward_map)
    lam = weight * psi  # d loss / d psi
    for layer in reversed(range(len(schedule))):
        for index in reversed(range(len(schedule[layer]))):
            matrix, blocks = schedule[layer][index]
            state = inputs.pop()
            lam_blocks = lam.reshape(blocks, matrix.shape[-2], -1)
            outer = lam_blocks @ state.reshape(blocks, matrix.shape[-1], -1).mH
            grads[index][layer, :, : matrix.shape[-1]] += outer.sum(0)
            lam = _apply(lam, matrix.mH, blocks)  # chain rule through state -> matrix @ state
        if layer:
            lam = lam.index_select(0, forward_map)
    return lam[: x2.shape[1]].real, readout

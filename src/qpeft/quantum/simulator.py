"""Fast, exact, batched statevector simulation of the QAA circuit in PyTorch.

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
whole circuit through cache-sized chunks of tokens, two wires per pass (``kernel=`` picks).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qpeft.errors import UsageError
from qpeft.quantum.circuit import CircuitSpec, ring_pairs


def _tuning(device: torch.device) -> tuple[int, int]:
    """(largest run of wires in one factor, amplitudes per block of tokens) for a device.

    On CPU, factors of at most 2**4 rows cost fewer flops and blocks of ~2**18 amplitudes keep
    the working set in cache; a GPU prefers fewer, larger ops (two factors for 10 qubits).
    """
    return (5, 2**24) if device.type == "cuda" else (4, 2**18)


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
def _folded_signs_t(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    # Z readout of ring(state) equals the readout of state with the ring folded into the table.
    return z_signs(n, device, dtype)[ring_permutation(n, device)[0]].T.contiguous()


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


def _schedule(factors: Sequence[Tensor], spec: CircuitSpec, width: int) -> list[list[tuple[Tensor, int]]]:
    """Every layer's factors with their block counts, for inputs of the given width.

    Inputs narrower than 2**n leave the trailing amplitudes zero, so layer 0's first factor
    (on the leading wires) is cut to the columns of the index blocks that the input reaches.
    """
    layers = [_placed([f[layer] for f in factors]) for layer in range(spec.n_layers)]
    first = layers[0][0][0]
    reach = -(-width * first.shape[-1] // spec.dim)
    layers[0][0] = (first[:, :reach], 1)
    return layers


def _safe_norm_sq(x2: Tensor) -> Tensor:
    # Zero tokens read out 0; dividing them by 1 instead of 0 keeps output and gradient zero.
    norm_sq = (x2 * x2).sum(-1)
    return torch.where(norm_sq > 0, norm_sq, torch.ones_like(norm_sq))


def embed(x2: Tensor, spec: CircuitSpec, dtype: torch.dtype, rows: int | None = None) -> Tensor:
    """Unnormalised amplitudes of (tokens, d) inputs, zero-padded to (rows or 2**n, tokens)."""
    psi = torch.nn.functional.pad(x2.T, (0, 0, 0, (rows or spec.dim) - x2.shape[1]))
    return psi.to(dtype.to_complex() if spec.ansatz == "ry_rz" else dtype)


def _run(x2: Tensor, spec: CircuitSpec, schedule: list, keep: list[Tensor] | None = None):
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
        return psi, _folded_signs_t(spec.n_qubits, psi.device, probs.dtype) @ probs
    return psi, probs.index_select(0, inverse)


class _LeanCircuit(torch.autograd.Function):
    """The circuit with a hand-written backward that saves only its inputs."""

    @staticmethod
    def forward(ctx, x2: Tensor, spec: CircuitSpec, *factors: Tensor) -> Tensor:
        ctx.save_for_backward(x2, *factors)
        ctx.spec = spec
        schedule = _schedule(factors, spec, x2.shape[1])
        readout = torch.cat([_run(block, spec, schedule)[1] for block in _token_blocks(x2, spec)], 1)
        return readout / _safe_norm_sq(x2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x2, *factors = ctx.saved_tensors
        spec: CircuitSpec = ctx.spec
        schedule = _schedule(factors, spec, x2.shape[1])
        grads = [torch.zeros_like(f) for f in factors]
        with torch.autocast(grad.device.type, enabled=False):
            norm_sq = _safe_norm_sq(x2)
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
    psi, readout = _run(x2, spec, schedule, inputs)
    forward_map = ring_permutation(spec.n_qubits, psi.device)[0]
    if spec.readout == "z":
        weight = _folded_signs_t(spec.n_qubits, psi.device, grad_r.dtype).T @ grad_r
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


KERNELS = ("auto", "torch", "fused")


def simulate(
    x: Tensor, angles: Tensor, spec: CircuitSpec, *, memory_lean: bool = True, kernel: str = "auto"
) -> Tensor:
    """Exact readout of the QAA circuit for inputs (..., d), d <= 2**n: returns (..., spec.output_dim).

    Differentiable in ``x`` and ``angles``; runs on their device, in their promoted dtype
    (half precision is computed in float32). ``memory_lean`` keeps no intermediate state for
    backward and recomputes it there, at the cost of one more forward; ``memory_lean=False``
    is plain autograd (which also supports higher derivatives). ``kernel`` picks the
    memory-lean simulator: ``"fused"``, the compiled CPU kernel (``fused_cpu``; real RY circuits
    on CPU), ``"torch"``, the batched tensor ops here (any circuit, any device), or
    ``"auto"``, the fused kernel wherever it applies.
    """
    if x.shape[-1] > spec.dim:
        raise UsageError(f"input width {x.shape[-1]} exceeds 2**{spec.n_qubits} = {spec.dim} amplitudes")
    if tuple(angles.shape) != spec.angle_shape:
        raise UsageError(f"angles have shape {tuple(angles.shape)}, expected {spec.angle_shape}")
    if kernel not in KERNELS:
        raise UsageError(f"unknown simulator kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    dtype = compute_dtype(x, angles)
    with torch.autocast(x.device.type, enabled=False):
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)
        fused = _fused_kernel(x2, spec, kernel) if memory_lean else None
        if fused is not None:
            out = fused.FusedCircuit.apply(x2, angles.to(dtype), spec)
            return out.reshape(*x.shape[:-1], spec.output_dim)
        factors = layer_factors(angles.to(dtype), spec)
        if memory_lean:
            out = _LeanCircuit.apply(x2, spec, *factors)
        else:
            out = _run(x2, spec, _schedule(factors, spec, x2.shape[1]))[1] / _safe_norm_sq(x2)
    return out.T.contiguous().reshape(*x.shape[:-1], spec.output_dim)


def _fused_kernel(x2: Tensor, spec: CircuitSpec, kernel: str):
    """The ``fused_cpu`` module when ``kernel`` asks for it (or "auto" and it applies), else None."""
    if kernel == "torch":
        return None
    from qpeft.quantum import fused_cpu  # here: it imports this module

    if kernel == "fused":
        if not fused_cpu.supports(x2, spec):
            raise UsageError("the fused simulator kernel runs real RY circuits on CPU tensors only")
        if not fused_cpu.available(x2.dtype):
            raise UsageError("the fused simulator kernel needs a C compiler (cc, or $CC)")
        return fused_cpu
    return fused_cpu if fused_cpu.supports(x2, spec) and fused_cpu.available(x2.dtype) else None

"""``simulate``: the exact readout of the QAA circuit, on the kernel that fits.

It checks the inputs and picks a kernel (``auto_kernel``): ``fused_cpu`` (the compiled C kernel,
real RY circuits on CPU), ``statevector`` (batched PyTorch, any circuit, any device; memory-lean)
or, when asked for, ``unitary`` (the circuit's 2**n x 2**n matrix applied to every token at once,
for accelerators). The kernels sit below this module and never import it.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from qpeft.quantum import fused_cpu
from qpeft.quantum.circuit import CircuitSpec
from qpeft.quantum.statevector import (
    LeanCircuit,
    compute_dtype,
    layer_factors,
    layer_schedule,
    run_circuit,
    safe_norm_sq,
)
from qpeft.quantum.unitary import simulate_unitary
from qpeft.utils.errors import UsageError

KERNELS = ("auto", "torch", "fused", "unitary")


def simulate(
    x: Tensor, angles: Tensor, spec: CircuitSpec, *, memory_lean: bool = True, kernel: str = "auto",
    presence: bool = False,
) -> Tensor:
    """Exact readout of the QAA circuit for inputs (..., d), d <= 2**n: returns (..., spec.output_dim).

    With ``presence``, (..., spec.output_dim + 1): one more column, 1 where the input is not zero and 0
    where it is (constant, no gradient), so that an adapter can apply its bias to present tokens only
    inside its one matrix multiply (the fused kernel writes it; elsewhere it is a mask of the inputs).

    Differentiable in ``x`` and ``angles``; runs on their device, in their promoted dtype
    (half precision is computed in float32). ``memory_lean`` keeps no intermediate state for
    backward and recomputes it there, at the cost of one more forward; ``memory_lean=False``
    is plain autograd (which also supports higher derivatives). ``kernel`` picks the
    memory-lean simulator: ``"fused"``, the compiled CPU kernel (``fused_cpu``; real RY circuits
    on CPU), ``"torch"``, the batched tensor ops of ``statevector`` (any circuit, any device), or
    ``"auto"``, the fused kernel wherever it applies. ``"unitary"`` builds the circuit's matrix and
    applies it to all tokens in one matrix multiply (``unitary``; plain autograd, any device).
    """
    if x.shape[-1] > spec.dim:
        raise UsageError(f"input width {x.shape[-1]} exceeds 2**{spec.n_qubits} = {spec.dim} amplitudes")
    if tuple(angles.shape) != spec.angle_shape:
        raise UsageError(f"angles have shape {tuple(angles.shape)}, expected {spec.angle_shape}")
    if kernel not in KERNELS:
        raise UsageError(f"unknown simulator kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    dtype = compute_dtype(x, angles)
    with autocast_off(x.device.type):
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)
        fused = _fused_kernel(x2, spec, kernel) if memory_lean and kernel != "unitary" else None
        if fused is not None:
            out = fused.FusedCircuit.apply(x2, angles.to(dtype), spec, presence)
            return out.reshape(*x.shape[:-1], spec.output_dim + presence)
        out = _readout(x2, angles.to(dtype), spec, memory_lean, kernel)
        if presence:
            out = torch.cat([out, (x2 != 0).any(-1, keepdim=True).to(out.dtype)], -1)
    return out.reshape(*x.shape[:-1], spec.output_dim + presence)


def _readout(x2: Tensor, angles: Tensor, spec: CircuitSpec, memory_lean: bool, kernel: str) -> Tensor:
    """(tokens, spec.output_dim) on the PyTorch kernels: the one-matrix kernel, the memory-lean one or autograd."""
    if kernel == "unitary":
        return simulate_unitary(x2, angles, spec)
    factors = layer_factors(angles, spec)
    if memory_lean:
        out = LeanCircuit.apply(x2, spec, *factors)
    else:
        out = run_circuit(x2, spec, layer_schedule(factors, spec, x2.shape[1]))[1] / safe_norm_sq(x2)
    return out.T.contiguous()


class InferenceReadout:
    """The exact readout with a presence column, ``readout(x, angles)`` -> (..., spec.output_dim + 1), its last
    column 1 where the input is not zero: the inference form's circuit, whose angles no longer change.

    No gradients. On the fused kernel the circuit's C description is built on the first call per dtype from
    the angles given then (``fused_cpu.FrozenCircuit``), and the kernel writes the column itself; elsewhere
    it is ``simulate`` and a mask of the inputs.
    """

    def __init__(self, spec: CircuitSpec):
        self.spec = spec
        # per (dtype, device type): the frozen fused circuit, or None where the fused kernel does not run
        self._frozen: dict[tuple[torch.dtype, str], fused_cpu.FrozenCircuit | None] = {}

    def __call__(self, x: Tensor, angles: Tensor) -> Tensor:
        spec = self.spec
        if x.shape[-1] > spec.dim:
            raise UsageError(f"input width {x.shape[-1]} exceeds 2**{spec.n_qubits} = {spec.dim} amplitudes")
        dtype = compute_dtype(x, angles)
        x2 = x.reshape(-1, x.shape[-1])
        x2 = x2 if x2.dtype == dtype else x2.to(dtype)
        key = (dtype, x2.device.type)
        if key not in self._frozen:  # decided once: generation calls this once per token and module
            fused = fused_cpu.supports(x2, spec) and fused_cpu.available(dtype)
            self._frozen[key] = fused_cpu.FrozenCircuit(angles, spec, dtype) if fused else None
        frozen = self._frozen[key]
        out = frozen(x2) if frozen is not None else simulate(x2, angles.detach(), spec, presence=True)
        return out.reshape(*x.shape[:-1], spec.output_dim + 1)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """``torch.autocast(enabled=False)`` where autocast is on; otherwise nothing (entering it costs a few
    microseconds, and generation enters it once per token and module)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def auto_kernel(x2: Tensor, spec: CircuitSpec) -> str:
    """The kernel ``kernel="auto"`` runs: ``fused`` for real RY circuits on CPU where it is built, else ``torch``.

    ``unitary`` is never chosen by itself: on a 2-core CPU it is the slowest of the three beyond a few qubits
    (``benchmarks/qaa_kernels.py``), and on CUDA no measurement has yet shown it faster than ``torch``
    (``benchmarks/gpu_check.sh`` times both; the rule changes with its figures).
    """
    return "fused" if fused_cpu.supports(x2, spec) and fused_cpu.available(x2.dtype) else "torch"


def _fused_kernel(x2: Tensor, spec: CircuitSpec, kernel: str):
    """The ``fused_cpu`` module when ``kernel`` asks for it (or "auto" and it applies), else None."""
    if kernel == "torch":
        return None
    if kernel == "fused":
        if not fused_cpu.supports(x2, spec):
            raise UsageError("the fused simulator kernel runs real RY circuits on CPU tensors only")
        if not fused_cpu.available(x2.dtype):
            raise UsageError("the fused simulator kernel needs a C compiler (cc, or $CC)")
        return fused_cpu
    return fused_cpu if auto_kernel(x2, spec) == "fused" else None

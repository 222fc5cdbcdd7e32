"""A fused CPU kernel for the real (RY) QAA circuit, written in C (``fused_cpu.c``).

Why by hand: the batched PyTorch kernel (``statevector.py``) applies the circuit as a few
dozen large tensor ops, each of which streams the whole (2**n, tokens) state through memory;
on a CPU those passes, not the arithmetic, set its speed. Here each core takes a chunk of 32
tokens and runs the whole circuit on it in buffers that stay in its L2 cache: the rotations two
wires at a time (each group of four amplitudes read and written once, the tokens as the vector
lanes), the CNOT ring a row gather, the Z readout by folding the probabilities one wire at a
time (about 2 operations per amplitude instead of n). No library simulates a circuit this way.

The backward keeps nothing from the forward either. It reruns the chunk's circuit, then walks
the gates back, undoing each rotation on the state (R is orthogonal, so R^T recovers its
input) while sending the adjoint through it, and reads each angle's gradient off the two at
that gate: d/dθ of RY(θ) is RY(θ) times half the 2 x 2 generator [[0, -1], [1, 0]], so

    dL/dθ = 1/2 Σ_pairs Σ_tokens (λ1 b0 - λ0 b1)

with b the state and λ the adjoint just after the gate.

The C file is compiled on first use with the system's C compiler (``$CC``, else ``cc``), for
this machine's vector instructions, into the qpeft cache (``$QPEFT_CACHE/kernels``), and
loaded with ctypes: plain C, no Python headers, so it builds in about a second, and the only
memory it adds is its buffers. Without a compiler, ``available(dtype)`` is False and the PyTorch
simulator runs instead. The chunks are spread over as many threads as PyTorch uses, on
PyTorch's own OpenMP threads (see the C file).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qpeft.quantum.circuit import CircuitSpec, ring_permutation
from qpeft.utils.cache import cache_dir

SOURCE = Path(__file__).with_suffix(".c")
_REAL = {torch.float32: "float", torch.float64: "double"}


def supports(x: Tensor, spec: CircuitSpec) -> bool:
    """Whether this kernel runs the circuit: real RY ansatz, CPU tensors, float32/float64."""
    return spec.ansatz == "ry" and x.device.type == "cpu" and x.dtype in _REAL


def available(dtype: torch.dtype) -> bool:
    """Whether the kernel for this dtype could be compiled here (it is, on the first call)."""
    return _library(_REAL[dtype]) is not None


class _Circuit(ctypes.Structure):
    # Mirrors the Circuit struct of fused_cpu.c.
    _fields_ = [("tokens", ctypes.c_int64), ("width", ctypes.c_int64), ("layers", ctypes.c_int64),
                ("n", ctypes.c_int64), ("x", ctypes.c_void_p), ("cos", ctypes.c_void_p), ("sin", ctypes.c_void_p),
                ("inverse", ctypes.c_void_p), ("forward", ctypes.c_void_p), ("z_readout", ctypes.c_int)]


@functools.cache
def _library(real: str) -> ctypes.CDLL | None:
    """The kernel compiled for ``real`` ("float" or "double"), building it on first use; None without a compiler."""
    compiler = os.environ.get("CC", "cc")
    flags = ["-O3", "-std=gnu11", "-shared", "-fPIC", f"-DREAL={real}"]
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *flags, platform.node(), platform.machine()]).encode())
    target = cache_dir() / "kernels" / f"fused_cpu-{real}-{key.hexdigest()[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            error = ""
            # this machine's vector instructions and OpenMP where the compiler has them
            for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []):
                result = subprocess.run([compiler, *flags, *extra, str(SOURCE), "-o", str(built)],
                                        capture_output=True, text=True) if shutil.which(compiler) else None
                if result is None or result.returncode == 0:
                    break
                error = result.stderr.strip()
            if result is None or result.returncode != 0:
                reason = "not found" if result is None else error[:200]
                warnings.warn(f"qpeft: could not compile the fused QAA kernel with {compiler} ({reason}); "
                              "QAA runs on the slower PyTorch simulator", stacklevel=2)
                return None
            os.replace(built, target)  # atomic: a concurrent process sees the whole file or none
    library = ctypes.CDLL(str(target))
    for name in ("qaa_forward", "qaa_backward"):
        getattr(library, name).restype = None
    library.qaa_chunk.restype = ctypes.c_int64
    return library


def _pointer(array: np.ndarray | Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(array.ctypes.data if isinstance(array, np.ndarray) else array.data_ptr())


class FusedCircuit(torch.autograd.Function):
    """Readout (tokens, out) of inputs x2 (tokens, d), differentiable in x2 and the angles; saves only those."""

    @staticmethod
    def forward(ctx, x2: Tensor, angles: Tensor, spec: CircuitSpec) -> Tensor:
        ctx.save_for_backward(x2, angles)
        ctx.spec = spec
        x = x2.detach().contiguous()
        library, circuit, keep = _circuit(x, angles, spec)
        out = torch.empty(x.shape[0], spec.output_dim, dtype=x.dtype)
        library.qaa_forward(ctypes.byref(circuit), _pointer(out), torch.get_num_threads())
        del keep
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x2, angles = ctx.saved_tensors
        spec: CircuitSpec = ctx.spec
        x = x2.detach().contiguous()
        library, circuit, keep = _circuit(x, angles, spec)
        grad = grad.to(x.dtype).contiguous()
        grad_x = torch.empty_like(x)
        grad_angles = np.zeros((-(-x.shape[0] // library.qaa_chunk()), *angles.shape), dtype=np.float64)
        library.qaa_backward(ctypes.byref(circuit), _pointer(grad), _pointer(grad_x), _pointer(grad_angles),
                             torch.get_num_threads())
        del keep
        return grad_x, torch.from_numpy(grad_angles.sum(0)).to(angles.dtype), None


def _circuit(x: Tensor, angles: Tensor, spec: CircuitSpec) -> tuple[ctypes.CDLL, _Circuit, list]:
    """The compiled kernel, the C description of the circuit, and the arrays it points into (keep them alive)."""
    library = _library(_REAL[x.dtype])
    if library is None:
        raise RuntimeError("the fused QAA kernel is not available (no C compiler)")
    half = angles.detach().to(torch.float64) / 2
    cos, sin = torch.cos(half).to(x.dtype).contiguous(), torch.sin(half).to(x.dtype).contiguous()
    forward_map, inverse = ring_permutation(spec.n_qubits, torch.device("cpu"))
    keep = [x, cos, sin, inverse, forward_map]
    circuit = _Circuit(x.shape[0], x.shape[1], spec.n_layers, spec.n_qubits, *(_pointer(t) for t in keep),
                       int(spec.readout == "z"))
    return library, circuit, keep

"""A fused CPU kernel for the real (RY) QAA circuit, written in C (``fused_cpu.c``).

Why by hand: the batched PyTorch kernel (``statevector.py``) applies the circuit as a few
dozen large tensor ops, each of which streams the whole (2**n, tokens) state through memory;
on a CPU those passes, not the arithmetic, set its speed. Here each core takes a chunk of 32
tokens and runs the whole circuit on it in buffers that stay in its L2 cache: the rotations two
wires at a time (each group of four amplitudes read and written once, the tokens as the vector
lanes), those of the low index bits block by block in the L1 cache, each as f [[1, -t], [t, 1]]
or f [[t, -1], [1, t]] (one fused multiply-add per amplitude; the factors f, the larger of cos
and sin, are put back once per layer), the CNOT ring carried by each layer's last pass (its rows
written through the ring), the Z readout in one pass (each probability added into the sums over
the high and the low half of its index's bits, each wire's value a signed sum of one half). No
library simulates a circuit this way.

The backward keeps nothing from the forward either. It reruns the chunk's circuit, keeping
each layer's input state in its buffers (not autograd's), then sends the adjoint alone back
through each layer (R^T) and ring, and reads every angle's gradient of a layer off its input
state and the adjoint there: a layer's rotations commute, and d/dθ_q of RY(θ_q) is RY(θ_q)
times half the 2 x 2 generator J = [[0, -1], [1, 0]] on wire q, so with R the layer,

    dL/dθ_q = λ_out · J_q R ψ_in = (R^T λ_out) · J_q ψ_in = 1/2 Σ_pairs Σ_tokens (λ1 ψ0 - λ0 ψ1)

over the pairs of amplitudes wire q couples, at the layer's input: no gate is undone on the
state.

The C file is compiled on first use with the system's C compiler (``$CC``, else ``cc``), for
this machine's vector instructions (``-march=native``), and loaded with ctypes: plain C, no Python
headers, so it builds in one to two seconds, and the only memory it adds is its buffers. Without a
compiler, ``available(dtype)`` is False and the PyTorch simulator runs instead. The chunks are
spread over as many threads as PyTorch uses, on PyTorch's own OpenMP threads (see the C file).

The builds are cached in ``$QPEFT_CACHE/kernels``, a folder that machines may share (a cluster
home directory). A build is keyed by what decides whether it runs here, not by the host name:
the compiler (its path and ``--version``), the flags, the source, the machine architecture and
the CPU's feature set (the ``flags``, on ARM ``Features``, line of /proc/cpuinfo, elsewhere
``platform.processor()``), so a CPU without this one's vector instructions never loads its build.
Each library is written under a temporary name and moved into place, beside a JSON record of its
sha256 and its key's inputs; a cached library is loaded only when its record matches this machine
and its bytes match the record, and is rebuilt otherwise (with a warning). That catches foreign,
partial and corrupted files; it is no defence against someone who may write the folder, who can
write a matching record too. Where the cache folder cannot be written, the kernel is built into a
private temporary folder for this process (one warning); where that fails too, the PyTorch
simulator runs. A kernel that cannot allocate its buffers raises MemoryError.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qpeft.quantum.circuit import CircuitSpec, ring_permutation
from qpeft.utils.atomic import write_json
from qpeft.utils.cache import cache_dir

SOURCE = Path(__file__).with_suffix(".c")
_REAL = {torch.float32: "float", torch.float64: "double"}


def supports(x: Tensor, spec: CircuitSpec) -> bool:
    """Whether this kernel runs the circuit: real RY ansatz, CPU tensors, float32/float64."""
    return spec.ansatz == "ry" and x.device.type == "cpu" and x.dtype in _REAL


def available(dtype: torch.dtype) -> bool:
    """Whether the kernel for this dtype could be compiled here (it is, on the first call)."""
    return _library(_REAL[dtype], WIDE) is not None


# Tokens per row of the kernel's state: WIDE fills the vector lanes many times over for training and prompts;
# generation runs one token per sequence, and a batch of 8 in 32 lanes would be three quarters padding.
WIDE, NARROW = 32, 8


def chunk_for(tokens: int) -> int:
    """The build that runs ``tokens`` at once: NARROW for at most NARROW tokens, else WIDE."""
    return NARROW if tokens <= NARROW else WIDE


class _Circuit(ctypes.Structure):
    # Mirrors the Circuit struct of fused_cpu.c.
    _fields_ = [("tokens", ctypes.c_int64), ("width", ctypes.c_int64), ("layers", ctypes.c_int64),
                ("n", ctypes.c_int64), ("x", ctypes.c_void_p), ("angles", ctypes.c_void_p),
                ("inverse", ctypes.c_void_p), ("forward", ctypes.c_void_p), ("z_readout", ctypes.c_int),
                ("presence", ctypes.c_int)]


_FLAGS = ("-O3", "-std=gnu11", "-shared", "-fPIC")
_LIBS = ("-lm",)  # cos and sin, for the gates the kernel makes from the angles
# this machine's vector instructions and OpenMP where the compiler has them: the first set that compiles. GCC
# and Clang use 256 of AVX-512's bits unless told otherwise; the full 512 made forward plus backward 10% faster
# (float32, 512 tokens) to 23% (float64, 1,024) on this machine. Compilers for other architectures reject the
# x86 option, and the next set is tried.
_NATIVE = ("-march=native", "-mprefer-vector-width=512")
_EXTRA_FLAGS = ((*_NATIVE, "-fopenmp"), ("-march=native", "-fopenmp"), ("-fopenmp",), _NATIVE, ("-march=native",), ())


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's instruction-set features (-march=native builds for them), else ``platform.processor()``."""
    try:
        with cpuinfo.open() as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):  # x86, ARM
                    return " ".join(sorted(set(value.split())))
    except OSError:
        pass
    return platform.processor()


def compiler_identity(compiler: str) -> tuple[str, str] | None:
    """The compiler's path and ``--version`` output; None where it is not found or does not run."""
    path = shutil.which(compiler)
    if path is None:
        return None
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (path, result.stdout + result.stderr) if result.returncode == 0 else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_inputs(compiler: tuple[str, str], real: str, features: str, source: bytes, chunk: int = WIDE) -> dict[str, Any]:
    """What decides whether a build runs here, as JSON values (the record stores it, the name hashes it)."""
    return {"compiler": compiler[0], "compiler_version": compiler[1],
            "flags": [*_FLAGS, f"-DREAL={real}", f"-DCHUNK={chunk}"], "libs": list(_LIBS),
            "extra_flags": [list(extra) for extra in _EXTRA_FLAGS], "machine": platform.machine(),
            "cpu_features": _sha256(features.encode()), "source": _sha256(source)}


def build_key(inputs: dict[str, Any]) -> str:
    return _sha256(json.dumps(inputs, sort_keys=True).encode())


def _record_path(library: Path) -> Path:
    return library.with_suffix(".json")


def verified(library: Path, inputs: dict[str, Any]) -> bool:
    """Whether ``library`` has a record, that record matches ``inputs`` and the file matches the record."""
    try:
        record = json.loads(_record_path(library).read_text())  # untrusted: anyone sharing the folder wrote it
        data = library.read_bytes()
    except (OSError, ValueError, RecursionError):
        return False
    return (isinstance(record, dict) and record.get("inputs") == inputs
            and isinstance(record.get("sha256"), str) and record["sha256"] == _sha256(data))


@functools.cache
def _library(real: str, chunk: int) -> ctypes.CDLL | None:
    """The kernel compiled for ``real`` ("float" or "double") and ``chunk`` tokens per row, building it on first
    use (or where the cached build is not verified); None without a compiler or any folder to build in."""
    compiler = os.environ.get("CC", "cc")
    identity = compiler_identity(compiler)
    if identity is None:
        _no_kernel(f"could not compile the fused QAA kernel with {compiler} (not found, or --version failed)")
        return None
    inputs = key_inputs(identity, real, cpu_features(), SOURCE.read_bytes(), chunk)
    target = cache_dir() / "kernels" / f"fused_cpu-{real}-{chunk}-{build_key(inputs)[:16]}.so"
    if target.exists():
        if verified(target, inputs):
            return _load(target)
        warnings.warn(f"qpeft: not loading {target}: it is not the build its record describes for this machine "
                      "(a foreign, altered or partial file); rebuilding it", stacklevel=2)
    built = _build_anywhere(target, inputs)
    return None if built is None else _load(built)


def _no_kernel(reason: str) -> None:
    warnings.warn(f"qpeft: {reason}; QAA runs on the slower PyTorch simulator", stacklevel=2)


def _build_anywhere(target: Path, inputs: dict[str, Any]) -> Path | None:
    """Build into ``target``'s folder, else into a private temporary one; None where neither works."""
    try:
        return _build(target.parent, target.name, inputs)
    except OSError as error:
        reason = error.strerror or str(error)
    try:
        return _build(_private_folder(target.parent, reason), target.name, inputs)
    except OSError as error:
        _no_kernel(f"could not write the fused QAA kernel anywhere ({error})")
        return None


@functools.cache
def _private_folder(cache: Path, reason: str) -> Path:
    """A temporary folder of this process's own, made (and warned about) once per unwritable cache folder."""
    folder = Path(tempfile.mkdtemp(prefix="qpeft-kernels-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    warnings.warn(f"qpeft: cannot write the kernel cache {cache} ({reason}); building the fused QAA kernel "
                  f"into the private temporary folder {folder} instead", stacklevel=2)
    return folder


def _build(folder: Path, name: str, inputs: dict[str, Any]) -> Path | None:
    """Compile into ``folder / name`` with its record beside it, through a temporary name; None where it does
    not compile (with a warning). Raises OSError where the folder cannot be written."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        built = Path(scratch) / name
        used = _compile(inputs["compiler"], inputs["flags"], built)
        if used is None:
            return None
        # the record first: a process that finds the library then finds its record
        write_json(_record_path(target), {"sha256": _sha256(built.read_bytes()), "inputs": inputs,
                                          "flags_used": used})
        os.replace(built, target)  # atomic: a concurrent process sees the whole file or none
    return target


def _compile(compiler: str, flags: list[str], output: Path) -> list[str] | None:
    """Compile the source into ``output`` with the first extra flags that work: those flags, or None (warned)."""
    error = ""
    for extra in _EXTRA_FLAGS:
        result = subprocess.run([compiler, *flags, *extra, str(SOURCE), *_LIBS, "-o", str(output)],
                                capture_output=True, text=True)
        if result.returncode == 0:
            return list(extra)
        error = result.stderr.strip()
    _no_kernel(f"could not compile the fused QAA kernel with {compiler} ({error[:200]})")
    return None


def _load(library: Path) -> ctypes.CDLL:
    loaded = ctypes.CDLL(str(library))
    circuit, pointer = ctypes.POINTER(_Circuit), ctypes.c_void_p
    # declared, so that ctypes checks each call's arguments and converts plain ints (data_ptr()) itself
    loaded.qaa_forward.argtypes = [circuit, pointer, ctypes.c_int]
    loaded.qaa_backward.argtypes = [circuit, pointer, ctypes.c_int64, pointer, pointer, ctypes.c_int]
    for name in ("qaa_forward", "qaa_backward"):
        getattr(loaded, name).restype = ctypes.c_int  # 0, or nonzero where its buffers could not be allocated
    return loaded


def _check(status: int) -> None:
    if status:
        raise MemoryError("qpeft: the fused QAA kernel could not allocate its buffers")


class FrozenCircuit:
    """The circuit at fixed angles with its C description built once, for inference: ``frozen(x2)`` is the
    readout (tokens, out + 1) of x2 (tokens, width) in ``dtype``, its last column 1 for a token whose input
    is not zero, else 0. No autograd.

    Generation calls the kernel once per token and module: rebuilding the description (pointers) each time
    cost half as much as the circuit itself. The presence column lets the adapter apply
    ``up z + bias (present tokens only)`` as one matrix multiply by ``[up | bias]``.
    """

    def __init__(self, angles: Tensor, spec: CircuitSpec, dtype: torch.dtype):
        self._angles = angles.detach().to(dtype).clone()  # frozen: later edits of the parameter do not reach it
        self.spec, self.dtype = spec, dtype
        # one C struct per calling thread, of which each call sets only the inputs: building it took 3.5 us of
        # the ~55 us a generation call costs; per thread, because the kernel runs without the GIL
        self._local = threading.local()

    def __call__(self, x2: Tensor) -> Tensor:
        x = x2 if x2.is_contiguous() else x2.contiguous()  # only read through its pointer: no autograd to detach
        circuit = getattr(self._local, "circuit", None)
        if circuit is None:
            circuit = self._local.circuit = _describe(x, self._angles, self.spec, presence=True)
        circuit.tokens, circuit.width, circuit.x = x.shape[0], x.shape[1], x.data_ptr()
        out = torch.empty(x.shape[0], self.spec.output_dim + 1, dtype=self.dtype)
        _check(_kernel(x).qaa_forward(ctypes.byref(circuit), out.data_ptr(), _threads(x.shape[0])))
        return out


class FusedCircuit(torch.autograd.Function):
    """Readout (tokens, out) of inputs x2 (tokens, d), differentiable in x2 and the angles; saves only those.

    With ``presence``, one more column: 1 for a token whose input is not zero, else 0 (a constant: its
    gradient is dropped).

    Few tensor operations on purpose: in a training step each one runs with cold caches after the kernel
    (10-30 us each), and they had cost a QAA module half as much again as its kernel. The C description is built
    once in the forward and reused by the backward; the kernel makes the gates from the angles itself, reads
    the incoming gradient in place (its rows at their stride) and sums the angle gradients over its chunks.
    """

    @staticmethod
    def forward(ctx, x2: Tensor, angles: Tensor, spec: CircuitSpec, presence: bool = False) -> Tensor:
        ctx.save_for_backward(x2, angles)
        x = x2.detach().contiguous()
        angles_x = angles.detach().to(x.dtype).contiguous()
        library, circuit = _kernel(x), _describe(x, angles_x, spec, presence)
        out = torch.empty(x.shape[0], spec.output_dim + presence, dtype=x.dtype)
        _check(library.qaa_forward(ctypes.byref(circuit), out.data_ptr(), _threads(x.shape[0])))
        ctx.kernel = library, circuit, angles_x  # angles_x: what circuit.angles points to
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # the C backward is not differentiable: a second derivative raises
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x2, angles = ctx.saved_tensors
        library, circuit, angles_x = ctx.kernel
        x = x2 if x2.is_contiguous() else x2.contiguous()  # a copy where x2 is not: the forward's is gone
        circuit.x = x.data_ptr()
        if grad.dtype != x.dtype or grad.stride(-1) != 1:
            grad = grad.to(x.dtype).contiguous()
        grad_x = torch.empty_like(x)
        grad_angles = torch.empty_like(angles_x)
        _check(library.qaa_backward(ctypes.byref(circuit), grad.data_ptr(), grad.stride(0), grad_x.data_ptr(),
                                    grad_angles.data_ptr(), _threads(x.shape[0])))
        return grad_x, grad_angles if angles.dtype == angles_x.dtype else grad_angles.to(angles.dtype), None, None


def _threads(tokens: int) -> int:
    """PyTorch's thread count, but no more threads than chunks: an idle thread still costs the region's barrier."""
    return max(1, min(torch.get_num_threads(), -(-tokens // chunk_for(tokens))))


def _kernel(x: Tensor) -> ctypes.CDLL:
    """The build for x's dtype and token count."""
    library = _library(_REAL[x.dtype], chunk_for(x.shape[0]))
    if library is None:
        raise RuntimeError("the fused QAA kernel is not available (no C compiler)")
    return library


def _describe(x: Tensor, angles: Tensor, spec: CircuitSpec, presence: bool) -> _Circuit:
    """The C struct for inputs x and angles in x's dtype (both kept alive by the caller), with the CNOT ring's
    index maps (cached for the process)."""
    forward_map, inverse = ring_permutation(spec.n_qubits, torch.device("cpu"))
    return _Circuit(x.shape[0], x.shape[1], spec.n_layers, spec.n_qubits, x.data_ptr(), angles.data_ptr(),
                    inverse.data_ptr(), forward_map.data_ptr(), int(spec.readout == "z"), int(presence))

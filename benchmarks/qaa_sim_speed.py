"""QAA circuit simulation: qpeft's simulator against PennyLane default.qubit, side by side.

Forward plus backward (gradients wrt angles and inputs) of n = 10 qubits, L = 2 layers on
1,024 inputs of width 576 in float64, as QAA meets it in a 576-wide model. PennyLane runs
with backprop and parameter broadcasting (one circuit execution for the whole batch). The
runs take turns, so that both see the same machine load. Also reports the activation memory
autograd keeps per token for both of qpeft's backward paths.

Run: PYTHONPATH=src python benchmarks/qaa_sim_speed.py  (the last line printed is JSON)
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from qpeft.quantum import CircuitSpec, pennylane_reference, simulate


def _forward_backward(fn: Callable, x: torch.Tensor, angles: torch.Tensor, weights: torch.Tensor):
    x, angles = x.clone().requires_grad_(), angles.clone().requires_grad_()
    out = fn(x, angles)
    grad_x, grad_angles = torch.autograd.grad((out * weights).sum(), (x, angles))
    return out.detach(), grad_x, grad_angles


def _interleaved_medians(runs: dict[str, tuple[Callable[[], object], int]]) -> dict[str, float]:
    """Median wall seconds of each run, taking turns so that all see the same machine load."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for turn in range(max(repeats for _, repeats in runs.values())):
        for name, (fn, repeats) in runs.items():
            if turn < repeats:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def saved_bytes_per_token(spec: CircuitSpec, width: int, memory_lean: bool, dtype=torch.float64) -> float:
    """Bytes autograd saves for backward per extra token (its inputs excluded: they exist anyway)."""

    def saved(tokens: int) -> int:
        x = torch.randn(tokens, width, dtype=dtype, requires_grad=True)
        angles = torch.randn(spec.angle_shape, dtype=dtype, requires_grad=True)
        inputs = {x.untyped_storage().data_ptr(), angles.untyped_storage().data_ptr()}
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            pointer = tensor.untyped_storage().data_ptr()
            if pointer not in inputs:
                storages[pointer] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            simulate(x, angles, spec, memory_lean=memory_lean)
        return sum(storages.values())

    return (saved(512) - saved(256)) / 256


def run(
    n_qubits: int = 10,
    layers: int = 2,
    tokens: int = 1024,
    width: int = 576,
    repeats: int = 5,
    reference_repeats: int = 3,
    seed: int = 0,
    threads: int | None = None,
) -> dict:
    """Time both simulators on the same float64 problem; returns the figures as a dict.

    ``threads`` sets torch's intra-op threads for the run (both simulators); None keeps the setting.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _measure(n_qubits, layers, tokens, width, repeats, reference_repeats, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _measure(
    n_qubits: int, layers: int, tokens: int, width: int, repeats: int, reference_repeats: int, seed: int
) -> dict:
    spec = CircuitSpec(n_qubits, layers)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, width, generator=gen, dtype=torch.float64)
    angles = torch.randn(spec.angle_shape, generator=gen, dtype=torch.float64)
    weights = torch.randn(tokens, spec.output_dim, generator=gen, dtype=torch.float64)

    def ours(memory_lean: bool, kernel: str = "auto"):
        return _forward_backward(
            lambda a, b: simulate(a, b, spec, memory_lean=memory_lean, kernel=kernel), x, angles, weights
        )

    def reference():
        return _forward_backward(lambda a, b: pennylane_reference(a, b, spec), x, angles, weights)

    ours(True), ours(True, "torch"), ours(False)  # warm-up: thread pools, caches of the ring tables
    seconds = _interleaved_medians(
        {
            "lean": (lambda: ours(True), repeats),  # the fused C kernel where it applies (CPU)
            "torch": (lambda: ours(True, "torch"), repeats),
            "plain": (lambda: ours(False), repeats),
            "pennylane": (reference, reference_repeats),
        }
    )
    expected = reference()
    diff = max(
        (a - b).abs().max().item()
        for result in (ours(True), ours(True, "torch"), ours(False))
        for a, b in zip(result, expected, strict=True)
    )
    return {
        "n_qubits": n_qubits,
        "layers": layers,
        "tokens": tokens,
        "width": width,
        "dtype": "float64",
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews both timings
        "sim_seconds": seconds["lean"],
        "sim_torch_kernel_seconds": seconds["torch"],
        "sim_plain_autograd_seconds": seconds["plain"],
        "pennylane_seconds": seconds["pennylane"],
        "sim_vs_pennylane_speedup": seconds["pennylane"] / seconds["lean"],
        "max_abs_diff_vs_pennylane": diff,
        "saved_bytes_per_token_memory_lean": saved_bytes_per_token(spec, width, True),
        "saved_bytes_per_token_plain_autograd": saved_bytes_per_token(spec, width, False),
    }


def main() -> None:
    result = run()
    print(
        f"QAA circuit, {result['n_qubits']} qubits, {result['layers']} layers, {result['tokens']} inputs "
        f"of width {result['width']}, float64, forward + backward, {result['torch_threads']} threads "
        f"(load average {result['load_average_1min']:.1f})"
    )
    print(f"  qpeft simulator (memory-lean): {result['sim_seconds'] * 1e3:9.1f} ms  (the default kernel)")
    print(f"  qpeft PyTorch kernel:          {result['sim_torch_kernel_seconds'] * 1e3:9.1f} ms")
    print(f"  qpeft simulator (plain):       {result['sim_plain_autograd_seconds'] * 1e3:9.1f} ms")
    print(f"  PennyLane default.qubit:       {result['pennylane_seconds'] * 1e3:9.1f} ms")
    print(
        f"  speed-up: {result['sim_vs_pennylane_speedup']:.0f}x; "
        f"max |difference| in outputs and gradients: {result['max_abs_diff_vs_pennylane']:.1e}"
    )
    print(
        f"  activations saved for backward per token: {result['saved_bytes_per_token_memory_lean']:.0f} B "
        f"memory-lean, {result['saved_bytes_per_token_plain_autograd']:.0f} B plain autograd"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

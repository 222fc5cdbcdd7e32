"""QAA circuit simulation: qpeft's simulator against PennyLane default.qubit and the fastest peers.

Forward plus backward (gradients wrt angles and inputs) of n = 10 qubits, L = 2 layers on
1,024 inputs of width 576 in float64, as QAA meets it in a 576-wide model. PennyLane runs
with backprop and parameter broadcasting (one circuit execution for the whole batch). The
runs take turns, so that both see the same machine load. Also reports the activation memory
autograd keeps per token for both of qpeft's backward paths.

Then the same problem in every peer simulator that is installed (``qaa_sim_peers.py``:
lightning.qubit with the adjoint method, Qulacs, TensorCircuit-NG on JAX, Qiskit Aer's
statevector, default.qubit), each timed on what it can do, against qpeft on the same job
(forward only for a peer without gradients); a missing peer is reported as missing. A peer
that loops over inputs in Python and takes seconds per hundred inputs (lightning.qubit) is
timed on the first ``LOOP_TOKENS`` inputs and scaled to the batch, which it says. Also qpeft's
forward-plus-backward time over its forward time, and its forward's floating-point rate
against the machine's measured float64 matmul rate.

Run: PYTHONPATH=src python benchmarks/qaa_sim_speed.py  (the last line printed is JSON)
Peers: pip install -e '.[bench]'
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from qaa_sim_peers import LIMITS, PEERS, available
from qpeft.quantum import CircuitSpec, pennylane_reference, simulate

#: inputs a Python-loop peer that is slow per input is timed on (its time is scaled to the whole batch)
LOOP_TOKENS = 128
SCALED_PEERS = ("lightning.qubit",)


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


def forward_flops(spec: CircuitSpec, tokens: int) -> float:
    """Floating-point operations of one forward pass of the real (RY) circuit, counted by hand.

    Per token and 2**n amplitudes: the norm, 2 per amplitude (square, add); each RY rotates every
    pair of amplitudes (4 multiplies, 2 adds per pair: 3 per amplitude), n per layer, L layers;
    the CNOT rings move amplitudes and cost none; the readout squares each amplitude and adds it,
    signed, into n sums (1 + n per amplitude); the division by the norm, n more per token.
    """
    per_token = (2 + 3 * spec.n_qubits * spec.n_layers + 1 + spec.n_qubits) * spec.dim + spec.n_qubits
    return float(per_token * tokens)


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's float64 rate on a large matrix multiply in PyTorch (median of ``repeats``)."""
    a, b = torch.randn(size, size, dtype=torch.float64), torch.randn(size, size, dtype=torch.float64)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def peer_figures(spec: CircuitSpec, tokens: int, width: int, seed: int, qpeft_seconds: dict[str, float],
                 repeats: int = 3) -> dict:
    """Every installed peer on the problem: its time on what it can do, the ratio to qpeft's time for that job,
    and the max |difference| to qpeft's outputs and gradients.

    ``qpeft_seconds`` holds qpeft's own times measured above ("forward", "gradients"), not re-timed between the
    peers' calls: after a JAX call, XLA's worker threads still hold the cores and slow the next PyTorch call
    several-fold (seen here: 23 ms instead of 5 ms), which would flatter the peer.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(tokens, width))
    angles = rng.normal(size=spec.angle_shape)
    weights = rng.normal(size=(tokens, spec.output_dim))

    def qpeft_job(rows: slice):
        inputs, theta = torch.tensor(x[rows], requires_grad=True), torch.tensor(angles, requires_grad=True)
        out = simulate(inputs, theta, spec)
        (out * torch.tensor(weights[rows])).sum().backward()
        return out.detach().numpy(), theta.grad.numpy(), inputs.grad.numpy()

    installed, figures = available(), {}
    for name, peer in PEERS.items():
        if not installed[name]:
            figures[name] = {"status": "missing"}
            continue
        rows = slice(0, LOOP_TOKENS) if name in SCALED_PEERS else slice(0, tokens)
        count = len(range(tokens)[rows])
        got = peer(x[rows], angles, weights[rows])  # also the warm-up (JIT compilation, device set-up)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(got, qpeft_job(rows), strict=True) if a is not None)
        timed = _interleaved_medians({"peer": (lambda peer=peer, rows=rows: peer(x[rows], angles, weights[rows]),
                                               1 if name in SCALED_PEERS else repeats)})
        seconds = timed["peer"] * tokens / count
        gradients = got[1] is not None
        ours = qpeft_seconds["gradients" if gradients else "forward"]
        figures[name] = {
            "status": "ok",
            "job": "forward + angle and input gradients" if got[2] is not None else
                   "forward + angle gradients" if gradients else "forward only",
            "limits": LIMITS.get(name, ""),
            "seconds": seconds,
            "qpeft_seconds_same_job": ours,  # qpeft computes both gradients in that time
            "peer_over_qpeft": seconds / ours,
            "max_abs_diff_vs_qpeft": diff,
            "timed_inputs": count,
        }
    return figures


def backward_over_forward(spec: CircuitSpec, tokens: int, width: int, repeats: int = 7) -> dict:
    """qpeft's forward-plus-backward time over its forward time on the same inputs, same run."""
    x = torch.randn(tokens, width, dtype=torch.float64)
    angles = torch.randn(spec.angle_shape, dtype=torch.float64)
    weights = torch.randn(tokens, spec.output_dim, dtype=torch.float64)

    def forward():
        with torch.no_grad():
            simulate(x, angles, spec)

    forward(), _forward_backward(lambda a, b: simulate(a, b, spec), x, angles, weights)  # warm-up
    seconds = _interleaved_medians({
        "forward": (forward, repeats),
        "both": (lambda: _forward_backward(lambda a, b: simulate(a, b, spec), x, angles, weights), repeats),
    })
    peak = matmul_peak_flops()
    rate = forward_flops(spec, tokens) / seconds["forward"]
    return {"sim_forward_seconds": seconds["forward"], "sim_forward_backward_seconds": seconds["both"],
            "sim_backward_over_forward": seconds["both"] / seconds["forward"],
            "sim_forward_flops": forward_flops(spec, tokens), "sim_forward_flops_per_s": rate,
            "matmul_float64_flops_per_s": peak, "sim_fraction_of_peak": rate / peak}


def print_peers(peers: dict, tokens: int) -> None:
    print("peers, each on what it can do, beside qpeft on the same job:")
    for name, figures in peers.items():
        if figures["status"] != "ok":
            print(f"  {name:18s} not installed (pip install -e '.[bench]')")
            continue
        scaled = "" if figures["timed_inputs"] == tokens else f", scaled from {figures['timed_inputs']} inputs"
        print(f"  {name:18s} {figures['seconds'] * 1e3:10.1f} ms  {figures['peer_over_qpeft']:7.1f}x qpeft's "
              f"{figures['qpeft_seconds_same_job'] * 1e3:.1f} ms ({figures['job']}{scaled}; "
              f"max |diff| {figures['max_abs_diff_vs_qpeft']:.1e})")
        if figures["limits"]:
            print(f"  {'':18s} {figures['limits']}")


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
    spec = CircuitSpec(result["n_qubits"], result["layers"])
    result.update(backward_over_forward(spec, result["tokens"], result["width"]))
    print(f"  forward {result['sim_forward_seconds'] * 1e3:.2f} ms, forward + backward "
          f"{result['sim_forward_backward_seconds'] * 1e3:.2f} ms: backward over forward "
          f"{result['sim_backward_over_forward']:.2f}x")
    print(f"  forward rate {result['sim_forward_flops_per_s'] / 1e9:.1f} GFLOP/s "
          f"({result['sim_forward_flops'] / 1e6:.1f} MFLOP counted by hand) against a float64 matmul's "
          f"{result['matmul_float64_flops_per_s'] / 1e9:.1f} GFLOP/s: {result['sim_fraction_of_peak']:.2f} of it")
    peers = peer_figures(spec, result["tokens"], result["width"], seed=1,
                         qpeft_seconds={"forward": result["sim_forward_seconds"],
                                        "gradients": result["sim_forward_backward_seconds"]})
    print_peers(peers, result["tokens"])
    trained = {name: f for name, f in peers.items() if f["status"] == "ok" and f["job"] != "forward only"}
    fastest = min(trained, key=lambda name: trained[name]["peer_over_qpeft"]) if trained else None
    result["peers"] = peers
    result["fastest_peer"] = fastest
    result["sim_vs_fastest_peer_speedup"] = trained[fastest]["peer_over_qpeft"] if fastest else None
    if fastest:
        print(f"  fastest peer with gradients: {fastest}, {result['sim_vs_fastest_peer_speedup']:.0f}x qpeft's time")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Each QAA simulator kernel on this machine's device: forward plus backward time, side by side.

qpeft's kernels for the circuit (``simulate(kernel=...)``): ``fused`` (the compiled C kernel, CPU only),
``torch`` (batched PyTorch statevector ops, memory-lean) and ``unitary`` (the circuit's 2**n x 2**n matrix
applied to every token in one matrix multiply, for accelerators). For n = 8, 10 and 12 qubits, L = 2, 4,096
inputs, float32 and float64, each timed in turns with the others (median), the same inputs, plus the largest
difference of their outputs from the ``torch`` kernel's. The figures are what ``simulator.auto_kernel``'s
rule rests on; ``gpu_check.sh`` runs this on a GPU.

Run: PYTHONPATH=src python benchmarks/qaa_kernels.py [--device cuda]  (the last line printed is JSON)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from qpeft.quantum import CircuitSpec, simulate


def timed(fn, device: torch.device, repeats: int) -> float:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()  # warm-up: compilation, caches, the CUDA context
    return statistics.median(once() for _ in range(repeats))


def measure(device: torch.device, qubits=(8, 10, 12), tokens: int = 4096, repeats: int = 5) -> list[dict]:
    kernels = ["torch", "unitary"] + (["fused"] if device.type == "cpu" else [])
    rows = []
    for n in qubits:
        for dtype in (torch.float32, torch.float64):
            spec = CircuitSpec(n, 2)
            x = torch.randn(tokens, spec.dim * 9 // 16, dtype=dtype, device=device)
            angles = torch.randn(spec.angle_shape, dtype=dtype, device=device)

            def job(kernel: str, x=x, angles=angles, spec=spec) -> torch.Tensor:
                a, b = x.clone().requires_grad_(), angles.clone().requires_grad_()
                out = simulate(a, b, spec, kernel=kernel)
                out.sum().backward()
                return out.detach()

            reference = job("torch")
            for kernel in kernels:
                seconds = timed(lambda kernel=kernel: job(kernel), device, repeats)
                diff = (job(kernel) - reference).abs().max().item()
                rows.append({"n_qubits": n, "dtype": str(dtype).removeprefix("torch."), "kernel": kernel,
                             "seconds": seconds, "max_abs_diff_vs_torch": diff})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = measure(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"QAA kernels, forward + backward, 4,096 inputs, L = 2, on {name}")
    for row in rows:
        base = next(r["seconds"] for r in rows
                    if (r["n_qubits"], r["dtype"], r["kernel"]) == (row["n_qubits"], row["dtype"], "torch"))
        print(f"  n={row['n_qubits']:2d} {row['dtype']:8s} {row['kernel']:8s} {row['seconds'] * 1e3:9.2f} ms "
              f"({row['seconds'] / base:5.2f}x torch; max |diff| {row['max_abs_diff_vs_torch']:.1e})")
    fastest = {}
    for row in rows:
        key = f"n{row['n_qubits']}_{row['dtype']}"
        if key not in fastest or row["seconds"] < fastest[key][1]:
            fastest[key] = (row["kernel"], row["seconds"])
    print(json.dumps({"device": name, "rows": rows, "fastest_kernel": {k: v[0] for k, v in fastest.items()}}))


if __name__ == "__main__":
    main()

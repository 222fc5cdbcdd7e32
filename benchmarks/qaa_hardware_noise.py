"""How far the hardware model's global-depolarising approximation is from Qiskit Aer's per-gate density matrix.

For n = 2 ... 8 qubits (and 10, slower: about 25 s per input here), L = 2, each input's device circuit
(state preparation and trained layers, transpiled to {cx, u}) runs in Aer's density-matrix simulator with a
depolarising channel of the stated error after every gate and a bit flip of the readout error on every
qubit; qpeft's approximation scales the exact readout by the circuit fidelity F and (1 - 2 e_readout). The
inputs are real activations where ``--run`` names a trained QAA run: the inputs of its first adapted
module on test prompts, with its trained angles at that module's own width (n = 10 for SmolLM2) and their
first 2**n features with uniformly drawn angles below it; without ``--run``, Gaussian vectors. Printed per
setting and n: F, the largest error of the approximation over inputs and qubits, the largest effect of the
noise itself (exact against Aer), and their ratio; the last line is JSON.

Run: PYTHONPATH=src python benchmarks/qaa_hardware_noise.py [--run demo/qaa] [--max-qubits 10]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from qpeft.quantum import CircuitSpec, GateErrors, simulate, simulate_noisy
from qpeft.quantum.aer_ref import aer_density_readout
from qpeft.quantum.hardware import circuit_fidelity, gate_counts

#: Two-qubit error rates, single-qubit a tenth, readout equal (the robustness grid's convention).
SETTINGS = (1e-3, 1e-2)


def run_activations(run_dir: Path, tokens: int) -> tuple[torch.Tensor, torch.Tensor, CircuitSpec]:
    """Inputs of the run's first QAA module on its test prompts, with that module's trained angles and spec."""
    from qpeft.experiment.runs import load_run
    from qpeft.methods.qaa.model import qaa_layers

    model, tokenizer, config = load_run(run_dir)
    name, layer = next(iter(qaa_layers(model)))
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    prompts = [json.loads(line)["input"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()[:4]]
    with torch.no_grad():
        model(**tokenizer(prompts, return_tensors="pt", padding=True))
    handle.remove()
    x = torch.cat([c.reshape(-1, c.shape[-1]) for c in captured]).double()
    x = x[x.norm(dim=-1) > 0]
    picked = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:tokens]]
    print(f"activations: {len(picked)} token inputs of {name} ({layer.in_features} features) from {run_dir}")
    return picked, layer.qaa_angles.detach().double(), layer.spec


def compare(x: torch.Tensor, angles: torch.Tensor, spec: CircuitSpec, errors: GateErrors) -> dict:
    worst_error, worst_noise, fidelity, started = 0.0, 0.0, 1.0, time.perf_counter()
    for token in x:
        reference, circuit = aer_density_readout(token, angles, spec, errors)
        fidelity = circuit_fidelity(gate_counts(circuit), errors)
        approx = simulate_noisy(token, angles, spec, fidelity=fidelity, readout_error=errors.readout)
        worst_error = max(worst_error, float((approx - reference).abs().max()))
        worst_noise = max(worst_noise, float((simulate(token, angles, spec) - reference).abs().max()))
    return {"qubits": spec.n_qubits, "two_qubit_error": errors.two, "inputs": len(x), "fidelity": fidelity,
            "approx_error": worst_error, "noise_effect": worst_noise,
            "error_over_effect": worst_error / worst_noise if worst_noise else None,
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained QAA run whose activations and angles to use")
    parser.add_argument("--max-qubits", type=int, default=10)
    parser.add_argument("--inputs", type=int, default=4, help="inputs per n (2 at 10 qubits and above)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    real = run_activations(args.run, 16) if args.run else None
    rows = []
    for n in [*range(2, 9), *([10] if args.max_qubits >= 10 else [])]:
        if n > args.max_qubits:
            break
        count = args.inputs if n < 10 else 2
        spec = CircuitSpec(n, 2, "ry", "z")
        if real is not None and real[2].n_qubits == n:
            x, angles, spec = real[0][:count], real[1], real[2]
        elif real is not None:
            x = real[0][:count, : spec.dim]
            angles = torch.rand(spec.angle_shape, generator=generator, dtype=torch.float64) * (2 * math.pi)
        else:
            x = torch.randn(count, spec.dim, generator=generator, dtype=torch.float64)
            angles = torch.rand(spec.angle_shape, generator=generator, dtype=torch.float64) * (2 * math.pi)
        for two in SETTINGS if n < 10 else SETTINGS[:1]:
            row = compare(x, angles, spec, GateErrors(two / 10, two, two))
            rows.append(row)
            print(f"n={n:2d} 2q error {two:g}: fidelity {row['fidelity']:.3f}, approximation error "
                  f"{row['approx_error']:.4f}, noise effect {row['noise_effect']:.4f} "
                  f"(ratio {row['error_over_effect']:.2f}), {row['seconds']:.1f} s", flush=True)
    summary = {f"approx_error_n{r['qubits']}_e{r['two_qubit_error']:g}": round(r["approx_error"], 5) for r in rows}
    print(json.dumps({"inputs": "run activations" if args.run else "gaussian",
                      "max_error_over_effect": max(r["error_over_effect"] or 0 for r in rows), **summary}))


if __name__ == "__main__":
    main()

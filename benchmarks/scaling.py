"""How each method's cost grows with the model's width: the claim that QAA's logarithmic compression scales.

Random Llama-style models of hidden width 256, 512, 1,024, 2,048 and 4,096 (QAA: n = 8 ... 12 qubits; 2
layers, width / 64 heads, vocabulary 512), the same tokens per step (batch 4 x 64) for every method, each
method on its defaults through ``qpeft.prepare`` and ``qpeft.optimizer`` (LoRA, SoRA and QAA on q_proj and
v_proj; Prefix tuning; full fine-tuning). Per method and width: trainable parameters, training step time,
and the training memory counted from the tensors (parameters, their gradients and AdamW state for the
trainable ones, and the activations autograd saves for backward; the allocator's own overhead is not in
it), plus QAA's circuit alone (forward + backward on the step's 256 token inputs). The steps are timed in
rounds after a warm-up, each round one step of every method of the width, the order rotating from round to
round, so that a change in the host's speed hits every method alike: a method's step time is the median of
its rounds, and QAA over LoRA is the median of the rounds' ratios with its sign-test interval
(``analysis.timing.paired_ratio``), as in ``qaa_speed.py``. The growth exponent of each figure is the slope
of a least-squares line through log(figure) against log(width). Writes ``benchmarks/scaling.png`` (log-log),
which the README shows.

Run: PYTHONPATH=src python benchmarks/scaling.py [--widths 256,512,...] [--rounds 9]  (the last line printed is JSON)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import qpeft
from qaa_speed import interval_json, ratio_text, saved_bytes, step
from qpeft.analysis.timing import paired_ratio
from qpeft.quantum import CircuitSpec, simulate

METHODS = ("full", "lora", "sora", "prefix", "qaa")
BATCH, TOKENS, VOCAB = 4, 64, 512


def random_llama(width: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    heads = max(1, width // 64)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=width, intermediate_size=8 * width // 3, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config)


def measure_width(width: int, rounds: int) -> tuple[dict[str, dict], dict[str, list[float]]]:
    """Every method's figures at one width, and its step times, the i-th of each from round i."""
    runs = {}
    for method in METHODS:
        model = qpeft.prepare(random_llama(width), method)
        runs[method] = (model, qpeft.optimizer(model, max_steps=100))
    ids = torch.randint(3, VOCAB, (BATCH, TOKENS), generator=torch.Generator().manual_seed(1))
    for run in runs.values():
        step(*run, ids)  # warm-up (and AdamW's state exists from here on)
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for index in range(rounds):
        shift = index % len(METHODS)
        for method in METHODS[shift:] + METHODS[:shift]:
            times[method].append(step(*runs[method], ids))
    return {method: counted_figures(model, ids) | {"step_seconds": statistics.median(times[method])}
            for method, (model, _) in runs.items()}, times


def counted_figures(model: torch.nn.Module, ids: torch.Tensor) -> dict:
    """Trainable parameters and the training memory counted from the tensors."""
    parameters = {id(p): p for p in model.parameters()}
    trainable = [p for p in parameters.values() if p.requires_grad]
    activations = saved_bytes(model, ids)  # in a step of its own: its hook would slow a timed one
    model_bytes = sum(p.numel() * p.element_size() for p in parameters.values())
    trained_bytes = sum(p.numel() * p.element_size() for p in trainable)
    return {
        "trainable_params": sum(p.numel() for p in trainable),
        # parameters + gradients and two AdamW moments of the trainable ones + saved activations (not parameters)
        "training_memory_mb": (model_bytes + 3 * trained_bytes + activations) / 2**20,
    }


def circuit_seconds(width: int, repeats: int = 5) -> float:
    spec = CircuitSpec(max(1, math.ceil(math.log2(width))), 2)
    x = torch.randn(BATCH * TOKENS, width, requires_grad=True)
    angles = torch.randn(spec.angle_shape, requires_grad=True)

    def once() -> float:
        started = time.perf_counter()
        simulate(x, angles, spec).sum().backward()
        return time.perf_counter() - started

    once()
    return statistics.median(once() for _ in range(repeats))


def exponent(widths: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])


def plot(widths: list[int], results: dict, circuit: list[float], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.4))
    axes = figure.subplots(1, 3)
    for axis, key, label in zip(axes, ("trainable_params", "step_seconds", "training_memory_mb"),
                                ("trainable parameters", "training step (s)", "training memory (MB, counted)"),
                                strict=True):
        for method in METHODS:
            axis.plot(widths, [results[method][w][key] for w in widths], marker="o", label=method)
        if key == "step_seconds":
            axis.plot(widths, circuit, marker="x", linestyle="--", color="black", label="QAA circuit alone")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("hidden width")
        axis.set_title(label)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="256,512,1024,2048,4096")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per width (one step of every method each)")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    results: dict[str, dict[int, dict]] = {method: {} for method in METHODS}
    ratios = {}
    print(f"random Llama-style models, 2 layers, batch {BATCH} x {TOKENS} tokens, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds of interleaved steps per width")
    for width in widths:
        figures, times = measure_width(width, args.rounds)
        for method in METHODS:
            results[method][width] = figures[method]
            print(f"  width {width:5d} {method:7s} trainable {figures[method]['trainable_params']:>12,}  step "
                  f"{figures[method]['step_seconds']:7.3f} s  memory {figures[method]['training_memory_mb']:9.1f} MB")
        ratios[width] = paired_ratio(times["qaa"], times["lora"])
        of_medians = figures["qaa"]["step_seconds"] / figures["lora"]["step_seconds"]
        print(f"  width {width:5d} step {ratio_text(ratios[width], of_medians)}")
    circuit = [circuit_seconds(width) for width in widths]
    for width, seconds in zip(widths, circuit, strict=True):
        print(f"  width {width:5d} QAA circuit alone (n = {math.ceil(math.log2(width))}): {seconds * 1e3:.2f} ms")
    exponents = {method: {key: exponent(widths, [results[method][w][key] for w in widths])
                          for key in ("trainable_params", "step_seconds", "training_memory_mb")}
                 for method in METHODS}
    exponents["qaa_circuit"] = {"step_seconds": exponent(widths, circuit)}
    for name, values in exponents.items():
        print(f"  growth exponent {name:12s} " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    plot(widths, results, circuit, Path(__file__).with_name("scaling.png"))
    print(json.dumps({"widths": widths, "results": results, "qaa_circuit_seconds": dict(zip(widths, circuit,
                      strict=True)), "exponents": exponents,
                      "qaa_over_lora_step_time": {w: round(r.median, 4) for w, r in ratios.items()},
                      "qaa_over_lora_step_time_interval": {w: interval_json(r) for w, r in ratios.items()},
                      "rounds": args.rounds, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()

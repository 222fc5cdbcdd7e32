"""QAA against LoRA on SmolLM2-135M, and qpeft's circuit simulator against PennyLane.

1. Simulator: forward + backward of the 10-qubit, 2-layer circuit on 1,024 inputs of width 576
   (``benchmarks/qaa_sim_speed.run``): speed-up over PennyLane and the largest difference.
2. Step time: one training step (forward, backward, AdamW) of SmolLM2-135M with QAA (L = 2) on
   q_proj and v_proj against LoRA r = 8 on the same modules, same batch (8 x 64 tokens). Both
   models live in one process and take turns (ABAB..., the order flipping every round) after a
   warm-up. Each round's two steps form a pair: ``qaa_over_lora_step_time`` is the median of the
   per-round ratios QAA / LoRA, ``qaa_over_lora_step_time_interval`` the sign-test interval for it
   (``analysis.timing.paired_ratio``: no distribution assumed, coverage at least 95% from 6 rounds
   on), so that a target such as 1.03 is judged against the run's own noise.
   Then greedy generation with both trained models, 8 prompts of 16 tokens, 16 new tokens, timed
   in turns (``evaluation.latency.paired_generation_ms``), paired the same way:
   ``qaa_over_lora_generation_latency`` and its interval. Each generates in the form evaluation
   loads it in: QAA's inference form, LoRA's unmerged PEFT model.
   The ratio of the two medians (``*_of_medians``, the key's meaning up to stop 28) is printed beside it:
   it is not paired, and when the host's speed shifts during a run it compares one method's steps
   from before the shift with the other's from after (one run here: 1.043 of medians against 1.024
   paired, the host 10% faster from the 13th of 25 rounds on).
3. Peak memory of that step: each method trains in a fresh subprocess (started before the
   timing runs load their models), which reports
   - the kernel's peak resident set over the training steps: VmHWM, reset through
     ``/proc/self/clear_refs`` once the model is loaded, so that it holds the weights, the
     optimiser state, the activations and every transient buffer of training, but not the
     loading (this is the key ``qaa_over_lora_peak_memory``; on CUDA the key uses
     ``torch.cuda.max_memory_allocated``; without that /proc file, the sampled peak below);
   - ``ru_maxrss`` (the same peak including the loading; it cannot be reset);
   - the peak RSS sampled every 2 ms during the steps, and that minus the RSS before the first
     step (what training adds over the loaded model);
   - the bytes autograd saves for backward in one step (unique storages, parameters excluded).

The CPU may be shared: the load average before and after is printed, and the timings of 2 are
interleaved so that both methods see the same load.

    python benchmarks/qaa_speed.py [--quick] [--repeats N]   (the last line printed is JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from qpeft.analysis.timing import PairedRatio, paired_ratio
from qpeft.evaluation.latency import paired_generation_ms
from qpeft.methods import get_method
from qpeft.methods.lora import LoRAConfig
from qpeft.methods.qaa import QAAConfig
from qpeft.methods.qaa.model import qaa_layers
from qpeft.models import load_model
from qpeft.settings import DEFAULT_MODEL

MODEL = DEFAULT_MODEL
TARGETS = "q_proj,v_proj"
BATCH, TOKENS = 8, 64


def build(name: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model with the method's adapter and the optimiser training would use."""
    torch.manual_seed(0)
    method = get_method(name)
    if name == "qaa":
        config = QAAConfig(layers=2, target_modules=TARGETS)
        model = method.prepare(load_model(MODEL), config)
        optimizer = method.create_optimizer(model, config, 0.0, 100)
    else:
        config = LoRAConfig(r=8, target_modules=TARGETS)
        model = method.prepare(load_model(MODEL), config)
        # what the Trainer builds for LoRA: torch AdamW over the trainable parameters
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    model.train()
    return model, optimizer


def batch(model: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    return torch.randint(0, vocab, (BATCH, TOKENS), generator=generator).to(next(model.parameters()).device)


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> float:
    """One training step; its wall seconds."""
    if ids.is_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def step_times(repeats: int, warmup: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Training step seconds per method (interleaved, the i-th of each from one round), then both models'
    generation milliseconds per token (in turns, the i-th of each a pair)."""
    runs = {name: build(name) for name in ("lora", "qaa")}
    if torch.cuda.is_available():
        runs = {name: (model.cuda(), optimizer) for name, (model, optimizer) in runs.items()}
    ids = batch(runs["lora"][0])
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(warmup + repeats):
        order = ("lora", "qaa") if index % 2 == 0 else ("qaa", "lora")
        for name in order:
            seconds = step(*runs[name], ids)
            if index >= warmup:
                times[name].append(seconds)
    # greedy generation of 16 tokens after 8 prompts of 16 tokens, QAA and LoRA in turns (ms per token), each in
    # the form its method's ``load`` gives evaluation: QAA's inference form, LoRA's unmerged PEFT model
    for _, layer in qaa_layers(runs["qaa"][0]):
        layer.to_inference()
    qaa_ms, lora_ms = paired_generation_ms(runs["qaa"][0], runs["lora"][0], ids[:, :16], 16, max(repeats, 5))
    return times, {"qaa": qaa_ms, "lora": lora_ms}


def ratio_text(ratio: PairedRatio, of_medians: float) -> str:
    return (f"QAA / LoRA {ratio.median:.3f} (median of {ratio.pairs} paired ratios; {ratio.coverage:.1%} interval "
            f"{ratio.low:.3f}-{ratio.high:.3f}; ratio of the medians {of_medians:.3f})")


def interval_json(ratio: PairedRatio) -> dict[str, float]:
    return {"low": round(ratio.low, 4), "high": round(ratio.high, 4), "coverage": round(ratio.coverage, 4),
            "pairs": ratio.pairs}


# Memory: one method per fresh process ---------------------------------------------------------


def saved_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward (parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in params:
            storages[pointer] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where Linux does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def vm_hwm_mb() -> float | None:
    """The kernel's peak resident set of this process since start or the last reset (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def memory_child(name: str, steps: int) -> dict:
    import psutil

    model, optimizer = build(name)
    cuda = torch.cuda.is_available()
    if cuda:
        model = model.cuda()
    ids = batch(model)
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.002):
            peak[0] = max(peak[0], process.memory_info().rss)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    load_peak = vm_hwm_mb()
    reset = peak_rss_reset()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(steps):
        step(model, optimizer, ids)
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], process.memory_info().rss)
    figures = {
        "method": name,
        "steps": steps,
        # the kernel's peak RSS over the training steps only (reset after loading the model)
        "training_peak_rss_mb": vm_hwm_mb() if reset else None,
        "load_peak_rss_mb": load_peak,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "rss_before_steps_mb": before / 2**20,
        "sampled_peak_rss_mb": peak[0] / 2**20,
        "training_rss_increase_mb": (peak[0] - before) / 2**20,
        "saved_for_backward_mb": saved_bytes(model, ids) / 2**20,
    }
    if cuda:
        figures["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return figures


def memory_figures(steps: int) -> dict[str, dict]:
    figures = {}
    for name in ("lora", "qaa"):
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name, "--steps", str(steps)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        figures[name] = json.loads(output.strip().splitlines()[-1])
    return figures


# The report ------------------------------------------------------------------------------------


def simulator_figures(quick: bool) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import qaa_sim_speed

    if quick:
        return qaa_sim_speed.run(tokens=256, repeats=3, reference_repeats=2)
    return qaa_sim_speed.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller simulator problem")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per method (default 9, quick 5)")
    parser.add_argument("--memory-steps", type=int, default=None, help="steps per memory subprocess (default 3)")
    parser.add_argument("--memory-child", choices=["lora", "qaa"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.steps)))
        return
    repeats = args.repeats or (5 if args.quick else 9)
    warmup = 2
    load_before = os.getloadavg()[0]

    memory = memory_figures(args.memory_steps or 3)  # first: fresh processes, before this one grows
    sim = simulator_figures(args.quick)
    print(f"1. simulator, {sim['n_qubits']} qubits, {sim['layers']} layers, {sim['tokens']} inputs, float64, "
          f"forward + backward: qpeft {sim['sim_seconds'] * 1e3:.1f} ms, "
          f"PennyLane {sim['pennylane_seconds'] * 1e3:.0f} ms: {sim['sim_vs_pennylane_speedup']:.0f}x; "
          f"max |difference| {sim['max_abs_diff_vs_pennylane']:.1e}")

    times, latency_ms = step_times(repeats, warmup)
    medians = {name: statistics.median(values) for name, values in times.items()}
    step_of_medians = medians["qaa"] / medians["lora"]
    step_ratio = paired_ratio(times["qaa"], times["lora"])
    print(f"2. {MODEL}, q_proj + v_proj, batch {BATCH} x {TOKENS}, {torch.get_num_threads()} threads, median of "
          f"{repeats} interleaved steps after {warmup} warm-up: LoRA r=8 {medians['lora']:.3f} s, "
          f"QAA L=2 {medians['qaa']:.3f} s: {ratio_text(step_ratio, step_of_medians)}")
    for name, values in times.items():
        print(f"   {name} steps (s): {' '.join(f'{v:.3f}' for v in values)}")

    latency = {name: statistics.median(values) for name, values in latency_ms.items()}
    latency_of_medians = latency["qaa"] / latency["lora"]
    latency_ratio = paired_ratio(latency_ms["qaa"], latency_ms["lora"])
    print(f"   generation, greedy, 8 prompts x 16 new tokens, in turns: LoRA {latency['lora']:.2f} ms, "
          f"QAA {latency['qaa']:.2f} ms per token: {ratio_text(latency_ratio, latency_of_medians)}")

    if "cuda_max_allocated_mb" in memory["lora"]:
        key = "cuda_max_allocated_mb"
    elif memory["lora"].get("training_peak_rss_mb"):
        key = "training_peak_rss_mb"
    else:
        key = "sampled_peak_rss_mb"
    fields = ("training_peak_rss_mb", "sampled_peak_rss_mb", "ru_maxrss_mb", "training_rss_increase_mb",
              "saved_for_backward_mb", "cuda_max_allocated_mb")
    ratios = {field: memory["qaa"][field] / memory["lora"][field]
              for field in fields if memory["lora"].get(field) and memory["qaa"].get(field)}
    print(f"3. peak memory, fresh process per method, {memory['lora']['steps']} steps:")
    for field in ratios:
        print(f"   {field:<26} LoRA {memory['lora'][field]:8.1f} MB  QAA {memory['qaa'][field]:8.1f} MB  "
              f"ratio {ratios[field]:.3f}")
    load_after = os.getloadavg()[0]
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}")
    print(json.dumps({
        "sim_vs_pennylane_speedup": round(sim["sim_vs_pennylane_speedup"], 2),
        "max_abs_diff_vs_pennylane": sim["max_abs_diff_vs_pennylane"],
        "qaa_over_lora_step_time": round(step_ratio.median, 4),
        "qaa_over_lora_peak_memory": round(ratios[key], 4),
        "qaa_over_lora_generation_latency": round(latency_ratio.median, 4),
        "qaa_over_lora_step_time_interval": interval_json(step_ratio),
        "qaa_over_lora_generation_latency_interval": interval_json(latency_ratio),
        "qaa_over_lora_step_time_of_medians": round(step_of_medians, 4),
        "qaa_over_lora_generation_latency_of_medians": round(latency_of_medians, 4),
        "generation_ms_per_token": {name: round(value, 3) for name, value in latency.items()},
        "peak_memory_measure": key,
        "qaa_over_lora_training_rss_increase": round(ratios["training_rss_increase_mb"], 4),
        "qaa_over_lora_saved_for_backward": round(ratios["saved_for_backward_mb"], 4),
        "qaa_step_s": round(medians["qaa"], 4),
        "lora_step_s": round(medians["lora"], 4),
        "memory_mb": {name: {k: round(v, 2) for k, v in figures.items() if isinstance(v, float)}
                      for name, figures in memory.items()},
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "quick": args.quick,
    }))


if __name__ == "__main__":
    main()

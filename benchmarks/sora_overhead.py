"""How much a SoRA training step costs over a LoRA one on SmolLM2-135M.

One step = forward, backward and optimiser step (for SoRA: AdamW plus the proximal gate
step). Both adapters use r = 8 on q_proj and v_proj and see the same batch (8 sequences
x 64 tokens); the two are timed alternately in one process, after a warm-up, and the
median of the repeats is reported. The last line printed is a JSON object.

    python benchmarks/sora_overhead.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from qpeft.methods import get_method
from qpeft.methods.lora import LoRAConfig
from qpeft.methods.sora import SoRAConfig
from qpeft.models import load_model
from qpeft.settings import DEFAULT_MODEL

MODEL = DEFAULT_MODEL
TARGETS = "q_proj,v_proj"
BATCH, TOKENS = 8, 64


def build(name: str, steps: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    method = get_method(name)
    if name == "sora":
        config = SoRAConfig(r=8, target_modules=TARGETS)
        model = method.prepare(load_model(MODEL), config)
        optimizer = method.create_optimizer(model, config, 0.0, steps)
    else:
        config = LoRAConfig(r=8, target_modules=TARGETS)
        model = method.prepare(load_model(MODEL), config)
        # what the Trainer builds for LoRA: torch AdamW over the trainable parameters
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    model.train()
    return model, optimizer


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> tuple[float, float]:
    """One training step; returns (forward + backward seconds, optimiser seconds)."""
    started = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    middle = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return middle - started, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per method (default 7, quick 3)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    warmup = 1 if args.quick else 2

    runs = {name: build(name, warmup + repeats) for name in ("lora", "sora")}
    generator = torch.Generator().manual_seed(0)
    vocab = runs["lora"][0].get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (BATCH, TOKENS), generator=generator)

    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for index in range(warmup + repeats):
        order = ("lora", "sora") if index % 2 == 0 else ("sora", "lora")  # alternate, against drift
        for name in order:
            measured = step(*runs[name], ids)
            if index >= warmup:
                timings[name].append(measured)

    figures = {}
    print(f"{MODEL}, r=8 on {TARGETS}, batch {BATCH} x {TOKENS} tokens, {torch.get_num_threads()} threads, "
          f"median of {repeats} steps after {warmup} warm-up")
    print(f"{'method':<8}{'step s':>10}{'fwd+bwd s':>12}{'optimizer ms':>14}")
    for name, rows in timings.items():
        total = statistics.median(a + b for a, b in rows)
        forward_backward = statistics.median(a for a, _ in rows)
        optimizer = statistics.median(b for _, b in rows)
        figures[name] = total
        print(f"{name:<8}{total:>10.3f}{forward_backward:>12.3f}{1000 * optimizer:>14.2f}")
    ratio = figures["sora"] / figures["lora"]
    print(f"SoRA / LoRA step time: {ratio:.3f}")
    print(json.dumps({"sora_over_lora_step_time": round(ratio, 4), "sora_step_s": round(figures["sora"], 4),
                      "lora_step_s": round(figures["lora"], 4), "repeats": repeats,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()

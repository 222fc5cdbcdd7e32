#!/usr/bin/env bash
# The GPU checks, as one script that fits 5 minutes on one GPU (run it whenever a GPU machine is lent):
#   1. the card (name, memory, driver);
#   2. every QAA simulator kernel on CUDA (benchmarks/qaa_kernels.py --device cuda): forward + backward of
#      n = 8, 10, 12 qubits on 4,096 inputs in float32 and float64, the "torch" kernel against the one-matrix
#      "unitary" kernel, their outputs compared (the figures the CUDA kernel rule in simulator.auto_kernel needs);
#   3. QAA against LoRA on SmolLM2-135M (benchmarks/qaa_speed.py --quick): training step time, peak CUDA
#      memory, generation latency, and the simulator against PennyLane.
# The last line is one JSON object holding the card and both benchmarks' JSON.
#   bash benchmarks/gpu_check.sh        (from the repository root, with the project installed: make install)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH=src
out=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
timeout 150 "$PYTHON" benchmarks/qaa_kernels.py --device cuda | tee "$out/kernels.txt"
timeout 140 "$PYTHON" benchmarks/qaa_speed.py --quick | tee "$out/speed.txt"
"$PYTHON" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
last = lambda name: json.loads((out / name).read_text().strip().splitlines()[-1])
print(json.dumps({"card": (out / "card.txt").read_text().strip(), "kernels": last("kernels.txt"),
                  "qaa_speed": last("speed.txt")}))
PY

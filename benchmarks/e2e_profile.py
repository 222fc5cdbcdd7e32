"""The E2E challenge's metric suite beside qpeft's default metrics, and against the official script's scores.

    python benchmarks/e2e_profile.py [COMPARISON_FOLDER ...]

1. With ``$QPEFT_DATA_DIR/fixtures/e2e-metrics``: each fixture system scored by the E2E profile
   against the official script's figures (``scores.json``), with the largest deviation per metric.
2. For each comparison folder: every row's ``predictions.jsonl`` scored by the E2E profile,
   printed beside the default BLEU and ROUGE-L that its ``metrics.json`` holds.

The last line is a JSON object with both.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from qpeft.evaluation.e2e_metrics import E2E_KEYS, e2e_scores

# the fixtures' names and scales (BLEU, METEOR, ROUGE-L 0-1) for each of qpeft's keys (0-100)
OFFICIAL = {"bleu_e2e": ("BLEU", 100.0), "nist_e2e": ("NIST", 1.0), "meteor_e2e": ("METEOR", 100.0),
            "rougeL_e2e": ("ROUGE_L", 100.0), "cider_e2e": ("CIDEr", 1.0)}


def fixture_comparison(folder: Path) -> dict[str, dict[str, float]]:
    blocks = (folder / "references.txt").read_text(encoding="utf-8").strip("\n").split("\n\n")
    references = [[line for line in block.split("\n") if line.strip()] for block in blocks]
    official = json.loads((folder / "scores.json").read_text())
    deviations: dict[str, float] = {}
    print(f"{'system':8} " + " ".join(f"{OFFICIAL[key][0]:>17}" for key in E2E_KEYS) + "   (ours / official)")
    for system, scores in official.items():
        outputs = (folder / f"{system}.txt").read_text(encoding="utf-8").split("\n")[: len(references)]
        ours = e2e_scores(outputs, references)
        cells = []
        for key in E2E_KEYS:
            name, scale = OFFICIAL[key]
            value = None if ours[key] is None else ours[key] / scale
            if value is not None:
                deviations[name] = max(deviations.get(name, 0.0), abs(value - scores[name]))
            cells.append(f"{'–' if value is None else f'{value:.4f}':>8}/{scores[name]:.4f}")
        print(f"{system:8} " + " ".join(f"{cell:>17}" for cell in cells))
    print("largest deviation: " + ", ".join(f"{name} {value:.4f}" for name, value in deviations.items()))
    return {"max_deviation": deviations}


def comparison_scores(folder: Path) -> dict[str, dict[str, float | None]]:
    rows = {}
    print(f"\n{folder}: {'row':14} {'BLEU':>7} {'ROUGE-L':>8} | " + " ".join(f"{k:>11}" for k in E2E_KEYS))
    for predictions in sorted(folder.glob("*/predictions.jsonl")):
        items = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
        metrics = json.loads((predictions.parent / "metrics.json").read_text())
        started = time.perf_counter()
        scores = e2e_scores([item["prediction"] for item in items], [item["references"] for item in items])
        seconds = time.perf_counter() - started
        rows[predictions.parent.name] = {"bleu": metrics["bleu"], "rougeL": metrics["rougeL"], **scores,
                                         "seconds": seconds, "items": len(items)}
        cells = " ".join(f"{'–' if scores[k] is None else f'{scores[k]:.3f}':>11}" for k in E2E_KEYS)
        print(f"{'':{len(str(folder)) + 2}}{predictions.parent.name:14} {metrics['bleu']:7.2f} "
              f"{metrics['rougeL']:8.2f} | {cells}   ({seconds:.1f} s)")
    return rows


def main(folders: list[str]) -> None:
    result: dict[str, object] = {}
    fixtures = Path(os.environ.get("QPEFT_DATA_DIR") or "/nonexistent") / "fixtures" / "e2e-metrics"
    if fixtures.is_dir():
        result["fixtures"] = fixture_comparison(fixtures)
    for folder in folders:
        result[folder] = comparison_scores(Path(folder))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])

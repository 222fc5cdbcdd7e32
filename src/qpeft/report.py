"""The Markdown report of a comparison."""

from __future__ import annotations

from typing import Any

RESULT_COLUMNS = [
    "bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1", "test_loss",
    "trainable_params", "trainable_pct", "peak_memory_mb", "train_tokens_per_s",
    "train_seconds", "final_train_loss", "adapter_bytes", "generation_ms_per_token",
]

# (column, header, format)
TABLE = [
    ("bleu", "BLEU", "{:.2f}"),
    ("rouge1", "ROUGE-1", "{:.2f}"),
    ("rouge2", "ROUGE-2", "{:.2f}"),
    ("rougeL", "ROUGE-L", "{:.2f}"),
    ("bertscore_f1", "BERTScore F1", "{:.2f}"),
    ("test_loss", "test loss", "{:.3f}"),
    ("trainable_params", "trainable", "{:,}"),
    ("trainable_pct", "trainable %", "{:.4f}"),
    ("peak_memory_mb", "peak MB", "{:,.0f}"),
    ("train_tokens_per_s", "tokens/s", "{:,.0f}"),
    ("train_seconds", "train s", "{:.0f}"),
    ("final_train_loss", "final train loss", "{:.3f}"),
    ("adapter_bytes", "adapter KB", "{:,.0f}"),
    ("generation_ms_per_token", "gen ms/token", "{:.1f}"),
]


def format_cell(column: str, value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if column == "adapter_bytes":
        value = value / 1024
    return fmt.format(value)


def summary_table(methods: dict[str, dict[str, Any]]) -> str:
    lines = ["| method | " + " | ".join(header for _, header, _ in TABLE) + " |",
             "|---|" + "---:|" * len(TABLE)]
    for name, figures in methods.items():
        cells = [format_cell(column, figures.get(column), fmt) for column, _, fmt in TABLE]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(payload: dict[str, Any]) -> str:
    experiment = payload["experiment"]
    train, evaluation = experiment["train"], experiment["eval"]
    test_items = next(iter(payload["methods"].values())).get("test_items")
    beams = evaluation["num_beams"]
    decoding = "greedy" if beams == 1 else f"beam-{beams}"
    lines = [
        "# qpeft comparison",
        "",
        f"Model `{experiment['model']}`, data set `{experiment['dataset']}`, seed {experiment['seed']}; "
        f"{train['steps']} steps of batch {train['batch_size']} x {train['grad_accum']} "
        f"(max {train['max_length']} tokens); {test_items} test items, "
        f"{decoding} decoding, "
        f"at most {evaluation['max_new_tokens']} new tokens.",
        "",
        "Scores are on a 0-100 scale, each against every reference of a test item. "
        "`base` is the untrained base model. Trainable % is of the base model's parameters.",
        "",
        summary_table(payload["methods"]),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)

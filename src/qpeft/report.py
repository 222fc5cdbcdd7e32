"""The Markdown report of a comparison."""

from __future__ import annotations

from typing import Any

RESULT_COLUMNS = [
    "bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1", "test_loss",
    "trainable_params", "trainable_pct", "peak_memory_mb", "train_tokens_per_s",
    "train_seconds", "final_train_loss", "adapter_bytes", "generation_ms_per_token",
]

# Figures the comparative analysis adds (qpeft.compare.analyse_seed); results.csv lists them after RESULT_COLUMNS.
ANALYSIS_COLUMNS = [
    "latency_ms_per_token", "latency_vs_base",
    "best_smoothed_loss", "loss_drop_pct", "steps_to_margin", "steps_to_margin_pct", "loss_at_25pct", "loss_at_50pct",
    "final_smoothed_loss", "loss_tail_std", "grad_norm_median", "grad_norm_p95", "grad_norm_max",
    "non_finite_steps", "capacity_modules", "effective_rank_min", "effective_rank_median", "effective_rank_max",
    "jacobian_rank_min", "jacobian_rank_median", "jacobian_rank_max",
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


def summary_table(methods: dict[str, dict[str, Any]], spread: dict[str, dict[str, Any]] | None = None) -> str:
    """One row per method; with ``spread`` (results.json's ``aggregate``) a cell reads mean ± std over seeds."""
    lines = ["| method | " + " | ".join(header for _, header, _ in TABLE) + " |",
             "|---|" + "---:|" * len(TABLE)]
    for name, figures in methods.items():
        cells = [format_cell(column, figures.get(column), fmt) for column, _, fmt in TABLE]
        if spread:
            from qpeft.report_html import with_std

            cells = [with_std(cell, column, fmt, spread.get(name, {}))
                     for cell, (column, _, fmt) in zip(cells, TABLE, strict=True)]
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
        f"Model `{experiment['model']}`, data set `{experiment['dataset']}`, {seeds_phrase(payload)}; "
        f"{train['steps']} steps of batch {train['batch_size']} x {train['grad_accum']} "
        f"(max {train['max_length']} tokens); {test_items} test items, "
        f"{decoding} decoding, "
        f"at most {evaluation['max_new_tokens']} new tokens.",
        "",
        "Scores are on a 0-100 scale, each against every reference of a test item. "
        "`base` is the untrained base model. Trainable % is of the base model's parameters.",
        "",
        summary_table(payload["methods"], payload.get("aggregate") if len(payload.get("seeds", [])) > 1 else None),
        "",
        *analysis_markdown(payload),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def seeds_phrase(payload: dict[str, Any]) -> str:
    seeds = payload.get("seeds") or [payload["experiment"]["seed"]]
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(str(s) for s in seeds)} (mean ± sample std over seeds)"


def analysis_markdown(payload: dict[str, Any]) -> list[str]:
    """The findings, convergence, efficiency and capacity sections (empty for payloads without analysis)."""
    if "per_seed" not in payload:
        return []
    from qpeft.report_html import markdown_sections

    return markdown_sections(payload)

"""The Markdown report of a comparison."""

from __future__ import annotations

from typing import Any

RESULT_COLUMNS = [
    "status", "bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1", "test_loss", "validation_loss",
    "max_new_tokens_reached_pct", "trainable_params", "trainable_pct", "peak_memory_mb", "train_tokens_per_s",
    "train_seconds", "final_train_loss", "adapter_bytes", "generation_ms_per_token",
]

# Figures the comparative analysis adds (qpeft.compare.analyse_seed); results.csv lists them after RESULT_COLUMNS.
ANALYSIS_COLUMNS = [
    "latency_ms_per_token", "latency_vs_base",
    "best_smoothed_loss", "loss_drop_pct", "steps_to_margin", "steps_to_margin_pct", "loss_at_25pct", "loss_at_50pct",
    "final_smoothed_loss", "loss_tail_std", "grad_norm_median", "grad_norm_p95", "grad_norm_max",
    "non_finite_steps", "capacity_modules", "update_jacobian_rank_min", "update_jacobian_rank_median",
    "update_jacobian_rank_max", "effective_rank_min", "effective_rank_median", "effective_rank_max",
]

# (column, header, format)
TABLE = [
    ("bleu", "BLEU", "{:.2f}"),
    ("rouge1", "ROUGE-1", "{:.2f}"),
    ("rouge2", "ROUGE-2", "{:.2f}"),
    ("rougeL", "ROUGE-L", "{:.2f}"),
    ("bertscore_f1", "BERTScore F1", "{:.2f}"),
    ("test_loss", "test loss", "{:.3f}"),
    ("validation_loss", "val. loss", "{:.3f}"),
    ("max_new_tokens_reached_pct", "cut at max tokens %", "{:.0f}"),
    ("trainable_params", "trainable", "{:,}"),
    ("trainable_pct", "trainable %", "{:.4f}"),
    ("peak_memory_mb", "peak MB", "{:,.0f}"),
    ("train_tokens_per_s", "tokens/s", "{:,.0f}"),
    ("train_seconds", "train s", "{:.0f}"),
    ("final_train_loss", "final train loss", "{:.3f}"),
    ("adapter_bytes", "adapter KB", "{:,.0f}"),
    ("generation_ms_per_token", "gen ms/token", "{:.1f}"),
]


QUALITY_COLUMNS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1")


def format_cell(column: str, value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if column == "adapter_bytes":
        value = value / 1024
    return fmt.format(value)


def interval_text(interval: Any, fmt: str = "{:.2f}") -> str:
    """``[low, high]`` of a bootstrap interval, or nothing when there is none."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2 or None in interval:
        return ""
    return f" [{fmt.format(interval[0])}, {fmt.format(interval[1])}]"


def summary_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The summary table: one row per method, quality cells with their bootstrap interval, ± std over seeds.

    A failed method's row says so instead of showing numbers.
    """
    from qpeft.report_html import with_std

    spread = payload.get("aggregate", {}) if len(payload.get("seeds", [])) > 1 else {}
    headers = ["method", *(header for _, header, _ in TABLE)]
    rows = []
    for name, figures in payload["methods"].items():
        if figures.get("status") == "failed":
            rows.append([name, f"failed: {figures.get('error', '')}", *([""] * (len(TABLE) - 1))])
            continue
        cells = []
        for column, _, fmt in TABLE:
            raw = figures.get(column)
            cell = format_cell(column, raw, fmt) if isinstance(raw, (int, float)) else "–"
            cell = with_std(cell, column, fmt, spread.get(name, {}))
            if column in QUALITY_COLUMNS and cell != "–":
                cell += interval_text(figures.get("ci", {}).get(column), fmt)
            cells.append(cell)
        rows.append([name, *cells])
    return headers, rows


def significance_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """p-values of the paired bootstrap against the reference row, one row per other method (empty without)."""
    reference = payload.get("analysis", {}).get("reference")
    labels = dict((column, header) for column, header, _ in TABLE)
    rows = []
    for name, figures in payload["methods"].items():
        p_values = figures.get("p_vs_reference") or {}
        if name == reference or not p_values:
            continue
        rows.append([name, *(p_value_text(p_values.get(column)) for column in QUALITY_COLUMNS)])
    if not rows:
        return [], []
    return [f"method vs {reference}", *(labels[c] for c in QUALITY_COLUMNS)], rows


def p_value_text(p: Any) -> str:
    if not isinstance(p, (int, float)):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(payload: dict[str, Any]) -> str:
    return markdown_table(*summary_rows(payload))


def baselines_sentence(payload: dict[str, Any]) -> str:
    """What the two no-training rows are, in one sentence."""
    shots = payload["experiment"]["eval"].get("fewshot_examples") or 0
    text = "`base` is the untrained base model prompted zero-shot"
    if shots and "base-fewshot" in payload["methods"]:
        text += (f"; `base-fewshot` is the same model with {shots} solved training examples in every prompt, "
                 "the fair baseline of what the model does without training")
    return text + "."


def sample_sentence(payload: dict[str, Any]) -> str:
    """Which test items were scored (all, or a seeded random sample), and how the intervals were made."""
    experiment = payload["experiment"]
    sample = payload.get("test_sample") or {}
    items = sample.get("items")
    requested = experiment["eval"].get("max_test_items") or 0
    seed = experiment["eval"].get("sample_seed")
    seed = experiment.get("seed") if seed is None else seed
    if requested and items is not None and requested <= items:
        text = (f"Scored on a random sample of {items} test items (drawn with seed {seed}; their indices are in "
                "results.json)")
    else:
        text = f"Scored on all {items if items is not None else '?'} test items"
    analysis = payload.get("analysis", {})
    if analysis.get("reference"):
        confidence = analysis.get("confidence", 0.95)
        text += (f". Brackets are {confidence:.0%} paired-bootstrap intervals over the test items"
                 f"{' and seeds' if len(payload.get('seeds', [])) > 1 else ''} "
                 f"({analysis.get('bootstrap_resamples')} resamples, the same for every row); p-values are "
                 f"against `{analysis['reference']}`")
    elif analysis.get("bootstrap_note"):
        text += f". {analysis['bootstrap_note']}"
    return text + "."


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
        f"{baselines_sentence(payload)} Trainable % is of the base model's parameters. {sample_sentence(payload)}",
        "",
        summary_table(payload),
        "",
    ]
    headers, rows = significance_rows(payload)
    if rows:
        lines += ["## Paired tests", "", markdown_table(headers, rows), ""]
    lines += [
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

"""The report's tables, the same rows for Markdown and HTML: column specs, cell formats, and row builders."""

from __future__ import annotations

import re
from typing import Any

from qpeft.analysis.convergence import fraction_key
from qpeft.experiment.results import FAILED, TASK_METRICS
from qpeft.report.payload import interval, multi_seed, robustness_sets, task_of, value

METRIC_LABELS = {
    "bleu": "BLEU", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bertscore_f1": "BERTScore F1",
    "accuracy": "accuracy", "macro_f1": "macro-F1", "exact_match": "exact match",
}
#: Per task, the quality figures the findings, the noise table and the plots show (the main one first).
HEADLINE_METRICS = {"generation": ("bleu", "rougeL", "bertscore_f1"),
                    "classification": ("accuracy", "macro_f1", "exact_match")}


def quality_columns(payload: dict[str, Any]) -> tuple[str, ...]:
    """Every quality figure of the payload's task (the summary table's and the paired tests' columns)."""
    return TASK_METRICS[task_of(payload)]


def quality_metrics(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, label) of the task's headline quality figures, the main one first."""
    return [(key, METRIC_LABELS[key]) for key in HEADLINE_METRICS[task_of(payload)]]


def main_metric(payload: dict[str, Any]) -> tuple[str, str]:
    """(key, label) of the figure a comparison is ranked by: BLEU for generation, accuracy for classification."""
    key = quality_columns(payload)[0]
    return key, METRIC_LABELS[key]


# (column, header, format) of the summary table after the quality columns
OTHER_COLUMNS = [
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


def summary_columns(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The summary table's (column, header, format): the task's quality figures, then the rest."""
    return [(key, METRIC_LABELS[key], "{:.2f}") for key in quality_columns(payload)] + OTHER_COLUMNS


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
    spread = payload.get("aggregate", {}) if len(payload.get("seeds", [])) > 1 else {}
    table, quality = summary_columns(payload), quality_columns(payload)
    headers = ["method", *(header for _, header, _ in table)]
    rows = []
    for name, figures in payload["methods"].items():
        if figures.get("status") == FAILED:
            rows.append([name, f"failed: {figures.get('error', '')}", *([""] * (len(table) - 1))])
            continue
        cells = []
        for column, _, fmt in table:
            raw = figures.get(column)
            cell = format_cell(column, raw, fmt) if isinstance(raw, (int, float)) else "–"
            cell = with_std(cell, column, fmt, spread.get(name, {}))
            if column in quality and cell != "–":
                cell += interval_text(figures.get("ci", {}).get(column), fmt)
            cells.append(cell)
        rows.append([name, *cells])
    return headers, rows


def significance_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """p-values of the paired bootstrap against the reference row, one row per other method (empty without)."""
    reference = payload.get("analysis", {}).get("reference")
    columns = quality_columns(payload)
    rows = []
    for name, figures in payload["methods"].items():
        p_values = figures.get("p_vs_reference") or {}
        if name == reference or not p_values:
            continue
        rows.append([name, *(p_value_text(p_values.get(column)) for column in columns)])
    if not rows:
        return [], []
    return [f"method vs {reference}", *(METRIC_LABELS[c] for c in columns)], rows


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


def with_std(cell: str, column: str, fmt: str, spread: dict[str, Any]) -> str:
    """``cell`` followed by ``± std`` when the figure varies over seeds."""
    stats = spread.get(column)
    deviation = stats.get("std") if isinstance(stats, dict) else None
    if cell == "–" or not isinstance(deviation, (int, float)) or not deviation > 0:
        return cell
    shown = format_cell(column, deviation, fmt.replace(",", ""))
    if not re.search(r"[1-9]", shown):
        return cell  # the spread rounds to zero at this precision
    return f"{cell} ± {shown}"


def _fraction_columns(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    fractions = payload.get("analysis", {}).get("loss_fractions", [0.25, 0.5])
    return [(fraction_key(f), f"loss @{100 * f:g}%", "{:.3f}") for f in fractions]


def convergence_columns(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    margin = payload.get("analysis", {}).get("convergence_margin", 0.05)
    return [
        ("steps_to_margin", f"steps to {100 * margin:g}% of best", "{:,.0f}"),
        ("steps_to_margin_pct", "% of budget", "{:.0f}"),
        *_fraction_columns(payload),
        ("final_smoothed_loss", "final loss (smoothed)", "{:.3f}"),
        ("best_smoothed_loss", "best loss (smoothed)", "{:.3f}"),
        ("loss_drop_pct", "drop from start %", "{:.1f}"),
        ("loss_tail_std", "loss std, last 10%", "{:.3f}"),
        ("grad_norm_median", "grad norm median", "{:.3g}"),
        ("grad_norm_p95", "grad norm p95", "{:.3g}"),
        ("grad_norm_max", "grad norm max", "{:.3g}"),
        ("non_finite_steps", "non-finite steps", "{:,.0f}"),
    ]


EFFICIENCY_COLUMNS = [
    ("trainable_params", "trainable", "{:,.0f}"),
    ("trainable_pct", "trainable %", "{:.4f}"),
    ("adapter_bytes", "adapter KB", "{:,.0f}"),
    ("peak_memory_mb", "peak MB", "{:,.0f}"),
    ("train_tokens_per_s", "train tokens/s", "{:,.0f}"),
    ("train_seconds", "train s", "{:,.1f}"),
    ("generation_ms_per_token", "eval gen ms/token", "{:.2f}"),
    ("latency_ms_per_token", "latency ms/token", "{:.2f}"),
    ("latency_vs_base", "latency vs base", "{:.2f}x"),
]

# The E2E challenge's suite (``--metrics e2e``), on the scales of the LoRA paper's E2E table.
E2E_COLUMNS = [
    ("bleu_e2e", "BLEU", "{:.2f}"),
    ("nist_e2e", "NIST", "{:.3f}"),
    ("meteor_e2e", "METEOR", "{:.2f}"),
    ("rougeL_e2e", "ROUGE-L", "{:.2f}"),
    ("cider_e2e", "CIDEr", "{:.3f}"),
]

E2E_NOTE = (
    "The E2E challenge's metrics as its official script (tuetschek/e2e-metrics) computes them: BLEU "
    "case-insensitive, NIST, METEOR 1.5, ROUGE-L (beta 1.2) and CIDEr, each over all references of an item "
    "(BLEU, METEOR and ROUGE-L 0-100). These, not the table above, are the figures to put beside published E2E "
    "tables, and only when every test item is scored. A dash: not computed (no Java runtime for METEOR, "
    "ROUGE-L and CIDEr)."
)

def e2e_table(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every row's E2E challenge figures; no rows when no row has one (the default metric profile)."""
    headers, rows = figure_table(payload, E2E_COLUMNS, list(payload["methods"]), drop_empty=False)
    return headers, rows if any(cell != "–" for row in rows for cell in row[1:]) else []


CAPACITY_COLUMNS = [
    ("capacity_modules", "modules", "{:,.0f}"),
    ("update_jacobian_rank_min", "Jacobian rank min", "{:,.1f}"),
    ("update_jacobian_rank_median", "Jacobian rank median", "{:,.1f}"),
    ("update_jacobian_rank_max", "Jacobian rank max", "{:,.1f}"),
    ("update_jacobian_rank_bound", "Jacobian rank bound", "{:,.0f}"),
    ("effective_rank_min", "eff. rank min (linear)", "{:.2f}"),
    ("effective_rank_median", "eff. rank median (linear)", "{:.2f}"),
    ("effective_rank_max", "eff. rank max (linear)", "{:.2f}"),
    ("effective_rank_share_median", "median eff. rank / min(out, in)", "{:.3f}"),
]


def figure_table(payload: dict[str, Any], columns: list[tuple[str, str, str]], names: list[str],
                 drop_empty: bool = True) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of formatted cells (mean ± std over seeds); columns no method has are left out."""
    if drop_empty:
        columns = [c for c in columns if any(value(payload, n, c[0]) is not None for n in names)]
    headers = ["method", *(header for _, header, _ in columns)]
    spread = payload.get("aggregate", {}) if multi_seed(payload) else {}
    rows = []
    for name in names:
        figures = payload["methods"].get(name, {})
        cells = []
        for column, _, fmt in columns:
            raw = figures.get(column)
            cell = format_cell(column, raw, fmt) if isinstance(raw, (int, float)) else "–"
            cell = with_std(cell, column, fmt, spread.get(name, {}))
            if cell != "–":  # a figure measured with its own interval (latency vs base)
                cell += interval_text(interval(payload, name, column), fmt)
            cells.append(cell)
        rows.append([name, *cells])
    return headers, rows


def robustness_table(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    sets = robustness_sets(payload)
    # the test loss where nothing was sampled (exact expectations, with or without a noise model)
    metrics = [(k, label) for k, label in (*quality_metrics(payload), ("test_loss", "test loss"))
               if any(isinstance(r.get(k), (int, float)) for rows in sets.values() for r in rows)]
    main_key, main_label = main_metric(payload)
    # the paired bootstrap of each re-evaluation against the exact run, where it was run (not on older payloads)
    paired = any(isinstance(r.get("p_vs_exact"), dict) for rows in sets.values() for r in rows)
    headers = ["method", "shots", "noise", *(label for _, label in metrics),
               *([f"p vs exact ({main_label})"] if paired else []), "predictions unchanged"]
    rows = []
    for name, entries in sets.items():
        spread = payload.get("aggregate", {}).get(name, {}).get("robustness") if multi_seed(payload) else None
        for i, row in enumerate(entries):
            shots = "exact" if not row.get("shots") else f"{row['shots']:,}"
            cells = [name, shots, noise_label(row)]
            for key, _ in metrics:
                number, digits = row.get(key), 3 if key == "test_loss" else 2
                cell = f"{number:.{digits}f}" if isinstance(number, (int, float)) else "–"
                stats = spread[i].get(key) if isinstance(spread, list) and i < len(spread) and spread[i] else None
                if isinstance(stats, dict) and isinstance(stats.get("std"), (int, float)) and stats["std"] > 0:
                    cell += f" ± {stats['std']:.{digits}f}"
                cells.append(cell)
            if paired:
                cells.append("–" if i == 0 else p_value_text((row.get("p_vs_exact") or {}).get(main_key)))
            unchanged = row.get("predictions_unchanged_pct")
            cells.append(f"{unchanged:.0f}%" if isinstance(unchanged, (int, float)) else "–")
            rows.append(cells)
    return headers, rows


def noise_label(row: dict[str, Any]) -> str:
    """A robustness row's noise model in words: a device profile, per-gate error rates, depolarising, or none."""
    errors = row.get("gate_errors")
    if row.get("device"):
        return f"device {row['device']}"
    if isinstance(errors, list) and len(errors) == 3:
        return "gate errors 1q {:g}, 2q {:g}, readout {:g}".format(*errors)
    if row.get("depolarizing") == 1:
        return "fully depolarised (circuit output constant)"
    if row.get("depolarizing"):
        return f"depolarising p = {row['depolarizing']:g}"
    return "none"


def capacity_errors(payload: dict[str, Any]) -> list[str]:
    return [f"{name}: capacity analysis failed ({figures['capacity_error']})"
            for name, figures in payload["methods"].items() if figures.get("capacity_error")]


CONVERGENCE_NOTE = (
    "Smoothed loss: centred moving average over about 5% of the logged steps. A method converges when its "
    "smoothed training loss first comes within the margin of its own best; read that with the loss it "
    "reaches. Gradient norms are before clipping."
)
EFFICIENCY_NOTE = (
    "Eval gen ms/token is measured during evaluation (variable output lengths); latency ms/token comes from "
    "one process that times greedy generation of a fixed number of tokens for the base model and every "
    "method in turns, and latency vs base is the median of the ratios of those pairs (pooled over seeds), "
    "with its distribution-free (sign-test) interval in brackets."
)
CAPACITY_NOTE = (
    "Jacobian rank: numerical rank of the Jacobian of a module's update with respect to the layer input, "
    "the median over sample activations, then min / median / max over modules; for a linear update (full, "
    "LoRA, SoRA with its gates) it is the rank of ΔW, the same at every input. The bound is QAA's cap (n "
    "qubits for the z readout). Effective rank (Roy and Vetterli, 2007), for linear updates only: exp of the "
    "Shannon entropy of the normalised singular values of ΔW (0 for no update). Full fine-tuning is "
    "measured on the modules LoRA adapts by default; Prefix tuning has no per-token update."
)

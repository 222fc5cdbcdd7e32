"""The analysis sections of the reports and the self-contained HTML report.

``findings`` writes the trade-offs as sentences computed from the measured figures (no
sentence is written unless the numbers it names exist). ``markdown_sections`` adds them,
with the convergence, efficiency and capacity tables, to ``report.md``; ``html_report``
renders one HTML file with the same tables and the plots of ``qpeft.plots`` embedded as
base64 PNG, so it opens offline and can be mailed as it is. The page needs no script.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from typing import Any

from qpeft.report import (
    baselines_sentence,
    format_cell,
    interval_text,
    markdown_table,
    p_value_text,
    sample_sentence,
    seeds_phrase,
    significance_rows,
    summary_rows,
)
from qpeft.runs import BASELINES

# ---------------------------------------------------------------------------------------
# Numbers


def value(payload: dict[str, Any], method: str, key: str) -> float | None:
    """A finite number from the (mean) figures of ``method``, else None."""
    raw = payload["methods"].get(method, {}).get(key)
    return float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw) else None


def std(payload: dict[str, Any], method: str, key: str) -> float | None:
    """The sample standard deviation over seeds (None with one seed)."""
    stats = payload.get("aggregate", {}).get(method, {}).get(key)
    result = stats.get("std") if isinstance(stats, dict) else None
    return float(result) if isinstance(result, (int, float)) and math.isfinite(result) else None


def multi_seed(payload: dict[str, Any]) -> bool:
    return len(payload.get("seeds", [])) > 1


def trained(payload: dict[str, Any]) -> list[str]:
    """The methods that trained and finished (not the baselines, not failed ones)."""
    return [name for name, figures in payload["methods"].items()
            if name not in BASELINES and figures.get("status") != "failed"]


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


def _ranked(payload: dict[str, Any], key: str, names: list[str] | None = None) -> list[tuple[str, float]]:
    """(method, value) for the methods with a number for ``key``, ascending."""
    names = trained(payload) if names is None else names
    pairs = [(name, value(payload, name, key)) for name in names]
    return sorted([(n, v) for n, v in pairs if v is not None], key=lambda pair: pair[1])


def _g(number: float, digits: int = 3) -> str:
    """A compact human number: thousands separators for large values, ``digits`` significant otherwise."""
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:.{digits}g}"


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


# ---------------------------------------------------------------------------------------
# Findings: the trade-offs, in words, from the measured numbers


def findings(payload: dict[str, Any]) -> list[str]:
    """One Markdown sentence (or two) per trade-off that the payload has numbers for."""
    sentences = [
        *_quality_findings(payload),
        _efficiency_finding(payload),
        _cost_against_full(payload),
        _convergence_finding(payload),
        _gradient_finding(payload),
        _memory_finding(payload),
        _throughput_finding(payload),
        _latency_finding(payload),
        _capacity_finding(payload),
        *_robustness_findings(payload),
    ]
    sentences = [s for s in sentences if s]
    if sentences and multi_seed(payload):
        sentences.append(f"All figures are means over {len(payload['seeds'])} seeds "
                         f"({', '.join(str(s) for s in payload['seeds'])}); ± is the sample standard deviation.")
    return sentences


QUALITY_FINDING_METRICS = (("bleu", "BLEU"), ("rougeL", "ROUGE-L"), ("bertscore_f1", "BERTScore F1"))


def _quality_findings(payload: dict[str, Any]) -> list[str]:
    """Failed methods, the highest score, and, per metric, which rows the paired test separates from the
    reference. Nothing is called better or worse unless the paired bootstrap gives p < alpha."""
    sentences = [f"**{name}** failed and has no scores: {figures.get('error', '')}"
                 for name, figures in payload["methods"].items() if figures.get("status") == "failed"]
    rows = [name for name in payload["methods"] if payload["methods"][name].get("status") != "failed"]
    ranked = _ranked(payload, "bleu", rows)[::-1]
    if not ranked:
        return sentences
    best, best_bleu = ranked[0]
    ci = payload["methods"][best].get("ci", {})
    text = f"Highest BLEU: **{best}**, {best_bleu:.2f}{interval_text(ci.get('bleu'))}"
    overlapping = [name for name, _ in ranked[1:] if _overlaps(payload, best, name, "bleu")]
    if overlapping:
        text += f"; its interval overlaps {_join(overlapping)}'s, so this ranking alone does not separate them"
    sentences.append(text + ".")
    reference = payload.get("analysis", {}).get("reference")
    if reference:
        sentences += [s for key, label in QUALITY_FINDING_METRICS if (s := _against_reference(payload, reference,
                                                                                            key, label))]
    return sentences


def _overlaps(payload: dict[str, Any], first: str, second: str, key: str) -> bool:
    a = payload["methods"][first].get("ci", {}).get(key)
    b = payload["methods"][second].get("ci", {}).get(key)
    return bool(a and b and None not in a and None not in b and a[0] <= b[1] and b[0] <= a[1])


def _against_reference(payload: dict[str, Any], reference: str, key: str, label: str) -> str:
    """One sentence: which rows are better, worse or not distinguishable from ``reference`` on ``key``."""
    alpha = payload.get("analysis", {}).get("alpha", 0.05)
    items = value(payload, reference, "test_items")
    reference_value = value(payload, reference, key)
    if reference_value is None:
        return ""
    better, worse, tied = [], [], []
    for name, figures in payload["methods"].items():
        p = (figures.get("p_vs_reference") or {}).get(key)
        score = value(payload, name, key)
        if name == reference or not isinstance(p, (int, float)) or score is None:
            continue
        if p >= alpha:
            tied.append(name)
        else:
            (better if score > reference_value else worse).append(f"{name} (p {p_value_text(p)})")
    if not (better or worse or tied):
        return ""
    parts = [f"better: {_join(better)}" if better else "", f"worse: {_join(worse)}" if worse else "",
             f"not distinguishable on {items:.0f} items: {_join(tied)}" if tied and items else ""]
    return (f"{label} against **{reference}** ({reference_value:.2f}), by the paired bootstrap at p < {alpha:g}: "
            + "; ".join(part for part in parts if part) + ".")


def _efficiency_finding(payload: dict[str, Any]) -> str:
    shares = [(n, v) for n, v in _ranked(payload, "trainable_pct") if v > 0]
    if not shares:
        return ""
    cheapest, share = shares[0]
    count = value(payload, cheapest, "trainable_params")
    text = f"Most parameter-efficient: **{cheapest}** trains {share:.4g}% of the base model's parameters"
    if count is not None:
        text += f" ({count:,.0f})"
    full_count = value(payload, "full", "trainable_params")
    if cheapest != "full" and full_count and count:
        text += f", {full_count / count:,.0f}x fewer than full fine-tuning"
    cheap_bleu = value(payload, cheapest, "bleu")
    if cheap_bleu is not None:
        interval = interval_text(payload["methods"][cheapest].get("ci", {}).get("bleu"))
        text += f"; its BLEU is {cheap_bleu:.2f}{interval} (the paired tests say how it stands against the others)"
    return text + "."


def _cost_against_full(payload: dict[str, Any]) -> str:
    full_bleu = value(payload, "full", "bleu")
    if full_bleu is None:
        return ""
    parts = []
    for name in trained(payload):
        bleu, share = value(payload, name, "bleu"), value(payload, name, "trainable_pct")
        if name == "full" or bleu is None or share is None:
            continue
        interval = interval_text(payload["methods"][name].get("ci", {}).get("bleu"))
        parts.append(f"{name} {bleu:.2f}{interval} with {share:.4g}% of the parameters")
    if not parts:
        return ""
    full_interval = interval_text(payload["methods"]["full"].get("ci", {}).get("bleu"))
    return f"BLEU beside full fine-tuning's {full_bleu:.2f}{full_interval} (100% of the parameters): {_join(parts)}."


def _convergence_finding(payload: dict[str, Any]) -> str:
    ranked = _ranked(payload, "steps_to_margin_pct") or _ranked(payload, "steps_to_margin")
    if not ranked:
        return ""
    margin = payload.get("analysis", {}).get("convergence_margin", 0.05)
    budget = payload.get("experiment", {}).get("train", {}).get("steps")

    def reached(name: str) -> str:
        step, pct = value(payload, name, "steps_to_margin"), value(payload, name, "steps_to_margin_pct")
        return f"step {step:,.0f}" + (f" ({pct:.0f}% of the budget)" if pct is not None else "")

    # A run whose smoothed loss never fell by the margin is "within the margin" from its first step:
    # it is named apart instead of being ranked as the fastest.
    drops = {n: value(payload, n, "loss_drop_pct") for n, _ in ranked}
    flat = [n for n, _ in ranked if drops[n] is not None and drops[n] < 100 * margin]
    moving = [n for n, _ in ranked if n not in flat]
    fastest = moving[0] if moving else None
    if fastest is not None:
        text = (f"Fastest to converge: **{fastest}** came within {100 * margin:g}% of its own best smoothed "
                f"training loss at {reached(fastest)}")
        if budget:
            text = text.replace("of the budget", f"of the {budget:,}-step budget", 1)
        if len(moving) > 1:
            text += "; " + ", ".join(f"{name} at {reached(name)}" for name in moving[1:])
        text += "."
    else:
        text = ""
    if flat:
        text += (f" {_join([f'{n} ({drops[n]:.1f}%)' for n in flat])}: the smoothed training loss fell by less than "
                 f"{100 * margin:g}% over the whole run, so {'it has' if len(flat) == 1 else 'they have'} no "
                 "meaningful convergence step.")
    fractions = payload.get("analysis", {}).get("loss_fractions", [0.25])
    if fractions:
        key = f"loss_at_{round(100 * fractions[0])}pct"
        early = _ranked(payload, key)
        if len(early) > 1:
            text += (f" After {100 * fractions[0]:g}% of the budget the lowest smoothed loss was "
                     f"**{early[0][0]}**'s ({early[0][1]:.3f}).")
    final = _ranked(payload, "final_smoothed_loss")
    if final:
        lowest, lowest_loss = final[0]
        text += f" Lowest training loss at the end: **{lowest}** ({lowest_loss:.3f}, smoothed)"
        fastest_loss = value(payload, fastest, "final_smoothed_loss") if fastest else None
        if lowest != fastest and fastest_loss is not None and fastest_loss > lowest_loss:
            text += f"; {fastest} converged fastest but to a higher loss ({fastest_loss:.3f})"
        text += "."
    return text.strip()


def _gradient_finding(payload: dict[str, Any]) -> str:
    names = [n for n in trained(payload) if value(payload, n, "grad_norm_median") is not None]
    if not names:
        return ""
    bad = [(n, value(payload, n, "non_finite_steps")) for n in names]
    bad = [(n, v) for n, v in bad if v]
    if bad:
        text = "Non-finite loss or gradient norm: " + _join([f"{n} ({v:g} steps)" for n, v in bad]) + "."
    else:
        text = "No method had a step with a non-finite loss or gradient norm."
    ratios = []
    for name in names:
        median, p95 = value(payload, name, "grad_norm_median"), value(payload, name, "grad_norm_p95")
        if median and p95 is not None:
            ratios.append((p95 / median, name))
    ratios.sort()
    if len(ratios) > 1:
        (low, steady), (high, uneven) = ratios[0], ratios[-1]
        text += (f" Gradient flow was steadiest for **{steady}** (95th-percentile gradient norm {low:.2f}x its "
                 f"median) and least steady for **{uneven}** ({high:.2f}x; maximum "
                 f"{_g(value(payload, uneven, 'grad_norm_max') or math.nan)}).")
    elif ratios:
        name = ratios[0][1]
        text += (f" {name}'s gradient norm: median {_g(value(payload, name, 'grad_norm_median'))}, "
                 f"95th percentile {_g(value(payload, name, 'grad_norm_p95'))}.")
    return text


def _memory_finding(payload: dict[str, Any]) -> str:
    ranked = _ranked(payload, "peak_memory_mb")
    if not ranked:
        return ""
    (least, low), (most, high) = ranked[0], ranked[-1]
    if len(ranked) > 1 and high <= 1.02 * low:
        return f"Peak memory in training was about the same for every method ({low:,.0f} to {high:,.0f} MB)."
    text = f"Least memory in training: **{least}** peaked at {low:,.0f} MB"
    if most != least and high > 0:
        text += f", {low / high:.2f}x the {high:,.0f} MB of {most}, the most"
    return text + "."


def _throughput_finding(payload: dict[str, Any]) -> str:
    ranked = _ranked(payload, "train_tokens_per_s")
    if not ranked:
        return ""
    (slowest, slow), (fastest, fast) = ranked[0], ranked[-1]
    text = f"Fastest training: **{fastest}** at {fast:,.0f} tokens/s"
    if slowest != fastest and slow > 0:
        text += f"; slowest: {slowest} at {slow:,.0f} tokens/s ({fast / slow:.1f}x slower)"
    return text + "."


def _latency_finding(payload: dict[str, Any]) -> str:
    ranked = _ranked(payload, "latency_vs_base")
    if not ranked:
        return ""
    settings = payload.get("analysis", {})
    how = ""
    if settings.get("latency_new_tokens") and settings.get("sample_prompts"):
        how = (f" (same process, greedy, {settings['latency_new_tokens']} new tokens for up to "
               f"{settings['sample_prompts']} prompts)")
    text = f"Generation latency per token against the bare base model{how}: "
    text += ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ranked) + "."
    slowest, ratio = ranked[-1]
    if ratio > 1.05:
        text += f" **{slowest}** is the slowest to generate, {100 * (ratio - 1):.0f}% slower than the base model."
    else:
        text += " No method generates more than 5% slower than the base model."
    return text


def _capacity_finding(payload: dict[str, Any]) -> str:
    """Two comparisons, each of one measure: the update Jacobian rank across every per-token
    method, then the effective rank among the linear updates only (QAA has no ΔW, and an
    effective rank is not a Jacobian rank, so the two never share a sentence)."""
    sentences = [_jacobian_rank_sentence(payload), _effective_rank_sentence(payload)]
    text = " ".join(s for s in sentences if s)
    if not text:
        return ""
    without = [name for name in trained(payload) if value(payload, name, "update_jacobian_rank_median") is None
               and value(payload, name, "effective_rank_median") is None
               and not payload["methods"][name].get("capacity_error")]
    if without:
        text += f" {_join(without)} {'has' if len(without) == 1 else 'have'} no weight update to measure."
    return text


def _rank_bound(payload: dict[str, Any], name: str) -> str:
    """What caps a method's update Jacobian rank: its LoRA-style rank r, or a stated bound (QAA's qubits)."""
    rank = payload.get("method_configs", {}).get(name, {}).get("r")
    if isinstance(rank, int):
        return f" (rank r = {rank})"
    bound = value(payload, name, "update_jacobian_rank_bound")
    return f" (of at most {_g(bound)})" if bound is not None else ""


def _jacobian_rank_sentence(payload: dict[str, Any]) -> str:
    names = [n for n in trained(payload) if value(payload, n, "update_jacobian_rank_median") is not None]
    if not names:
        return ""
    parts = [f"{name} {_g(value(payload, name, 'update_jacobian_rank_median'))}{_rank_bound(payload, name)}"
             for name in names]
    text = ("Capacity, as the numerical rank of each update's Jacobian in the layer input (the rank of ΔW for a "
            "linear update), median over modules: " + _join(parts) + ".")
    ranked = _ranked(payload, "update_jacobian_rank_median", names)
    if len(ranked) > 1 and ranked[-1][1] > ranked[-2][1]:
        text += f" The highest-rank update is **{ranked[-1][0]}**'s."
    return text


def _effective_rank_sentence(payload: dict[str, Any]) -> str:
    names = [n for n in trained(payload) if value(payload, n, "effective_rank_median") is not None]
    if not names:
        return ""
    parts = []
    for name in names:
        part = f"{name} {value(payload, name, 'effective_rank_median'):.1f}"
        low, high = value(payload, name, "effective_rank_min"), value(payload, name, "effective_rank_max")
        if low is not None and high is not None and high > low:
            modules = value(payload, name, "capacity_modules") or 0
            part += f" (from {low:.1f} to {high:.1f} over {modules:.0f} modules)"
        parts.append(part)
    text = ("Among the linear updates only, the median effective rank (Roy and Vetterli) of each module's ΔW: "
            + _join(parts) + ".")
    ranked = _ranked(payload, "effective_rank_median", names)
    if len(ranked) > 1 and ranked[-1][1] > ranked[-2][1]:
        text += f" The most evenly spread linear update is **{ranked[-1][0]}**'s."
    return text


def _robustness_findings(payload: dict[str, Any]) -> list[str]:
    from qpeft.plots import robustness_sets

    sentences = []
    for name, rows in robustness_sets(payload).items():
        scored = [r for r in rows if isinstance(r.get("bleu"), (int, float))]
        if not scored:
            continue
        clean = [r for r in scored if not r.get("shots") and not r.get("depolarizing")]
        reference = clean[0] if clean else max(scored, key=lambda r: r["bleu"])
        worst = min(scored, key=lambda r: r["bleu"])
        text = (f"Under finite shots and depolarising noise, {name}'s BLEU went from {reference['bleu']:.2f} "
                f"({_setting(reference)}) to {worst['bleu']:.2f} at worst ({_setting(worst)}; one re-evaluation "
                "of the same items, without an interval)")
        trained_bleu = value(payload, name, "bleu")
        if trained_bleu is not None and not clean:
            text += f"; noiselessly it scored {trained_bleu:.2f}"
        sentences.append(text + ".")
    return sentences


def _setting(row: dict[str, Any]) -> str:
    shots = "exact expectations" if not row.get("shots") else f"{row['shots']:,} shots"  # null or 0: exact
    return f"{shots}, depolarising p = {row.get('depolarizing') or 0:g}"


# ---------------------------------------------------------------------------------------
# Tables (the same rows for Markdown and HTML)


def _fraction_columns(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    fractions = payload.get("analysis", {}).get("loss_fractions", [0.25, 0.5])
    return [(f"loss_at_{round(100 * f)}pct", f"loss @{100 * f:g}%", "{:.3f}") for f in fractions]


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
            cells.append(with_std(cell, column, fmt, spread.get(name, {})))
        rows.append([name, *cells])
    return headers, rows


def robustness_table(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    from qpeft.plots import QUALITY_METRICS, robustness_sets

    sets = robustness_sets(payload)
    metrics = [(k, label) for k, label in QUALITY_METRICS
               if any(isinstance(r.get(k), (int, float)) for rows in sets.values() for r in rows)]
    headers = ["method", "shots", "depolarising p", *(label for _, label in metrics)]
    rows = []
    for name, entries in sets.items():
        spread = payload.get("aggregate", {}).get(name, {}).get("robustness") if multi_seed(payload) else None
        for i, row in enumerate(entries):
            shots = "exact" if not row.get("shots") else f"{row['shots']:,}"
            cells = [name, shots, f"{row.get('depolarizing') or 0:g}"]
            for key, _ in metrics:
                number = row.get(key)
                cell = f"{number:.2f}" if isinstance(number, (int, float)) else "–"
                stats = spread[i].get(key) if isinstance(spread, list) and i < len(spread) and spread[i] else None
                if isinstance(stats, dict) and isinstance(stats.get("std"), (int, float)) and stats["std"] > 0:
                    cell += f" ± {stats['std']:.2f}"
                cells.append(cell)
            rows.append(cells)
    return headers, rows


def capacity_errors(payload: dict[str, Any]) -> list[str]:
    return [f"{name}: capacity analysis failed ({figures['capacity_error']})"
            for name, figures in payload["methods"].items() if figures.get("capacity_error")]


def markdown_sections(payload: dict[str, Any]) -> list[str]:
    names = trained(payload)
    lines = ["## Findings", "", *(f"- {s}" for s in findings(payload)), ""]
    headers, rows = figure_table(payload, convergence_columns(payload), names)
    if len(headers) > 1:
        lines += ["## Convergence", "", CONVERGENCE_NOTE, "", markdown_table(headers, rows), ""]
    headers, rows = figure_table(payload, EFFICIENCY_COLUMNS, names)
    if len(headers) > 1:
        lines += ["## Efficiency", "", EFFICIENCY_NOTE, "", markdown_table(headers, rows), ""]
    headers, rows = figure_table(payload, CAPACITY_COLUMNS, names)
    if len(headers) > 1:
        lines += ["## Capacity", "", CAPACITY_NOTE, "", markdown_table(headers, rows), ""]
    lines += [f"- {e}" for e in capacity_errors(payload)] + ([""] if capacity_errors(payload) else [])
    headers, rows = robustness_table(payload)
    if rows:
        lines += ["## Under shots and noise", "", markdown_table(headers, rows), ""]
    return lines


CONVERGENCE_NOTE = (
    "Smoothed loss: centred moving average over about 5% of the logged steps. A method converges when its "
    "smoothed training loss first comes within the margin of its own best; read that with the loss it "
    "reaches. Gradient norms are before clipping."
)
EFFICIENCY_NOTE = (
    "Eval gen ms/token is measured during evaluation (variable output lengths); latency ms/token comes from "
    "one process that times greedy generation of a fixed number of tokens for the base model and every "
    "method, and latency vs base is its ratio to the base model."
)
CAPACITY_NOTE = (
    "Jacobian rank: numerical rank of the Jacobian of a module's update with respect to the layer input, "
    "the median over sample activations, then min / median / max over modules; for a linear update (full, "
    "LoRA, SoRA with its gates) it is the rank of ΔW, the same at every input. The bound is QAA's cap (n "
    "qubits for the z readout). Effective rank (Roy and Vetterli, 2007), for linear updates only: exp of the "
    "Shannon entropy of the normalised singular values of ΔW (0 for no update). Full fine-tuning is "
    "measured on the modules LoRA adapts by default; Prefix tuning has no per-token update."
)


# ---------------------------------------------------------------------------------------
# HTML

CSS = """
:root { --ink: #1d2433; --muted: #5b6478; --line: #dde1ea; --accent: #1f5fbf; --band: #f5f7fb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: #fff; }
main { max-width: 1200px; margin: 0 auto; padding: 28px 28px 60px; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 38px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
p.meta, p.note, footer { color: var(--muted); }
p.note { font-size: 0.9em; max-width: 900px; }
nav { margin: 14px 0 6px; font-size: 0.92em; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
ul.findings { padding-left: 20px; }
ul.findings li { margin: 6px 0; }
.table-wrap { overflow-x: auto; margin: 10px 0; }
table { border-collapse: collapse; font-size: 0.82em; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 7px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; min-width: 4em; }
th { background: var(--band); font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
tr.base td { color: var(--muted); }
figure { margin: 14px 0 18px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 0.88em; margin-top: 4px; max-width: 900px; }
details pre { background: var(--band); padding: 12px; overflow-x: auto; font-size: 0.82em; }
.error { color: #a3261d; }
"""

CAPTIONS = {
    "plot-loss": "Training loss per optimizer step: faint lines are the raw loss (one per seed), solid lines the "
                 "smoothed loss (mean over seeds; the band is ±1 standard deviation); dashed lines with dots are "
                 "the validation loss (mean target-token loss on a fixed sample of the validation split).",
    "plot-grad-norm": "Gradient norm per step before clipping (log scale): raw (faint) and smoothed (solid).",
    "plot-quality": "Test quality against the share of trainable parameters (log scale); error bars are ±1 standard "
                    "deviation over seeds; the dashed line is the untrained base model.",
    "plot-efficiency": "Peak memory in training, training throughput, and generation latency per token as a "
                       "multiple of the bare base model's (measured in the same process).",
    "plot-capacity-spectra": "Singular values of each adapted module's update ΔW, divided by the largest (log "
                             "scale); faint: one module each, solid: the median over modules (first seed).",
    "plot-capacity-rank": "Effective rank (circles) or Jacobian rank (squares) of every adapted module, over all "
                          "seeds; boxes show quartiles.",
    "plot-noise": "Quality of the quantum adapter evaluated with finite measurement shots and depolarising noise; "
                  "'exact' is the noiseless expectation.",
}


def _inline(text: str) -> str:
    """Markdown-ish sentence to HTML: escape, then **bold** and `code`."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def html_table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{html.escape(row[0])}">' + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return (f'<div class="table-wrap"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _figure_html(plot_id: str, png: bytes | None) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img id="{plot_id}" class="plot" alt="{html.escape(CAPTIONS[plot_id])}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(CAPTIONS[plot_id])}</figcaption></figure>')


def _description(payload: dict[str, Any]) -> str:
    experiment = payload["experiment"]
    train, evaluation = experiment["train"], experiment["eval"]
    test_items = next(iter(payload["methods"].values()), {}).get("test_items")
    decoding = "greedy" if evaluation["num_beams"] == 1 else f"beam-{evaluation['num_beams']}"
    return (f"Model <code>{html.escape(str(experiment['model']))}</code>, data set "
            f"<code>{html.escape(str(experiment['dataset']))}</code>, {html.escape(seeds_phrase(payload))}; "
            f"{train['steps']:,} steps of batch {train['batch_size']} × {train['grad_accum']} "
            f"(max {train['max_length']} tokens); {test_items if test_items is not None else '?'} test items, "
            f"{decoding} decoding, at most {evaluation['max_new_tokens']} new tokens. Scores are on a 0–100 "
            f"scale against every reference of a test item. {_inline(baselines_sentence(payload))} "
            f"{_inline(sample_sentence(payload))}")


def html_report(payload: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML page (plots inline as base64 PNG, no script)."""
    from qpeft.plots import PLOTS

    images = {plot_id: draw(payload) for plot_id, draw in PLOTS.items()}
    names = trained(payload)
    sections: list[tuple[str, str, str]] = []  # (id, title, body)

    items = "".join(f"<li>{_inline(s)}</li>" for s in findings(payload))
    if items:
        sections.append(("findings", "Findings", f'<ul class="findings">{items}</ul>'))
    sections.append(("summary", "Summary", html_table(*summary_rows(payload), "table-summary")))
    headers, rows = significance_rows(payload)
    if rows:
        sections.append(("tests", "Paired tests", html_table(headers, rows, "table-tests")))

    body = _figure_html("plot-loss", images["plot-loss"]) + _figure_html("plot-grad-norm", images["plot-grad-norm"])
    headers, rows = figure_table(payload, convergence_columns(payload), names)
    if len(headers) > 1:
        body += f'<p class="note">{html.escape(CONVERGENCE_NOTE)}</p>' + html_table(headers, rows, "table-convergence")
    if body:
        sections.append(("convergence", "Convergence", body))

    body = _figure_html("plot-quality", images["plot-quality"])
    if body:
        sections.append(("quality", "Quality against trainable share", body))

    body = _figure_html("plot-efficiency", images["plot-efficiency"])
    headers, rows = figure_table(payload, EFFICIENCY_COLUMNS, names)
    if len(headers) > 1:
        body += f'<p class="note">{html.escape(EFFICIENCY_NOTE)}</p>' + html_table(headers, rows, "table-efficiency")
    if body:
        sections.append(("efficiency", "Efficiency", body))

    body = (_figure_html("plot-capacity-spectra", images["plot-capacity-spectra"])
            + _figure_html("plot-capacity-rank", images["plot-capacity-rank"]))
    headers, rows = figure_table(payload, CAPACITY_COLUMNS, names)
    if len(headers) > 1:
        body += f'<p class="note">{html.escape(CAPACITY_NOTE)}</p>' + html_table(headers, rows, "table-capacity")
    body += "".join(f'<p class="error">{html.escape(e)}</p>' for e in capacity_errors(payload))
    if body:
        sections.append(("capacity", "Capacity", body))

    headers, rows = robustness_table(payload)
    if rows:
        body = _figure_html("plot-noise", images["plot-noise"]) + html_table(headers, rows, "table-noise")
        sections.append(("noise", "Quantum adapter under shots and noise", body))

    setup = {key: payload.get(key) for key in ("experiment", "seeds", "method_configs", "analysis", "versions")}
    sections.append(("setup", "Set-up",
                     "<details><summary>Experiment, method configurations, analysis settings and versions</summary>"
                     f"<pre>{html.escape(json.dumps(setup, indent=2))}</pre></details>"))

    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in sections)
    content = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'
                      for sid, title, body in sections)
    versions = ", ".join(f"{k} {v}" for k, v in payload.get("versions", {}).items())
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>qpeft comparison</title><style>{CSS}</style></head>"
        f'<body><main><h1>qpeft comparison</h1><p class="meta">{_description(payload)}</p><nav>{nav}</nav>'
        f"{content}<footer><p>Versions: {html.escape(versions)}.</p></footer></main></body></html>\n"
    )

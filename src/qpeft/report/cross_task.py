"""The report of a multi-task comparison (``OUTPUT/report.md`` and ``report.html``) from its ``summary.json``:
every row's main figure per task with its interval and its ratio to full fine-tuning, the mean rank, a
methods × tasks heat-map, and what the paired tests allow to be said about generalisation."""

from __future__ import annotations

import html
import io
from typing import Any

from qpeft.experiment.results import BASELINES, FAILED
from qpeft.report.html import CSS, figure_html, html_table, inline_markdown
from qpeft.report.tables import METRIC_LABELS, interval_text, markdown_table

HEATMAP_CAPTION = ("Each row's main figure (BLEU or accuracy) per task, as a share of full fine-tuning's "
                   "(of the task's best row when a task has no full fine-tuning figure); the cells print the figure.")


def _score_cell(row: dict[str, Any]) -> str:
    if row.get("status") == FAILED:
        return FAILED
    if row.get("score") is None:
        return "–"
    text = f"{row['score']:.2f}{interval_text(row.get('ci'))}"
    return text + (f" ({row['vs_full']:.2f}× full)" if row.get("vs_full") is not None else "")


def cross_task_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per method: its main figure on each task (interval, ratio to full), then its mean rank."""
    tasks = summary["tasks"]
    headers = ["method", *(f"{name} ({METRIC_LABELS[task['metric']]})" for name, task in tasks.items()),
               "mean rank"]
    rows = []
    for name in summary["rows"]:
        cells = [_score_cell(task["rows"].get(name, {})) for task in tasks.values()]
        rank = summary["mean_rank"].get(name)
        rows.append([name, *cells, f"{rank:.2f}" if rank is not None else "–"])
    majority = [task.get("majority_accuracy") for task in tasks.values()]
    if any(value is not None for value in majority):
        rows.append(["majority label", *(f"{value:.2f}" if value is not None else "–" for value in majority), "–"])
    return headers, rows


def cross_task_findings(summary: dict[str, Any]) -> list[str]:
    """Sentences that say no more than the paired tests and the intervals do."""
    sentences = []
    ranked = sorted(summary["mean_rank"].items(), key=lambda pair: pair[1])
    if ranked:
        sentences.append(f"Mean rank over {len(summary['tasks'])} tasks (1: the highest main figure; a rank "
                         "alone ignores the intervals): " + ", ".join(f"{n} {r:.2f}" for n, r in ranked) + ".")
    references = {task["reference"] for task in summary["tasks"].values()}
    reference = next(iter(references)) if len(references) == 1 else "each task's reference row"
    general, specific = [], []
    for name, verdict in summary["verdicts"].items():
        parts = [f"{label} on {', '.join(verdict[key])}" for key, label in
                 (("better", "above"), ("worse", "below"), ("not_apart", "not apart"), ("failed", "failed"))
                 if verdict[key]]
        if parts:
            sentences.append(f"**{name}** against **{reference}**, by the paired bootstrap: {'; '.join(parts)}.")
        tested = verdict["better"] + verdict["worse"] + verdict["not_apart"]
        if name not in BASELINES and len(tested) == len(summary["tasks"]):
            (specific if verdict["worse"] or verdict["failed"] else general).append(name)
    for task, summary_of_task in summary["tasks"].items():
        at_chance = [name for name, verdict in summary["verdicts"].items() if task in verdict["not_above_majority"]]
        if at_chance:
            sentences.append(f"On {task}, the accuracy interval of {', '.join(at_chance)} does not clear "
                             f"{summary_of_task['majority_accuracy']:.2f}, the accuracy of always giving the most "
                             "common label of the scored items: not shown to be above chance.")
    if general:
        sentences.append(f"Not shown below {reference} on any task: {', '.join(general)} (as far as these test "
                         "sets can tell; not apart is not the same as equal).")
    if specific:
        sentences.append(f"Below {reference} on at least one task: {', '.join(specific)}.")
    return sentences


def heatmap_values(summary: dict[str, Any]) -> tuple[list[list[float]], bool]:
    """(methods × tasks shares, whether they are of full fine-tuning's figure): full fine-tuning's when every
    scored cell has that ratio, else each task's best row's, so that one colour scale means one thing."""
    tasks = list(summary["tasks"])
    cells = [[summary["tasks"][task]["rows"].get(name, {}) for task in tasks] for name in summary["rows"]]
    scored = [cell for row in cells for cell in row if cell.get("score") is not None]
    against_full = bool(scored) and all(cell.get("vs_full") is not None for cell in scored)
    best = {task: max((r["score"] for r in summary["tasks"][task]["rows"].values() if r.get("score") is not None),
                      default=None) for task in tasks}
    values = [[float("nan") if cell.get("score") is None else cell["vs_full"] if against_full
               else cell["score"] / best[task] if best[task] else float("nan")
               for cell, task in zip(row, tasks, strict=True)] for row in cells]
    return values, against_full


def heatmap_png(summary: dict[str, Any]) -> bytes | None:
    """The methods × tasks heat-map: each figure as a share of full fine-tuning's when every task has one, else
    as a share of the task's best row (one scale for the whole map, named on its colour bar)."""
    from matplotlib.figure import Figure

    tasks, names = list(summary["tasks"]), summary["rows"]
    if not tasks or not names:
        return None
    cells = [[summary["tasks"][task]["rows"].get(name, {}) for task in tasks] for name in names]
    values, against_full = heatmap_values(summary)
    figure = Figure(figsize=(1.4 * len(tasks) + 2.4, 0.45 * len(names) + 1.4))
    axis = figure.add_subplot()
    image = axis.imshow(values, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(tasks)), tasks)
    axis.set_yticks(range(len(names)), names)
    low, high = image.get_clim()
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            bright = values[i][j] == values[i][j] and values[i][j] > low + 0.6 * (high - low)  # nan is not bright
            axis.text(j, i, f"{cell['score']:.1f}" if cell.get("score") is not None else "–", ha="center",
                      va="center", color="black" if bright else "white", fontsize=8)
    label = "share of full fine-tuning's figure" if against_full else "share of the task's best row's figure"
    figure.colorbar(image, ax=axis, label=label)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def cross_task_markdown(summary: dict[str, Any]) -> str:
    lines = ["# qpeft multi-task comparison", "",
             "Each task is a complete comparison in its own folder (`<task>/report.md`); this page sets their "
             "main figures side by side: BLEU for generation, rank-classification accuracy for classification, "
             "with the 95% paired-bootstrap interval and the ratio to full fine-tuning.", "",
             markdown_table(*cross_task_rows(summary)), "", "## Findings", ""]
    lines += [f"- {sentence}" for sentence in cross_task_findings(summary)]
    lines += ["", "Task reports: " + ", ".join(f"[{name}]({name}/report.md)" for name in summary["tasks"]), ""]
    return "\n".join(lines)


def cross_task_html(summary: dict[str, Any]) -> str:
    figure = figure_html("heatmap", heatmap_png(summary), HEATMAP_CAPTION)
    findings = "".join(f"<li>{inline_markdown(sentence)}</li>" for sentence in cross_task_findings(summary))
    links = ", ".join(f'<a href="{html.escape(name)}/report.html">{html.escape(name)}</a>' for name in summary["tasks"])
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>qpeft multi-task comparison"
            f"</title><style>{CSS}</style></head><body><h1>qpeft multi-task comparison</h1>"
            f"{html_table(*cross_task_rows(summary), 'cross-task')}{figure}<h2>Findings</h2><ul>{findings}</ul>"
            f"<p>Task reports: {links}</p></body></html>")

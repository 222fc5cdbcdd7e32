"""Across tasks: each row's main figure per task, relative to full fine-tuning's, its rank, and what the
paired tests say about generalisation.

Input: one ``results.json`` payload per task (``experiment.results.build_payload``). Nothing here trains or
scores; the figures, intervals and p-values are each task's own.
"""

from __future__ import annotations

from typing import Any

from qpeft.analysis.seeds import is_number
from qpeft.analysis.significance import TASK_METRICS, significant

FULL = "full"  # the row every figure is relative to (full fine-tuning), when the comparison has it
FAILED = "failed"  # experiment.results.FAILED (the analysis sits below the experiment and cannot import it)


def number(raw: Any) -> float | None:
    return float(raw) if is_number(raw) else None


def task_rows(payload: dict[str, Any]) -> dict[str, Any]:
    """One task's summary: its main metric, and per row the figure, its interval, its p-value against the
    reference row and its ratio to full fine-tuning's figure."""
    task = payload.get("task") or "generation"
    key = TASK_METRICS[task][0]
    methods = payload["methods"]
    full = number(methods.get(FULL, {}).get(key)) if methods.get(FULL, {}).get("status") != FAILED else None
    rows: dict[str, dict[str, Any]] = {}
    for name, figures in methods.items():
        if figures.get("status") == FAILED:
            rows[name] = {"status": FAILED, "error": figures.get("error")}
            continue
        score = number(figures.get(key))
        rows[name] = {
            "score": score,
            "ci": (figures.get("ci") or {}).get(key),
            "p_vs_reference": (figures.get("p_vs_reference") or {}).get(key),
            "vs_full": score / full if score is not None and full else None,
        }
    base = methods.get("base", {})
    return {
        "task": task,
        "metric": key,
        "dataset": payload["experiment"]["dataset"],
        "reference": payload.get("analysis", {}).get("reference"),
        "alpha": payload.get("analysis", {}).get("alpha", 0.05),
        "test_items": number(base.get("test_items")),
        "majority_accuracy": number(base.get("majority_accuracy")),
        "rows": rows,
    }


def ranks(scores: dict[str, float]) -> dict[str, float]:
    """Rank 1 for the highest score; tied scores share the mean of their ranks."""
    ordered = sorted(scores, key=lambda name: -scores[name])
    result: dict[str, float] = {}
    at = 0
    while at < len(ordered):
        end = at
        while end + 1 < len(ordered) and scores[ordered[end + 1]] == scores[ordered[at]]:
            end += 1
        for name in ordered[at : end + 1]:
            result[name] = (at + end) / 2 + 1
        at = end + 1
    return result


def cross_task_summary(payloads: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``summary.json`` of a multi-task comparison: per task ``task_rows``, per row its rank on each task and
    its mean rank over the tasks where every compared row has a score, and the findings' verdicts."""
    tasks = {name: task_rows(payload) for name, payload in payloads.items()}
    names = list(dict.fromkeys(row for summary in tasks.values() for row in summary["rows"]))
    everywhere = [n for n in names if all(number(s["rows"].get(n, {}).get("score")) is not None
                                          for s in tasks.values())]
    for summary in tasks.values():
        for name, rank in ranks({n: summary["rows"][n]["score"] for n in everywhere}).items():
            summary["rows"][name]["rank"] = rank
    mean_rank = {n: sum(s["rows"][n]["rank"] for s in tasks.values()) / len(tasks) for n in everywhere}
    return {"tasks": tasks, "rows": names, "mean_rank": mean_rank, "verdicts": verdicts(tasks)}


def verdicts(tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """Per row, the tasks on which the paired test puts it above, below, or not apart from the reference row,
    and the classification tasks on which its interval does not clear the majority-class rate."""
    result: dict[str, dict[str, list[str]]] = {}
    for task, summary in tasks.items():
        for name, row in summary["rows"].items():
            entry = result.setdefault(name, {"better": [], "worse": [], "not_apart": [], "not_above_majority": [],
                                             "failed": []})
            if row.get("status") == FAILED:
                entry["failed"].append(task)
                continue
            reference = summary["rows"].get(summary["reference"] or "", {})
            p, score, against = row.get("p_vs_reference"), row.get("score"), reference.get("score")
            compared = isinstance(p, (int, float)) and None not in (score, against)
            if name != summary["reference"] and compared:
                if not significant(p, summary["alpha"]):
                    entry["not_apart"].append(task)
                else:
                    entry["better" if score > against else "worse"].append(task)
            majority, interval = summary["majority_accuracy"], row.get("ci")
            if summary["task"] == "classification" and majority is not None and interval and interval[0] <= majority:
                entry["not_above_majority"].append(task)
    return result

"""The Markdown report of a comparison (``report.md``)."""

from __future__ import annotations

from typing import Any

from qpeft.report.findings import findings
from qpeft.report.hardware import HARDWARE_LIMITS
from qpeft.report.payload import seeds_phrase, trained
from qpeft.report.tables import (
    CAPACITY_COLUMNS,
    CAPACITY_NOTE,
    CONVERGENCE_NOTE,
    E2E_NOTE,
    EFFICIENCY_COLUMNS,
    EFFICIENCY_NOTE,
    capacity_errors,
    convergence_columns,
    e2e_table,
    figure_table,
    markdown_table,
    robustness_table,
    significance_rows,
    summary_table,
)
from qpeft.report.tuning import learning_rate_sentence, tuning_rows, window_sentences


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
        f"{baselines_sentence(payload)} Trainable % is of the base model's parameters. {sample_sentence(payload)} "
        f"{learning_rate_sentence(payload)}",
        "",
        summary_table(payload),
        "",
    ]
    headers, rows = e2e_table(payload)
    if rows:
        lines += ["## E2E challenge metrics", "", E2E_NOTE, "", markdown_table(headers, rows), ""]
    headers, rows = tuning_rows(payload)
    if rows:
        lines += ["## Learning rates", "", *(f"- {s}" for s in window_sentences(payload)), "",
                  markdown_table(headers, rows), ""]
    headers, rows = significance_rows(payload)
    if rows:
        lines += ["## Paired tests", "", markdown_table(headers, rows), ""]
    lines += [
        *analysis_markdown(payload),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)




def analysis_markdown(payload: dict[str, Any]) -> list[str]:
    """The findings, convergence, efficiency and capacity sections (empty for payloads without analysis)."""
    if "per_seed" not in payload:
        return []
    return markdown_sections(payload)


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
        lines += ["## Under shots, noise and hardware", "", markdown_table(headers, rows), "", HARDWARE_LIMITS, ""]
    return lines

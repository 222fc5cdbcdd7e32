"""The cross-task summary: ratios to full fine-tuning, ranks with ties, and verdicts only where the tests allow."""

from __future__ import annotations

from typing import Any

import pytest

from qpeft.analysis.tasks import cross_task_summary, ranks
from qpeft.report.cross_task import cross_task_findings, cross_task_rows, heatmap_values


def task_payload(task: str, scores: dict[str, float], p_values: dict[str, float], majority: float | None = None,
                 reference: str = "lora") -> dict[str, Any]:
    key = "bleu" if task == "generation" else "accuracy"
    methods = {name: {"status": "ok", key: score, "ci": {key: [score - 5, score + 5]},
                      "p_vs_reference": {key: p_values.get(name)}} for name, score in scores.items()}
    methods["base"]["test_items"] = 40
    if majority is not None:
        methods["base"]["majority_accuracy"] = majority
    return {"task": task, "experiment": {"dataset": task}, "analysis": {"reference": reference, "alpha": 0.05},
            "methods": methods}


def test_ranks_give_tied_scores_the_mean_of_their_places() -> None:
    assert ranks({"a": 3.0, "b": 3.0, "c": 1.0, "d": 5.0}) == {"d": 1.0, "a": 2.5, "b": 2.5, "c": 4.0}


def test_the_summary_relates_every_row_to_full_and_says_only_what_the_tests_allow() -> None:
    generation = task_payload("generation", {"base": 10.0, "full": 50.0, "lora": 40.0, "qaa": 38.0},
                              {"base": 0.001, "full": 0.01, "qaa": 0.4})
    classification = task_payload("classification", {"base": 50.0, "full": 80.0, "lora": 80.0, "qaa": 52.0},
                                  {"base": 0.001, "full": 1.0, "qaa": 0.002}, majority=51.0)
    summary = cross_task_summary({"gen": generation, "cls": classification})
    gen, cls = summary["tasks"]["gen"], summary["tasks"]["cls"]
    assert (gen["metric"], cls["metric"]) == ("bleu", "accuracy")
    assert gen["rows"]["lora"]["vs_full"] == pytest.approx(0.8) and cls["rows"]["qaa"]["vs_full"] == pytest.approx(0.65)
    # gen: full 1, lora 2, qaa 3, base 4; cls: full and lora tied at 1.5, qaa 3, base 4
    assert summary["mean_rank"] == {"base": 4.0, "full": 1.25, "lora": 1.75, "qaa": 3.0}
    verdicts = summary["verdicts"]
    assert verdicts["qaa"]["not_apart"] == ["gen"] and verdicts["qaa"]["worse"] == ["cls"]
    assert verdicts["full"]["better"] == ["gen"] and verdicts["full"]["not_apart"] == ["cls"]
    # intervals [47, 57] (qaa) and [45, 55] (base) reach down to the majority rate 51; lora's [75, 85] does not
    assert verdicts["qaa"]["not_above_majority"] == ["cls"] and verdicts["lora"]["not_above_majority"] == []
    text = "\n".join(cross_task_findings(summary))
    assert "**qaa** against **lora**, by the paired bootstrap: below on cls; not apart on gen." in text
    assert "Below lora on at least one task: qaa." in text and "Not shown below lora on any task: full" in text
    assert "On cls, the accuracy interval of base, qaa does not clear 51.00" in text
    headers, rows = cross_task_rows(summary)
    assert headers == ["method", "gen (BLEU)", "cls (accuracy)", "mean rank"]
    assert rows[-1] == ["majority label", "–", "51.00", "–"]
    assert ["lora", "40.00 [35.00, 45.00] (0.80× full)", "80.00 [75.00, 85.00] (1.00× full)", "1.75"] in rows


def test_the_heat_map_is_on_one_scale_full_fine_tunings_only_where_every_task_has_it() -> None:
    with_full = task_payload("generation", {"base": 10.0, "full": 50.0, "lora": 40.0}, {})
    without = task_payload("generation", {"base": 10.0, "lora": 40.0}, {})
    values, against_full = heatmap_values(cross_task_summary({"a": with_full, "b": with_full}))
    assert against_full and values[2] == [pytest.approx(0.8), pytest.approx(0.8)]  # rows: base, full, lora
    values, against_full = heatmap_values(cross_task_summary({"a": with_full, "b": without}))
    assert not against_full and values[2] == [pytest.approx(0.8), pytest.approx(1.0)]  # of each task's best row

from __future__ import annotations

import random

import numpy as np
import pytest
import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest, _compute_p_value

from qpeft.analysis.significance import (
    SystemScores,
    _resamples,
    bleu_from_statistics,
    bleu_statistics,
    bootstrap_comparison,
    paired_p_value,
    significant,
)
from qpeft.evaluation.metrics import (
    bertscore_f1,
    bertscore_per_item,
    corpus_scores,
    per_item_scores,
    rouge,
    rouge_per_item,
    score_all,
)
from qpeft.settings import DEFAULT_BERTSCORE_MODEL
from qpeft.utils.errors import UsageError

WORDS = "the a restaurant serves cheap Italian food near river centre family friendly coffee shop rated high".split()
SACREBLEU_DEFAULT_SEED = 12345  # sacrebleu's SACREBLEU_SEED when unset


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + "."


def _corpus(items: int = 60, seed: int = 0) -> list[list[str]]:
    """References with unequal counts per item (1 to 4), as in E2E."""
    rng = random.Random(seed)
    return [[_sentence(rng) for _ in range(rng.randint(1, 4))] for _ in range(items)]


def _predictions(references: list[list[str]], hit_rate: float, seed: int) -> list[str]:
    """Each item copies its first reference with probability ``hit_rate``, else is a random sentence."""
    rng = random.Random(seed)
    return [refs[0] if rng.random() < hit_rate else _sentence(rng) for refs in references]


def _system(predictions: list[str], references: list[list[str]]) -> SystemScores:
    return SystemScores(predictions, rouge_per_item(predictions, references))


REFERENCES = _corpus()


def test_per_item_rouge_means_are_the_corpus_figures() -> None:
    predictions = _predictions(REFERENCES, 0.4, seed=1)
    per_item = per_item_scores(predictions, REFERENCES, bertscore_model=None)
    assert set(per_item) == {"rouge1", "rouge2", "rougeL"} and all(len(v) == len(REFERENCES) for v in per_item.values())
    means = rouge(predictions, REFERENCES)
    for key, values in per_item.items():
        assert np.mean(values) == pytest.approx(means[key], abs=1e-9)
    assert corpus_scores(predictions, REFERENCES, per_item) == score_all(predictions, REFERENCES, None)


def test_bertscore_per_item_mean_is_bertscore_f1() -> None:
    predictions = ["The restaurant serves cheap Italian food.", "A coffee shop by the river.", "Qubits rotate."]
    references = [["The restaurant serves cheap Italian food."], ["A coffee shop near the river.", "x"], ["Food."]]
    per_item = per_item_scores(predictions, references, DEFAULT_BERTSCORE_MODEL)["bertscore_f1"]
    assert len(per_item) == 3 and per_item[0] == pytest.approx(100.0, abs=0.01) and per_item[1] > per_item[2]
    assert np.mean(per_item) == pytest.approx(bertscore_f1(predictions, references), abs=1e-4)


def test_an_empty_prediction_scores_zero_bertscore_and_the_others_are_unchanged() -> None:
    references = [["The Eagle is a pub."], ["Aromi serves Italian food."]]
    alone = bertscore_per_item(["Aromi serves Italian food."], references[1:])
    scores = bertscore_per_item(["", "Aromi serves Italian food."], references)
    assert scores[0] == 0.0 and scores[1] == pytest.approx(alone[0], abs=1e-4) and scores[1] > 50


def test_bleu_point_estimate_is_sacrebleu_corpus_bleu_with_unequal_reference_counts() -> None:
    predictions = _predictions(REFERENCES, 0.3, seed=2)
    depth = max(len(refs) for refs in REFERENCES)
    streams = [[refs[i] if i < len(refs) else None for refs in REFERENCES] for i in range(depth)]
    expected = sacrebleu.corpus_bleu(predictions, streams).score
    result = bootstrap_comparison({"lora": [_system(predictions, REFERENCES)]}, REFERENCES, metrics=("bleu",))
    assert result["lora"]["point"]["bleu"] == expected
    assert bleu_from_statistics(bleu_statistics(predictions, REFERENCES).sum(0)) == pytest.approx(expected, rel=1e-12)


def test_vectorised_bleu_matches_sacrebleu_on_edge_cases() -> None:
    rng = np.random.default_rng(0)
    totals = np.sort(rng.integers(0, 30, size=(300, 4)), axis=1)[:, ::-1]  # fewer higher-order n-grams
    correct = np.minimum(rng.integers(0, 30, size=(300, 4)) * rng.integers(0, 2, size=(300, 4)), totals)
    lengths = np.stack([totals[:, 0], rng.integers(0, 40, size=300)], axis=1)
    stats = np.concatenate([lengths, correct, totals], axis=1)
    stats[:5] = [
        [0, 7, 0, 0, 0, 0, 0, 0, 0, 0],
        [3, 3, 3, 2, 1, 0, 3, 2, 1, 0],
        [5, 9, 2, 0, 0, 0, 5, 4, 3, 2],
        [8, 6, 8, 0, 6, 0, 8, 7, 6, 5],
        [4, 4, 0, 0, 0, 0, 4, 3, 2, 1],
    ]
    expected = [BLEU()._compute_score_from_stats(row.tolist()).score for row in stats]
    np.testing.assert_allclose(bleu_from_statistics(stats), expected, rtol=1e-12, atol=1e-12)


def test_bleu_resamples_and_interval_are_sacrebleus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SACREBLEU_SEED", raising=False)
    predictions = {"lora": _predictions(REFERENCES, 0.4, seed=3), "qaa": _predictions(REFERENCES, 0.5, seed=4)}
    systems = {method: [_system(preds, REFERENCES)] for method, preds in predictions.items()}
    result = bootstrap_comparison(systems, REFERENCES, resamples=200, seed=SACREBLEU_DEFAULT_SEED, metrics=("bleu",))
    resampled = _resamples(systems, REFERENCES, ("bleu",), 200, SACREBLEU_DEFAULT_SEED)
    depth = max(len(refs) for refs in REFERENCES)
    streams = [[refs[i] if i < len(refs) else None for refs in REFERENCES] for i in range(depth)]
    _, theirs = PairedTest(list(predictions.items()), {"BLEU": BLEU()}, streams, test_type="bs", n_samples=200)()
    for method, score in zip(predictions, theirs["BLEU"], strict=True):
        low, high = result[method]["ci"]["bleu"]
        values = resampled[method]["bleu"][1]
        assert result[method]["point"]["bleu"] == score.score
        # sacrebleu sums the statistics in float32, hence the tolerance
        assert values.mean() == pytest.approx(score.mean, abs=1e-5)
        assert (high - low) / 2 == pytest.approx(score.ci, abs=1e-5)
    # sacrebleu's own statistic on our resamples gives its p-value: the resamples are the same
    differences = np.abs(resampled["qaa"]["bleu"][1] - resampled["lora"]["bleu"][1])
    observed = abs(resampled["qaa"]["bleu"][0] - resampled["lora"]["bleu"][0])
    assert _compute_p_value(differences - differences.mean(), observed) == theirs["BLEU"][1].p_value


def test_identical_systems_are_not_significantly_different() -> None:
    system = _system(_predictions(REFERENCES, 0.4, seed=5), REFERENCES)
    system.item_scores["bertscore_f1"] = list(np.linspace(80, 95, len(REFERENCES)))
    result = bootstrap_comparison({"lora": [system], "same": [system]}, REFERENCES)
    assert set(result["same"]["p_vs_reference"]) == {"bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1"}
    assert all(p >= 0.9 for p in result["same"]["p_vs_reference"].values())
    assert result["same"]["ci"] == result["lora"]["ci"]
    assert all(p is None for p in result["lora"]["p_vs_reference"].values())


def test_a_system_better_on_every_item_is_significantly_better() -> None:
    good = _system([refs[0] for refs in REFERENCES], REFERENCES)
    bad = _system(["zzz qqq xxx"] * len(REFERENCES), REFERENCES)
    result = bootstrap_comparison({"lora": [bad], "good": [good]}, REFERENCES)
    for metric in ("bleu", "rouge1", "rouge2", "rougeL"):
        p = result["good"]["p_vs_reference"][metric]
        assert p < 0.01 and significant(p)
        assert result["good"]["ci"][metric][0] > result["lora"]["ci"][metric][1]


def test_interval_contains_point_and_seed_fixes_the_resamples() -> None:
    systems = {
        "lora": [_system(_predictions(REFERENCES, 0.4, seed=6), REFERENCES)],
        "sora": [_system(_predictions(REFERENCES, 0.45, seed=7), REFERENCES)],
    }
    first = bootstrap_comparison(systems, REFERENCES, seed=1)
    for entry in first.values():
        for metric, (low, high) in entry["ci"].items():
            assert low <= entry["point"][metric] <= high
    assert bootstrap_comparison(systems, REFERENCES, seed=1) == first
    other = bootstrap_comparison(systems, REFERENCES, seed=2)
    assert other["sora"]["ci"] != first["sora"]["ci"] and other["sora"]["point"] == first["sora"]["point"]


def test_several_seeds_are_resampled_with_the_items() -> None:
    good = _system([refs[0] for refs in REFERENCES], REFERENCES)
    bad = _system(["zzz qqq xxx"] * len(REFERENCES), REFERENCES)
    result = bootstrap_comparison({"lora": [good, bad]}, REFERENCES, metrics=("rouge1",))["lora"]
    assert result["point"]["rouge1"] == pytest.approx(50.0)
    # a quarter of the resamples draw the bad seed twice and a quarter the good seed twice
    assert result["ci"]["rouge1"] == pytest.approx([0.0, 100.0])


def test_copies_of_one_seed_equal_the_single_seed_result() -> None:
    lora, qaa = (_system(_predictions(REFERENCES, rate, seed), REFERENCES) for rate, seed in ((0.4, 8), (0.5, 9)))
    single = bootstrap_comparison({"lora": [lora], "qaa": [qaa]}, REFERENCES)
    copies = bootstrap_comparison({"lora": [lora] * 3, "qaa": [qaa] * 3}, REFERENCES)
    for method in single:
        for key in ("point", "ci"):
            for metric, value in single[method][key].items():
                assert copies[method][key][metric] == pytest.approx(value, rel=1e-12)
    assert copies["qaa"]["p_vs_reference"] == pytest.approx(single["qaa"]["p_vs_reference"])


def test_multi_seed_point_is_the_mean_over_seeds() -> None:
    runs = [_system(_predictions(REFERENCES, rate, seed), REFERENCES) for rate, seed in ((0.3, 10), (0.5, 11))]
    result = bootstrap_comparison({"lora": runs}, REFERENCES)["lora"]
    per_seed = [bootstrap_comparison({"lora": [run]}, REFERENCES)["lora"]["point"] for run in runs]
    for metric, value in result["point"].items():
        assert value == pytest.approx(np.mean([point[metric] for point in per_seed]), rel=1e-12)
        assert result["ci"][metric][0] <= value <= result["ci"][metric][1]


def test_missing_metrics_are_left_out_and_have_no_p_value() -> None:
    with_bert = _system(_predictions(REFERENCES, 0.4, seed=12), REFERENCES)
    with_bert.item_scores["bertscore_f1"] = [90.0] * len(REFERENCES)
    without = _system(_predictions(REFERENCES, 0.4, seed=13), REFERENCES)
    result = bootstrap_comparison({"lora": [without], "qaa": [with_bert], "sora": [without]}, REFERENCES)
    assert "bertscore_f1" not in result["lora"]["ci"] and "bertscore_f1" not in result["sora"]["point"]
    assert result["qaa"]["p_vs_reference"]["bertscore_f1"] is None
    assert result["qaa"]["point"]["bertscore_f1"] == pytest.approx(90.0)


def test_unpairable_inputs_are_refused() -> None:
    run = _system(_predictions(REFERENCES, 0.4, seed=14), REFERENCES)
    with pytest.raises(UsageError, match="reference method"):
        bootstrap_comparison({"qaa": [run]}, REFERENCES)
    with pytest.raises(UsageError, match="same number of seeds"):
        bootstrap_comparison({"lora": [run], "qaa": [run, run]}, REFERENCES)
    with pytest.raises(UsageError, match="items scored"):
        bootstrap_comparison({"lora": [run]}, REFERENCES[:-1])


def test_paired_p_value_and_significant() -> None:
    assert paired_p_value(np.zeros(99), 0.0) == 1.0
    assert paired_p_value(np.full(99, 5.0), 5.0) == pytest.approx(0.01)
    assert not significant(None) and significant(0.01) and not significant(0.05)


def write_predictions(path, predictions: list[str], references: list[list[str]], indices: list[int]) -> None:  # noqa: ANN001
    import json

    rows = [{"index": i, "prediction": p, "references": r, "scores": {"rougeL": 100.0 * (p == r[0])}}
            for i, p, r in zip(indices, predictions, references, strict=True)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_each_re_evaluation_gets_the_paired_bootstrap_against_its_run(tmp_path) -> None:  # noqa: ANN001
    """A re-evaluation that changed nothing is no difference (p = 1); one that lost every item is one (p small);
    one without predictions, or over other items, gets no p-value rather than a wrong one."""
    from qpeft.experiment.results import add_robustness_p_values
    from qpeft.settings import AnalysisSettings

    rng = random.Random(0)
    words = ["the pub", "is near", "a cheap", "family friendly", "coffee shop", "by the river", "rated five"]
    references = [[" ".join(rng.sample(words, 4))] for _ in range(30)]
    exact = [refs[0] for refs in references]
    run = tmp_path / "qaa"
    run.mkdir()
    write_predictions(run / "predictions.jsonl", exact, references, list(range(30)))
    write_predictions(run / "predictions_same.jsonl", exact, references, list(range(30)))
    write_predictions(run / "predictions_lost.jsonl", ["nothing at all"] * 30, references, list(range(30)))
    write_predictions(run / "predictions_other.jsonl", exact, references, list(range(1, 31)))
    rows = [{"tag": None}, {"tag": "same"}, {"tag": "lost"}, {"tag": "other"}, {"tag": "missing"}]
    means = {"qaa": {"robustness": rows}, "lora": {"bleu": 50.0}}
    add_robustness_p_values({0: {"qaa": run, "lora": tmp_path / "lora"}}, means, AnalysisSettings(),
                            ("bleu", "rougeL"))
    assert "p_vs_exact" not in rows[0]  # the run itself
    assert rows[1]["p_vs_exact"] == {"bleu": 1.0, "rougeL": 1.0}
    assert rows[2]["p_vs_exact"]["bleu"] < 0.01 and rows[2]["p_vs_exact"]["rougeL"] < 0.01
    assert "p_vs_exact" not in rows[3] and "p_vs_exact" not in rows[4]


def test_the_run_s_own_predictions_are_read_once_per_method_however_many_re_evaluations(tmp_path, monkeypatch):  # noqa: ANN001
    from qpeft.experiment import results
    from qpeft.settings import AnalysisSettings

    references = [[f"item {i}"] for i in range(12)]
    run = tmp_path / "qaa"
    run.mkdir()
    tags = ["shots1000", "dep1", "gates1e-3"]
    for name in ["", *tags]:
        write_predictions(run / f"predictions{'_' + name if name else ''}.jsonl", [r[0] for r in references],
                          references, list(range(12)))
    reads: list[str] = []
    read = results.read_predictions
    monkeypatch.setattr(results, "read_predictions", lambda path: reads.append(path.name) or read(path))
    rows = [{"tag": tag} for tag in tags]
    results.add_robustness_p_values({0: {"qaa": run}}, {"qaa": {"robustness": rows}}, AnalysisSettings(), ("bleu",))
    assert sorted(reads) == sorted(["predictions.jsonl", *(f"predictions_{tag}.jsonl" for tag in tags)])
    assert all(row["p_vs_exact"] == {"bleu": 1.0} for row in rows)

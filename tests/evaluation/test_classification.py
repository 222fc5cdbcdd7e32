"""Classification in a causal LM: rank classification by label likelihood, macro-F1, and its bootstrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import write_jsonl
from qpeft.analysis.significance import SystemScores, bootstrap_comparison, macro_f1_of_counts
from qpeft.data import Example, load_splits
from qpeft.data.prompts import encode_prompt
from qpeft.evaluation.classification import (
    is_exact_match,
    label_log_likelihoods,
    label_set,
    macro_f1,
    majority_accuracy,
    rank_classify,
)
from qpeft.settings import Experiment
from qpeft.utils.errors import UsageError

LABELS = ["negative", "positive", "not so positive"]  # labels of different token lengths


def hand_log_likelihood(model: torch.nn.Module, tokenizer, text: str, label: str) -> float:  # noqa: ANN001
    """log p(" label" <eos> | prompt), one unpadded sequence, summed token by token."""
    prompt = encode_prompt(text, tokenizer, "plain")
    target = tokenizer(" " + label, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + target])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(float(log_probs[len(prompt) + i - 1, token]) for i, token in enumerate(target))


def test_rank_classification_scores_each_label_as_a_hand_computation_and_picks_the_likeliest(
        tiny_llama_dir: Path, tokenizer) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    inputs = ["a short one", "name[Aromi], food[Chinese], area[riverside] and a much longer input", "x"]
    # batch 2: padded batches that mix inputs and labels of different lengths
    scores = label_log_likelihoods(model, tokenizer, inputs, LABELS, "plain", batch_size=2)
    for row, text in zip(scores, inputs, strict=True):
        expected = [hand_log_likelihood(model, tokenizer, text, label) for label in LABELS]
        assert row == pytest.approx(expected, abs=1e-4)
    picked = rank_classify(scores, LABELS)
    assert picked == [LABELS[int(np.argmax(row))] for row in scores]


def test_rank_classify_takes_the_highest_and_the_first_of_a_tie() -> None:
    assert rank_classify([[-3.0, -1.0, -2.0], [-1.0, -1.0, -5.0]], ["a", "b", "c"]) == ["b", "a"]


def test_macro_f1_against_a_hand_computation() -> None:
    gold = ["a", "a", "b", "b", "c"]
    predicted = ["a", "b", "b", "b", "a"]
    # a: TP 1, 2 predicted, 2 gold -> 2/4; b: TP 2, 3 predicted, 2 gold -> 4/5; c: never predicted -> 0
    assert macro_f1(predicted, gold) == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)
    assert macro_f1(["a", "b"], ["a", "b"]) == 100.0


def test_the_bootstrap_macro_f1_of_a_resample_is_that_resample_scored_by_hand() -> None:
    gold = ["a", "a", "b", "b", "c"]
    predicted = ["a", "b", "b", "b", "a"]
    counts = np.array([[1, 1, 1, 1, 1], [2, 0, 1, 0, 0], [0, 1, 0, 0, 1]], dtype=np.float64)
    values = macro_f1_of_counts(counts, predicted, gold)
    assert values[0] == pytest.approx(macro_f1(predicted, gold))
    assert values[1] == pytest.approx(100.0)  # items 1, 1, 3: every one right
    # items 2 and 5: a predicted as b, c predicted as a -> labels a, b, c all with F1 0
    assert values[2] == pytest.approx(0.0)
    assert values[1] == pytest.approx(macro_f1(["a", "a", "b"], ["a", "a", "b"]))


def test_the_classification_bootstrap_gives_intervals_around_the_point_estimates() -> None:
    gold = ["pos", "neg"] * 20
    good = SystemScores(list(gold), {"accuracy": [100.0] * 40, "exact_match": [100.0] * 40})
    flipped = ["neg" if i % 4 == 0 else g for i, g in enumerate(gold)]
    fair = SystemScores(flipped, {"accuracy": [100.0 * (p == g) for p, g in zip(flipped, gold, strict=True)],
                                  "exact_match": [0.0] * 40})
    stats = bootstrap_comparison({"lora": [good], "qaa": [fair]}, [[g] for g in gold], resamples=200,
                                 metrics=("accuracy", "macro_f1", "exact_match"))
    assert stats["lora"]["point"] == {"accuracy": 100.0, "macro_f1": 100.0, "exact_match": 100.0}
    assert stats["qaa"]["point"]["accuracy"] == pytest.approx(75.0)
    assert stats["qaa"]["point"]["macro_f1"] == pytest.approx(macro_f1(flipped, gold))
    low, high = stats["qaa"]["ci"]["macro_f1"]
    assert low < stats["qaa"]["point"]["macro_f1"] < high
    assert stats["qaa"]["p_vs_reference"]["exact_match"] < 0.05


def test_exact_match_ignores_case_and_surrounding_space_only() -> None:
    assert is_exact_match("  Positive \n", "positive")
    assert not is_exact_match("positive.", "positive")


def test_the_label_set_comes_from_the_training_targets() -> None:
    train = [Example(f"in {i}", label) for i, label in enumerate(["b", "a", "b", "c"])]
    assert label_set(train) == ["a", "b", "c"]
    assert majority_accuracy(["b", "a", "b", "b"]) == 75.0
    assert majority_accuracy(["a", "c", "c"]) == pytest.approx(200 / 3)  # c is rarer than a and b in training
    with pytest.raises(UsageError, match="at least 2 distinct training targets"):
        label_set([Example("x", "same"), Example("y", "same")])
    with pytest.raises(UsageError, match="is this a generation task"):
        label_set([Example(f"in {i}", f"free text {i}") for i in range(60)])


def write_task(folder: Path, name: str, labels: tuple[str, ...]) -> None:
    (folder / name).mkdir(parents=True)
    write_jsonl(folder / name / "train.jsonl", [{"input": f"text {i}", "target": labels[i % 2]} for i in range(40)])
    write_jsonl(folder / name / "test.jsonl", [{"input": f"other {i}", "target": labels[i % 2]} for i in range(6)])


@pytest.mark.parametrize(("name", "task"), [("dart", "generation"), ("sst2", "classification"),
                                            ("rte", "classification")])
def test_built_in_tasks_are_read_from_the_data_folder_with_their_task_type(tmp_path: Path, name: str,
                                                                           task: str) -> None:
    write_task(tmp_path, name, ("yes", "no"))
    splits = load_splits(name, str(tmp_path))
    assert len(splits.train) + len(splits.validation) == 40 and len(splits.test) == 6
    assert Experiment(dataset=name).task_type() == task
    assert Experiment(dataset=name, task="generation").task_type() == "generation"


def test_a_missing_built_in_task_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QPEFT_DATA_DIR", raising=False)
    with pytest.raises(UsageError, match="no local copy of the sst2 data set: point --data-dir"):
        load_splits("sst2")
    with pytest.raises(UsageError, match=f"rte files not found under {tmp_path}"):
        load_splits("rte", str(tmp_path))


def test_a_user_file_is_generation_unless_told(tmp_path: Path) -> None:
    assert Experiment(dataset=str(tmp_path / "mine.jsonl")).task_type() == "generation"
    assert Experiment(dataset="x.jsonl", task="classification").task_type() == "classification"
    with pytest.raises(UsageError, match="--task must be one of"):
        Experiment(task="regression").validate()

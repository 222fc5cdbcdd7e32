from __future__ import annotations

import pytest
import sacrebleu

from qpeft.evaluation.metrics import bertscore_f1, bleu, rouge

PREDICTIONS = ["Aromi serves French food in the riverside.", "Cotto is a cheap place."]
REFERENCES = [["Aromi serves French food in the riverside.", "Aromi is French."], ["Cotto is an Italian place."]]


def test_bleu_uses_every_reference() -> None:
    assert bleu(PREDICTIONS[:1], REFERENCES[:1]) == pytest.approx(100.0)
    single = bleu(PREDICTIONS, [[refs[-1]] for refs in REFERENCES])
    multi = bleu(PREDICTIONS, REFERENCES)
    assert multi > single
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [[r[0] for r in REFERENCES], [REFERENCES[0][1], None]]).score
    assert multi == pytest.approx(expected)


def test_rouge_takes_the_best_reference() -> None:
    scores = rouge(PREDICTIONS[:1], [["Completely unrelated words here.", PREDICTIONS[0]]])
    assert scores["rouge1"] == pytest.approx(100.0) and scores["rougeL"] == pytest.approx(100.0)
    partial = rouge(PREDICTIONS[1:], REFERENCES[1:])
    assert 0 < partial["rouge2"] < partial["rouge1"] < 100


def test_bertscore_ranks_a_paraphrase_above_an_unrelated_sentence() -> None:
    refs = [["The restaurant serves cheap Italian food."]] * 2
    close, far = "This restaurant serves inexpensive Italian food.", "Quantum circuits rotate qubits."
    assert bertscore_f1([close], refs[:1]) > bertscore_f1([far], refs[:1]) + 5
    assert bertscore_f1(["The restaurant serves cheap Italian food."], refs[:1]) == pytest.approx(100.0, abs=0.01)

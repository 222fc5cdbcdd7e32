"""The E2E profile against the official e2e-metrics script's scores on six systems (``fixtures/e2e-metrics``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import sacrebleu

from helpers import cli_args
from qpeft.analysis.significance import reference_streams
from qpeft.cli import main
from qpeft.evaluation.e2e_metrics import E2E_KEYS, bleu_e2e, coco_scores, java_available, nist
from qpeft.settings import EvalSettings, Experiment

FIXTURES = Path(os.environ.get("QPEFT_DATA_DIR") or "/nonexistent") / "fixtures" / "e2e-metrics"
SYSTEMS = ("base", "full", "lora", "prefix", "sora", "qaa")
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="QPEFT_DATA_DIR holds no fixtures/e2e-metrics")
# The challenge tokenises METEOR, ROUGE-L and CIDEr with the Stanford (Java) tokenizer; CI has Java.
needs_java = pytest.mark.skipif(not java_available(), reason="no Java runtime")


def read_fixture(system: str) -> tuple[list[str], list[list[str]], dict[str, float]]:
    blocks = (FIXTURES / "references.txt").read_text(encoding="utf-8").strip("\n").split("\n\n")
    references = [[line for line in block.split("\n") if line.strip()] for block in blocks]
    outputs = (FIXTURES / f"{system}.txt").read_text(encoding="utf-8").split("\n")[: len(references)]
    official = json.loads((FIXTURES / "scores.json").read_text())[system]
    return outputs, references, official


@needs_fixtures
@pytest.mark.parametrize("system", SYSTEMS)
def test_bleu_and_nist_match_the_official_script(system: str) -> None:
    outputs, references, official = read_fixture(system)
    assert len(outputs) == len(references) == 48
    assert abs(bleu_e2e(outputs, references) / 100 - official["BLEU"]) <= 0.002
    assert abs(nist(outputs, references) - official["NIST"]) <= 0.05


@needs_fixtures
@needs_java
@pytest.mark.parametrize("system", SYSTEMS)
def test_meteor_rouge_l_and_cider_match_the_official_script(system: str) -> None:
    outputs, references, official = read_fixture(system)
    scores = coco_scores(outputs, references)
    assert abs(scores["meteor_e2e"] / 100 - official["METEOR"]) <= 0.01
    assert abs(scores["rougeL_e2e"] / 100 - official["ROUGE_L"]) <= 0.01
    assert abs(scores["cider_e2e"] - official["CIDEr"]) <= 0.01


def test_e2e_bleu_is_sacrebleus_lowercased_corpus_bleu() -> None:
    outputs = ["The Eagle is a PUB near the river.", "Cotto serves Italian food"]
    references = [["the eagle is a pub near the river.", "A pub, The Eagle."], ["Cotto serves italian food."]]
    lowered = sacrebleu.corpus_bleu(outputs, reference_streams(references), lowercase=True).score
    cased = sacrebleu.corpus_bleu(outputs, reference_streams(references)).score
    assert bleu_e2e(outputs, references) == pytest.approx(lowered) and lowered > cased


def test_nist_of_a_hand_checked_case() -> None:
    # refs "a b" and "a c" (one item): 4 words; info(a) = log2(4/2) = 1, info(b) = info(c) = 2;
    # info(a b) = log2(count(a) / count(a b)) = 1. Output "a b": unigram info 3 over 2 words,
    # bigram info 1 over 1; reference length 1 item x mean length 2 = 2 = output length: no penalty.
    assert nist(["a b"], [["a b", "a c"]]) == pytest.approx(3 / 2 + 1)
    # output "a" alone: info 1 over 1 word; ratio 1/2 gives exp(beta log(1/2)^2)
    beta = math.log(0.5) / math.log(1.5) ** 2
    assert nist(["a"], [["a b", "a c"]]) == pytest.approx(math.exp(beta * math.log(0.5) ** 2))


def test_the_e2e_profile_is_the_default_on_e2e_only() -> None:
    assert Experiment(dataset="e2e").metric_profile() == "e2e"
    assert Experiment(dataset="data.csv").metric_profile() == "default"
    assert Experiment(dataset="e2e", eval=EvalSettings(metrics="default")).metric_profile() == "default"
    assert Experiment(dataset="data.csv", eval=EvalSettings(metrics="e2e")).metric_profile() == "e2e"


@needs_java
def test_a_run_under_the_e2e_profile_records_the_challenge_figures(tiny_llama_dir: Path, toy_data_dir: Path,
                                                                   tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--method", "lora", "--output", str(run), *cli_args(tiny_llama_dir, toy_data_dir),
                 "--metrics", "e2e"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metric_profile"] == "e2e"
    assert all(isinstance(metrics[key], float) for key in E2E_KEYS)
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    outputs, references = [p["prediction"] for p in predictions], [p["references"] for p in predictions]
    assert metrics["bleu_e2e"] == pytest.approx(bleu_e2e(outputs, references))
    assert metrics["nist_e2e"] == pytest.approx(nist(outputs, references))

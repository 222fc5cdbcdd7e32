"""Shared test helpers that are not fixtures: toy data, tiny models, logits, CLI arguments, run-folder readers.

``tests/`` is on ``sys.path`` (``pythonpath`` in ``pyproject.toml``), so any test imports these with
``from helpers import ...``; ``conftest.py`` holds the fixtures built from them.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

if TYPE_CHECKING:
    from qpeft.data import Example

#: The repository root (README.md, configs/, src/).
ROOT = Path(__file__).resolve().parents[1]

# --- toy data ----------------------------------------------------------------------------------------

NAMES = ["Aromi", "Blue Spice", "Cotto", "Zizzi", "The Eagle", "Fitzbillies", "Giraffe", "Loch Fyne"]
FOODS = ["Chinese", "English", "French", "Indian", "Italian", "Japanese"]
AREAS = ["city centre", "riverside"]


def toy_rows(count: int, seed: int) -> list[dict[str, str]]:
    """Data-to-text pairs with a fixed phrasing, so that a tiny model can learn them."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        name, food, area = rng.choice(NAMES), rng.choice(FOODS), rng.choice(AREAS)
        rows.append({"input": f"name[{name}], food[{food}], area[{area}]",
                     "target": f"{name} serves {food} food in the {area}."})
    return rows


def toy_examples(count: int = 16) -> list[Example]:
    """``toy_rows`` as training ``Example``s (what a method's ``initialise`` hook sees)."""
    from qpeft.data import Example

    return [Example(row["input"], row["target"]) for row in toy_rows(count, seed=5)]


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- tiny models ---------------------------------------------------------------------------------------


def build_tokenizer() -> PreTrainedTokenizerFast:
    corpus = [f"Input: {r['input']}\nOutput: {r['target']}" for r in toy_rows(400, seed=123)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<eos>"]))
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>",
                                   unk_token="<unk>")


def tiny_llama(vocab_size: int) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=1, pad_token_id=1, bos_token_id=1, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def tiny_gpt2(vocab_size: int) -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                        eos_token_id=1, pad_token_id=1, bos_token_id=1)
    return GPT2LMHeadModel(config)


def perturbed(name: str, model_dir: Path) -> tuple[torch.nn.Module, Any]:
    """Method ``name`` prepared on the model in ``model_dir``, every trainable tensor moved off its start.

    Returns the model and the method's default config.
    """
    from transformers import AutoModelForCausalLM

    from qpeft.methods import get_method

    method = get_method(name)
    config = method.config_class()
    model = method.prepare(AutoModelForCausalLM.from_pretrained(model_dir), config)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    return model, config


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The model's logits on ``ids``, in eval mode and without autograd."""
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@torch.no_grad()
def mean_loss(model: torch.nn.Module, tokenizer: Any) -> float:
    """Mean cross-entropy per target token of ``toy_examples()``, as training computes it (prompt masked out)."""
    from transformers import DataCollatorForSeq2Seq

    from qpeft.data.prompts import encode_examples

    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    batch = collate(encode_examples(toy_examples(), tokenizer, "plain", 128))
    return float(model.eval()(**batch).loss)


# --- the qpeft command ---------------------------------------------------------------------------------


def cli_args(model: Path, data: Path, *, steps: int = 4, batch_size: int = 4, save_steps: int = 2,
             max_new_tokens: int = 8, eval_batch_size: int | None = 4, max_test_items: int | None = None,
             bertscore_model: str = "none") -> list[str]:
    """``--model``/``--dataset`` and a small training and evaluation budget, as ``train``/``compare`` take them.

    ``None`` leaves a flag out (its default applies). Later flags on the command line override these.
    """
    args = ["--model", str(model), "--dataset", str(data), "--steps", str(steps), "--batch-size", str(batch_size),
            "--save-steps", str(save_steps), "--max-new-tokens", str(max_new_tokens),
            "--bertscore-model", bertscore_model]
    if eval_batch_size is not None:
        args += ["--eval-batch-size", str(eval_batch_size)]
    if max_test_items is not None:
        args += ["--max-test-items", str(max_test_items)]
    return args


def interrupt_at_step(step: int) -> Callable[..., None]:
    """A ``StepLogger.on_log`` that logs as usual, then raises ``KeyboardInterrupt`` (Ctrl-C) once ``step`` is logged.

    Patch it in with ``monkeypatch.setattr(StepLogger, "on_log", interrupt_at_step(3))``.
    """
    from qpeft.training.train_log import StepLogger

    original = StepLogger.on_log

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN202
        original(self, args, state, control, logs=logs, **kwargs)
        if state.global_step == step and logs and "loss" in logs:
            raise KeyboardInterrupt

    return on_log


# --- run folders -------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), to check that a rerun rewrote nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file (``train_log.csv``, ``results.csv``) as strings."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def losses(run: Path) -> list[float]:
    """The training loss of every logged step of a run folder."""
    return [float(row["loss"]) for row in read_rows(run / "train_log.csv")]

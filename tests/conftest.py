"""Tiny randomly initialised models and toy data, built in code: no download, fast."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Tiny models are dominated by per-op overhead, which a second thread only adds to.
torch.set_num_threads(1)

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


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_tokenizer() -> PreTrainedTokenizerFast:
    corpus = [f"Input: {r['input']}\nOutput: {r['target']}" for r in toy_rows(400, seed=123)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<eos>"]))
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>",
                                   unk_token="<unk>")


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


def tiny_llama(vocab_size: int) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=1, pad_token_id=1, bos_token_id=1, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def tiny_gpt2(vocab_size: int) -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                        eos_token_id=1, pad_token_id=1, bos_token_id=1)
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def tiny_model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   tokenizer: PreTrainedTokenizerFast) -> Path:
    """A saved tiny model (Llama-style or GPT-2-style) with its tokenizer, usable as --model."""
    import torch

    torch.manual_seed(0)
    model = tiny_llama(len(tokenizer)) if request.param == "llama" else tiny_gpt2(len(tokenizer))
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerFast) -> Path:
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama-only")
    tiny_llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def toy_data_dir(tmp_path: Path) -> Path:
    """A folder with train.jsonl and test.jsonl; test inputs repeat with several references."""
    folder = tmp_path / "toy"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", toy_rows(64, seed=1))
    test = toy_rows(6, seed=2)
    test += [{"input": row["input"], "target": row["target"].replace("serves", "offers")} for row in test]
    write_jsonl(folder / "test.jsonl", test)
    return folder


@pytest.fixture()
def e2e_dir(tmp_path: Path) -> Path:
    """A miniature copy of the E2E layout (e2e/devset.csv, e2e/testset_w_refs.csv)."""
    root = tmp_path / "data"
    (root / "e2e").mkdir(parents=True)
    rename = [{"mr": row["input"], "ref": row["target"]} for row in toy_rows(80, seed=3)]
    write_csv(root / "e2e" / "devset.csv", rename, ["mr", "ref"])
    test = [{"mr": row["input"], "ref": row["target"]} for row in toy_rows(10, seed=4)]
    test += [{"mr": row["mr"], "ref": row["ref"] + " Try it."} for row in test]
    write_csv(root / "e2e" / "testset_w_refs.csv", test, ["mr", "ref"])
    return root

"""Fixtures only: tiny randomly initialised models and toy data, built in code (no download, fast).

The helpers they are built from (``toy_rows``, ``tiny_llama``, ...) live in ``helpers.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from helpers import build_tokenizer, tiny_gpt2, tiny_llama, toy_rows, write_csv, write_jsonl

# Tiny models are dominated by per-op overhead, which a second thread only adds to.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def tiny_model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   tokenizer: PreTrainedTokenizerFast) -> Path:
    """A saved tiny model (Llama-style or GPT-2-style) with its tokenizer, usable as --model."""
    torch.manual_seed(0)
    model = tiny_llama(len(tokenizer)) if request.param == "llama" else tiny_gpt2(len(tokenizer))
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerFast) -> Path:
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

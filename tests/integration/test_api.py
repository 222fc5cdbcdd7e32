"""The Python API: qpeft's adapters inside a user's own Trainer or TRL SFTTrainer, saved and reloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments
from trl import SFTConfig, SFTTrainer

import qpeft
from helpers import toy_rows
from qpeft.methods import REGISTRY
from qpeft.methods.sora.model import sora_layers
from qpeft.utils.errors import UsageError

STEPS = 4
#: What the names of a method's trainable parameters contain (full fine-tuning trains every one).
ADAPTER_MARKERS = {"full": "", "lora": "lora_", "prefix": "prompt_encoder", "sora": "sora_", "qaa": "qaa_"}
PROMPT = "Input: name[Aromi], food[French], area[riverside]\nOutput:"


def base_model(model_dir: Path) -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(model_dir)


def prompt_completion(count: int = 16) -> Dataset:
    rows = toy_rows(count, seed=5)
    return Dataset.from_list([{"prompt": f"Input: {r['input']}\nOutput:", "completion": f" {r['target']}"}
                              for r in rows])


def tokenized(tokenizer, count: int = 16) -> Dataset:
    texts = [f"Input: {r['input']}\nOutput: {r['target']}{tokenizer.eos_token}" for r in toy_rows(count, seed=5)]
    return Dataset.from_list([{"input_ids": tokenizer(text)["input_ids"]} for text in texts])


def common_args(tmp_path: Path) -> dict:
    return {"output_dir": str(tmp_path / "trainer"), "max_steps": STEPS, "per_device_train_batch_size": 4,
            "report_to": [], "use_cpu": True, "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True}


def train_with_sft(model: nn.Module, tokenizer, tmp_path: Path, optimizer: torch.optim.Optimizer) -> None:
    """TRL's SFTTrainer on prompt-completion rows; TRL's defaults of bf16 and checkpointing are for GPUs."""
    args = SFTConfig(**common_args(tmp_path), bf16=False, activation_checkpointing=False, max_length=64)
    SFTTrainer(model=model, args=args, train_dataset=prompt_completion(), processing_class=tokenizer,
               optimizers=(optimizer, None)).train()


def train_with_trainer(model: nn.Module, tokenizer, tmp_path: Path, optimizer: torch.optim.Optimizer) -> None:
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    Trainer(model=model, args=TrainingArguments(**common_args(tmp_path)), train_dataset=tokenized(tokenizer),
            data_collator=collator, optimizers=(optimizer, None)).train()


@torch.no_grad()
def logits(model: nn.Module, tokenizer) -> torch.Tensor:
    model.eval()
    return model(**tokenizer(PROMPT, return_tensors="pt")).logits


@pytest.mark.parametrize("trainer", [train_with_sft, train_with_trainer], ids=["sft_trainer", "trainer"])
@pytest.mark.parametrize("method", ["qaa", "sora"])
def test_prepared_model_trains_in_a_users_trainer_and_reloads_to_the_same_logits(
        method: str, trainer, tiny_llama_dir: Path, tokenizer, tmp_path: Path) -> None:
    model = qpeft.prepare(base_model(tiny_llama_dir), method)
    trainer(model, tokenizer, tmp_path, qpeft.optimizer(model, max_steps=STEPS))
    trained = logits(model, tokenizer)
    assert not torch.allclose(trained, logits(base_model(tiny_llama_dir), tokenizer))  # the adapter learned

    folder = qpeft.save_adapter(model, tmp_path / "adapter")
    loaded = qpeft.load_adapter(base_model(tiny_llama_dir), folder)
    torch.testing.assert_close(logits(loaded, tokenizer), trained, rtol=1e-5, atol=1e-5)


def test_sora_optimizer_prunes_gates_under_sft_trainer(tiny_llama_dir: Path, tokenizer, tmp_path: Path) -> None:
    model = qpeft.prepare(base_model(tiny_llama_dir), "sora", r=4)
    optimizer = qpeft.sora_optimizer(model, sparsity=10.0, max_steps=STEPS)  # threshold lr x λ = 0.1 x 10 per step
    train_with_sft(model, tokenizer, tmp_path, optimizer)
    gates = torch.cat([layer.sora_gate.detach().flatten() for _, layer in sora_layers(model)])
    assert (gates == 0).any()


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_prepare_leaves_only_the_adapter_trainable(method: str, tiny_llama_dir: Path, tokenizer) -> None:
    assert set(ADAPTER_MARKERS) == set(REGISTRY), "give every registered method its marker"
    model = qpeft.prepare(base_model(tiny_llama_dir), method, tokenizer=tokenizer)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert trainable
    assert all(ADAPTER_MARKERS[method] in name for name in trainable)
    assert method == "full" or not any(ADAPTER_MARKERS[method] in name for name in frozen)


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_save_and_load_round_trip_for_every_method(method: str, tiny_llama_dir: Path, tokenizer,
                                                   tmp_path: Path) -> None:
    model = qpeft.prepare(base_model(tiny_llama_dir), method, tokenizer=tokenizer)
    with torch.no_grad():  # as if trained: zero-initialised parts (LoRA's B, QAA's W_up) would hide a lost tensor
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    expected = logits(model, tokenizer)
    folder = qpeft.save_adapter(model, tmp_path / method)
    record = json.loads((folder / "qpeft_adapter.json").read_text())
    assert record["method"] == method and record["config"] == REGISTRY[method].config_class().to_dict()
    torch.testing.assert_close(logits(qpeft.load_adapter(base_model(tiny_llama_dir), folder), tokenizer), expected,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("method", "options", "message"), [
    ("lora", {"rank": 4}, "no option 'rank'"),
    ("sora", {"r": "8"}, "takes an int"),
    ("qaa", {"layers": 0}, "at least one circuit layer"),
    ("adalora", {}, "unknown method"),
])
def test_prepare_with_a_bad_option_raises_usage_error(method: str, options: dict, message: str,
                                                      tiny_llama_dir: Path) -> None:
    model = base_model(tiny_llama_dir)
    with pytest.raises(UsageError, match=message):
        qpeft.prepare(model, method, **options)
    assert all(p.requires_grad for p in model.parameters())  # refused before the model was touched


def test_load_adapter_reads_only_safetensors_and_json(tiny_llama_dir: Path, tokenizer, tmp_path: Path) -> None:
    folder = qpeft.save_adapter(qpeft.prepare(base_model(tiny_llama_dir), "lora"), tmp_path / "lora")
    (folder / "adapter_model.bin").write_bytes(b"not read")
    with pytest.raises(UsageError, match="only from safetensors"):
        qpeft.load_adapter(base_model(tiny_llama_dir), folder)
    with pytest.raises(UsageError, match="no qpeft adapter"):
        qpeft.load_adapter(base_model(tiny_llama_dir), tmp_path)
    with pytest.raises(UsageError, match="not prepared by qpeft"):
        qpeft.save_adapter(base_model(tiny_llama_dir), tmp_path / "plain")


def test_train_evaluate_and_compare_mirror_the_cli(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path) -> None:
    settings = {"model": str(tiny_llama_dir), "dataset": str(toy_data_dir), "steps": 2, "batch_size": 4,
                "save_steps": 2, "max_new_tokens": 8, "bertscore_model": "none", "eval_batch_size": 4}
    metrics = qpeft.train(tmp_path / "run", "lora", options={"r": 4}, **settings)
    assert metrics["trainable_params"] > 0 and "bleu" in metrics
    assert json.loads((tmp_path / "run" / "config.json").read_text())["method_config"]["r"] == 4
    again = qpeft.evaluate(tmp_path / "run", tag="beam2", num_beams=2)
    assert again["eval_settings"]["num_beams"] == 2 and (tmp_path / "run" / "metrics_beam2.json").exists()

    payload = qpeft.compare(tmp_path / "cmp", ["lora"], same_process=True, fewshot_examples=0, **settings)
    assert set(payload["methods"]) == {"base", "lora"} and payload["methods"]["lora"]["status"] == "ok"
    assert (tmp_path / "cmp" / "report.md").exists() and (tmp_path / "cmp" / "report.html").exists()
    with pytest.raises(UsageError, match="unknown setting 'stepz'"):
        qpeft.train(tmp_path / "bad", "lora", stepz=3)

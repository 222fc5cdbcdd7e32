"""SoRA: the proximal gate step, its schedule, training, resume, pruning and LoRA export."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from helpers import interrupt_at_step, logits
from qpeft.cli import main
from qpeft.methods import REGISTRY, get_method
from qpeft.methods.base import trainable_parameter_count
from qpeft.methods.sora import (
    AllRanksPruned,
    SoRAConfig,
    SoRALinear,
    export_lora,
    soft_threshold,
    soft_threshold_,
    sora_layers,
    sparsity_at,
)
from qpeft.methods.sora import optim as sora_optim
from qpeft.methods.sora.model import adapter_from_model, read_adapter
from qpeft.methods.targets import find_target_modules, linear_shape
from qpeft.utils.errors import UsageError

FAST = ["--steps", "4", "--batch-size", "4", "--save-steps", "2", "--max-new-tokens", "4",
        "--bertscore-model", "none", "--eval-batch-size", "2", "--max-test-items", "2"]
# Within 4 steps these shrink the gates by about 0.8 in all, so that gates drawn from N(0, 1) partly die.
SPARSE = ["--sora-gate-learning-rate", "0.2", "--sora-sparsity", "1", "--sora-sparsity-max", "4",
          "--sora-schedule", "linear", "--sora-gate-init", "normal"]


def common(model: Path, data: Path) -> list[str]:
    return ["--model", str(model), "--dataset", str(data), *FAST]


def gates_of(run: Path) -> dict[str, torch.Tensor]:
    return {name: w.gate for name, w in read_adapter(run / "adapter").modules.items()}


def train_log(run: Path) -> list[dict[str, str]]:
    with (run / "train_log.csv").open() as handle:
        return list(csv.DictReader(handle))


def prepared(model_dir: Path, **options: object) -> tuple[torch.nn.Module, SoRAConfig]:
    method = get_method("sora")
    config = SoRAConfig(**options)
    config.validate()
    return method.prepare(AutoModelForCausalLM.from_pretrained(model_dir), config), config


# The proximal step and its schedule -----------------------------------------------------------


def test_soft_threshold_against_hand_computed_values() -> None:
    values = torch.tensor([3.0, -2.5, 1.0, -1.0, 0.75, -0.25, 0.0, 1.5])
    result = soft_threshold(values, 1.0)
    # signs kept, |x| <= threshold -> exactly zero, entries that would cross zero (0.75, -0.25) stop at zero
    assert result.tolist() == [2.0, -1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]
    assert not torch.signbit(result[result == 0]).any()  # +0.0, never -0.0
    assert soft_threshold(values, 0.0).tolist() == values.tolist()
    gate = torch.nn.Parameter(torch.tensor([0.3, -0.3, 0.05]))
    soft_threshold_(gate, 0.1)
    torch.testing.assert_close(gate.data, torch.tensor([0.2, -0.2, 0.0]))


def test_sparsity_schedules_follow_their_definitions() -> None:
    total = 11  # progress p = t / 10
    for schedule in ("linear", "log-linear", "exponential"):
        assert sparsity_at(schedule, 0.01, 1.0, 0, total) == pytest.approx(0.01)
        assert sparsity_at(schedule, 0.01, 1.0, 10, total) == pytest.approx(1.0)
        assert sparsity_at(schedule, 0.01, 1.0, 50, total) == pytest.approx(1.0)  # past the end: stays at λ_max
    assert sparsity_at("constant", 0.3, 9.0, 7, total) == 0.3
    assert sparsity_at("linear", 0.0, 1.0, 3, total) == pytest.approx(0.3)
    assert sparsity_at("log-linear", 0.01, 1.0, 5, total) == pytest.approx(0.1)  # geometric mean at p = 1/2
    assert sparsity_at("log-linear", 0.01, 1.0, 2, total) == pytest.approx(0.01 * 100 ** 0.2)
    expected = 0.0 + 2.0 * math.expm1(5 * 0.5) / math.expm1(5)
    assert sparsity_at("exponential", 0.0, 2.0, 5, total) == pytest.approx(expected)
    assert sparsity_at("exponential", 0.0, 2.0, 5, total) < sparsity_at("linear", 0.0, 2.0, 5, total)


# The layer, the method contract ---------------------------------------------------------------


def test_sora_adapts_the_targets_and_counts_its_parameters(tiny_model_dir: Path) -> None:
    # that it starts exactly at the base model is part of the method contract (test_contract.py)
    model, config = prepared(tiny_model_dir, r=4)
    targets = find_target_modules(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "auto")
    assert {name for name, _ in sora_layers(model)} == set(targets)
    assert trainable_parameter_count(model) == sum(4 * (sum(linear_shape(m)) + 1) for m in targets.values())
    if model.config.model_type == "gpt2":  # GPT-2's c_attn is a transposed Conv1D
        assert all(layer.is_conv1d for _, layer in sora_layers(model))


def test_save_and_load_give_the_same_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    method = get_method("sora")
    model, config = prepared(tiny_model_dir, target_modules="all-linear", gate_init="normal")
    with torch.no_grad():
        for _, layer in sora_layers(model):
            layer.sora_B.normal_(0, 0.1)
    ids = torch.randint(2, 100, (2, 9))
    before = logits(model, ids)
    method.save(model, config, tmp_path / "adapter")
    loaded = method.load(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, ids), before, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(before, logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids), atol=1e-4)


def test_delta_weights_are_the_layers_update(tiny_model_dir: Path) -> None:
    torch.manual_seed(0)
    model, _ = prepared(tiny_model_dir)
    with torch.no_grad():
        for _, layer in sora_layers(model):
            layer.sora_B.normal_()
            layer.sora_gate[0] = 0.0
    deltas = get_method("sora").delta_weights(model, AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert set(deltas) == {name for name, _ in sora_layers(model)}
    for name, layer in sora_layers(model):
        x = torch.randn(3, layer.in_features)
        with torch.no_grad():
            update = layer(x) - layer.base_layer(x)
        assert deltas[name].shape == (layer.out_features, layer.in_features)
        torch.testing.assert_close(x @ deltas[name].T, update, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"r": 0}, "rank r must be positive"),
        ({"sparsity": -0.1}, "sparsity strengths must be >= 0"),
        ({"sparsity_max": -1.0}, "sparsity strengths must be >= 0"),
        ({"sparsity": 0.5, "sparsity_max": 0.1, "schedule": "linear"}, "sparsity_max (0.1) must be >= sparsity"),
        ({"schedule": "cubic"}, "unknown SoRA schedule 'cubic'"),
        ({"gate_init": "zeros"}, "unknown SoRA gate_init 'zeros'"),
        ({"gate_learning_rate": -1.0}, "gate_learning_rate must be positive"),
        ({"sparsity": 0.0, "sparsity_max": 1.0, "schedule": "log-linear"}, "log-linear schedule needs sparsity > 0"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"learning_rate": 0.0}, "learning_rate must be positive"),
    ],
)
def test_bad_options_are_usage_errors(options: dict, message: str) -> None:
    with pytest.raises(UsageError) as error:
        SoRAConfig(**options).validate()
    assert message in str(error.value) and "\n" not in str(error.value)


# The optimiser ----------------------------------------------------------------------------------


def direct_training(model: torch.nn.Module, config: SoRAConfig, steps: int) -> torch.optim.Optimizer:
    optimizer = get_method("sora").create_optimizer(model, config, 0.1, steps)
    torch.manual_seed(1)
    ids = torch.randint(2, 100, (4, 12))
    model.train()
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_large_sparsity_kills_every_gate_and_zero_sparsity_none(tiny_llama_dir: Path) -> None:
    method = get_method("sora")
    model, config = prepared(tiny_llama_dir, learning_rate=1e-2, sparsity=20.0)
    optimizer = direct_training(model, config, 10)
    gate_group = [g for g in optimizer.param_groups if g.get("sora_gate")]
    assert len(gate_group) == 1 and gate_group[0]["weight_decay"] == 0.0  # no AdamW decay on the gates
    assert optimizer.param_groups[0]["weight_decay"] == 0.1
    assert all(torch.count_nonzero(layer.sora_gate) == 0 for _, layer in sora_layers(model))
    assert method.step_log(model) == {"gate_zero_fraction": 1.0, "mean_rank": 0.0}

    model, config = prepared(tiny_llama_dir, learning_rate=1e-2, sparsity=0.0)
    direct_training(model, config, 10)
    gates = torch.cat([layer.sora_gate.detach() for _, layer in sora_layers(model)])
    assert torch.all(gates != 0) and not torch.allclose(gates, torch.ones_like(gates))  # trained, none dead
    assert method.step_log(model) == {"gate_zero_fraction": 0.0, "mean_rank": 8.0}


def test_gate_step_is_adamw_then_the_scheduled_soft_threshold(tiny_llama_dir: Path) -> None:
    """With no gradient on the gates (B = 0 at the start), each step shrinks them by exactly lr * λ_t."""
    model, config = prepared(tiny_llama_dir, learning_rate=1e-3, gate_learning_rate=0.01, sparsity=1.0,
                             sparsity_max=3.0, schedule="linear")
    optimizer = get_method("sora").create_optimizer(model, config, 0.0, 3)
    for _, layer in sora_layers(model):
        layer.sora_B.requires_grad_(False)  # keeps B = 0, so the gates get zero gradient
    for _ in range(3):
        model(input_ids=torch.randint(2, 100, (2, 5)), labels=torch.randint(2, 100, (2, 5))).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    expected = 1.0 - 0.01 * (1.0 + 2.0 + 3.0)
    for _, layer in sora_layers(model):
        torch.testing.assert_close(layer.sora_gate.detach(), torch.full_like(layer.sora_gate, expected))
    assert [g for g in optimizer.param_groups if g.get("sora_gate")][0]["prox_steps"] == 3


# Training through the CLI -------------------------------------------------------------------------


def test_gradient_accumulation_applies_one_prox_step_per_optimizer_step(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = sora_optim.sparsity_at

    def recording(schedule: str, start: float, end: float, step: int, total_steps: int) -> float:
        seen.append(step)
        return original(schedule, start, end, step, total_steps)

    monkeypatch.setattr(sora_optim, "sparsity_at", recording)
    args = [*common(tiny_llama_dir, toy_data_dir), *SPARSE, "--steps", "3"]
    accumulated = tmp_path / "accumulated"
    assert main(["train", "--method", "sora", "--output", str(accumulated), *args,
                 "--batch-size", "4", "--grad-accum", "2"]) == 0
    assert seen == [0, 1, 2]  # 3 optimizer steps of 2 micro-batches each: 3 prox steps, not 6
    seen.clear()
    single = tmp_path / "single"
    assert main(["train", "--method", "sora", "--output", str(single), *args, "--batch-size", "8"]) == 0
    assert seen == [0, 1, 2]
    # 2 x 4 examples accumulated = one batch of the same 8 examples: the same gates
    for name, gate in gates_of(single).items():
        torch.testing.assert_close(gates_of(accumulated)[name], gate, rtol=1e-4, atol=1e-5)


def test_train_logs_sparsity_exports_lora_and_resume_reproduces_the_gates(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    args = [*common(tiny_llama_dir, toy_data_dir), *SPARSE]
    straight = tmp_path / "straight"
    assert main(["train", "--method", "sora", "--output", str(straight), *args]) == 0
    rows = train_log(straight)
    assert {"gate_zero_fraction", "mean_rank"} <= set(rows[0])
    zero_fraction = [float(r["gate_zero_fraction"]) for r in rows]
    assert 0 < zero_fraction[-1] < 1, zero_fraction  # some gates die, not all
    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["sora_gate_zero_fraction"] == pytest.approx(zero_fraction[-1])
    assert metrics["sora_params_after_pruning"] < metrics["sora_params_before_pruning"] == metrics["trainable_params"]
    assert metrics["sora_lora_adapter"] == "adapter_lora"
    exported = load_file(straight / "adapter_lora" / "adapter_model.safetensors")
    assert sum(t.numel() for t in exported.values()) == metrics["sora_params_after_pruning"]
    assert set(metrics["sora_ranks"]) == set(gates_of(straight))

    capsys.readouterr()
    assert main(["sora-export", str(straight), str(tmp_path / "exported")]) == 0
    assert "LoRA adapter:" in capsys.readouterr().out
    assert load_file(tmp_path / "exported" / "adapter_model.safetensors").keys() == exported.keys()

    from qpeft.training.train_log import StepLogger

    resumed = tmp_path / "resumed"
    original = StepLogger.on_log
    monkeypatch.setattr(StepLogger, "on_log", interrupt_at_step(3))
    assert main(["train", "--method", "sora", "--output", str(resumed), *args]) == 130
    # the prox's own state (steps taken, last sparsity) is checkpointed with the optimizer
    state = torch.load(resumed / "checkpoints" / "checkpoint-2" / "optimizer.pt", weights_only=False)
    gate_group = [g for g in state["param_groups"] if g.get("sora_gate")][0]
    assert gate_group["prox_steps"] == 2
    # the checkpoint holds the trained tensors only, not the frozen base model
    saved = load_file(resumed / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert saved and all(key.rsplit(".", 1)[-1] in ("sora_A", "sora_B", "sora_gate") for key in saved)
    monkeypatch.setattr(StepLogger, "on_log", original)
    assert main(["train", "--method", "sora", "--output", str(resumed), *args]) == 0
    assert json.loads((resumed / "metrics.json").read_text())["resumed_from"].endswith("checkpoint-2")
    assert [r["gate_zero_fraction"] for r in train_log(resumed)] == [r["gate_zero_fraction"] for r in rows]
    for name, gate in gates_of(straight).items():
        torch.testing.assert_close(gates_of(resumed)[name], gate, rtol=1e-5, atol=1e-6)
    assert not (resumed / "checkpoints").exists()  # a finished run keeps its adapter, not its checkpoints


def test_sora_export_refuses_other_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "lora-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "lora"}))
    capsys.readouterr()
    assert main(["sora-export", str(run), str(tmp_path / "out")]) == 2
    assert "is a 'lora' run, not a SoRA run" in capsys.readouterr().err
    assert main(["sora-export", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2


def test_bad_sora_flag_is_one_line_and_exit_2(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    code = main(["train", "--method", "sora", "--output", str(tmp_path / "run"),
                 *common(tiny_llama_dir, toy_data_dir), "--sora-schedule", "cubic"])
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("qpeft: error:")]
    assert len(errors) == 1 and "unknown SoRA schedule 'cubic'" in errors[0]
    assert not (tmp_path / "run").exists()


# Pruning and export ---------------------------------------------------------------------------


def test_exported_lora_gives_the_sora_logits_under_plain_peft(tiny_model_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, config = prepared(tiny_model_dir, target_modules="all-linear", r=6, alpha=12.0)
    layers = list(sora_layers(model))
    with torch.no_grad():
        for index, (_, layer) in enumerate(layers):
            layer.sora_B.normal_(0, 0.2)
            layer.sora_gate.copy_(torch.randn(6))
            if index == 0:
                layer.sora_gate.zero_()  # a fully dead module
            elif index % 2:
                layer.sora_gate[[1, 4]] = 0.0  # some dead ranks
    dead, partial, full = layers[0][0], layers[1][0], layers[2][0]
    ids = torch.randint(2, 100, (2, 11))
    expected = logits(model, ids)

    summary = export_lora(adapter_from_model(model, config.to_dict()), tmp_path / "lora")
    assert summary["modules_dropped"] == [dead]
    adapter_config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and dead not in adapter_config["target_modules"]
    assert set(adapter_config["target_modules"]) == {name for name, _ in layers[1:]}
    assert adapter_config["rank_pattern"][partial.replace(".", "\\.")] == 4
    assert adapter_config["alpha_pattern"][partial.replace(".", "\\.")] == pytest.approx(12.0 * 4 / 6)
    assert full.replace(".", "\\.") not in adapter_config["rank_pattern"]

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "lora")
    torch.testing.assert_close(logits(peft_model, ids), expected, rtol=1e-5, atol=1e-5)
    lora_layers = {name: module for name, module in peft_model.base_model.model.named_modules()
                   if hasattr(module, "lora_A") and "default" in module.lora_A}
    assert dead not in lora_layers
    assert lora_layers[partial].lora_A["default"].weight.shape[0] == 4
    assert lora_layers[partial].scaling["default"] == pytest.approx(12.0 / 6)
    assert lora_layers[full].lora_A["default"].weight.shape[0] == 6
    params = sum(t.numel() for t in load_file(tmp_path / "lora" / "adapter_model.safetensors").values())
    assert params == summary["params_after_pruning"]


def test_every_rank_dead_is_reported_not_exported(tiny_llama_dir: Path, tmp_path: Path) -> None:
    model, config = prepared(tiny_llama_dir)
    with torch.no_grad():
        for _, layer in sora_layers(model):
            layer.sora_gate.zero_()
    with pytest.raises(AllRanksPruned, match="every rank of all 4 SoRA modules was pruned"):
        export_lora(adapter_from_model(model, config.to_dict()), tmp_path / "lora")
    assert not (tmp_path / "lora").exists()
    figures = get_method("sora").finalize(model, config, tmp_path)
    assert figures["sora_lora_adapter"] is None and "no LoRA adapter to export" in figures["sora_note"]
    assert figures["sora_gate_zero_fraction"] == 1.0 and figures["sora_params_after_pruning"] == 0
    json.dumps(figures)  # goes into metrics.json


def test_registry_and_layer_types() -> None:
    assert "sora" in REGISTRY and isinstance(REGISTRY["sora"].config_class(), SoRAConfig)
    assert issubclass(SoRALinear, torch.nn.Module)


def test_a_learning_rate_search_scales_a_and_b_but_not_the_gates_rate() -> None:
    # The gates' rate is a sparsity setting (the prox's threshold is η_gate λ a step): scaled with the grid, the
    # demo's search pruned every gate from x3.16 up and so could never give A and B a high rate.
    config = SoRAConfig(learning_rate=2e-4, gate_learning_rate=0.1)
    scaled = config.with_learning_rates_scaled(10.0)
    assert scaled.learning_rate == pytest.approx(2e-3)
    assert scaled.gate_learning_rate == 0.1
    assert SoRAConfig.learning_rate_fields == ("learning_rate",)

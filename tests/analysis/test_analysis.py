"""The comparative analysis: convergence, capacity, seeds, and their wiring into ``qpeft compare``."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch

from helpers import cli_args, snapshot
from qpeft.analysis.capacity import (
    effective_rank,
    jacobian_rank,
    linear_capacity,
    singular_values,
    summarise_capacity,
)
from qpeft.analysis.convergence import (
    convergence_figures,
    gradient_stats,
    non_finite_steps,
    read_log,
    smooth,
    smoothing_window,
    steps_to_margin,
    tail_std,
)
from qpeft.analysis.seeds import aggregate_methods, mean_std, mean_value, spread_value
from qpeft.cli import main


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than on two contended ones (shared CI machines)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# --- convergence ---------------------------------------------------------------------------

FLOOR, AMPLITUDE, TAU, STEPS = 1.0, 4.0, 20.0, 200


def decay_log(steps: int = STEPS) -> dict[str, list[float]]:
    """loss(t) = 1 + 4 exp(-t / 20): its best is at the last step, and every answer is known."""
    ts = list(range(1, steps + 1))
    return {"step": [float(t) for t in ts], "loss": [FLOOR + AMPLITUDE * math.exp(-t / TAU) for t in ts],
            "grad_norm": [1.0] * steps}


def expected_step_within(margin: float) -> int:
    best = FLOOR + AMPLITUDE * math.exp(-STEPS / TAU)
    # floor + A exp(-t/tau) <= (1 + margin) best  <=>  t >= -tau ln(((1 + margin) best - floor) / A)
    return math.ceil(-TAU * math.log(((1 + margin) * best - FLOOR) / AMPLITUDE))


def test_steps_to_margin_on_an_exponential_decay() -> None:
    log = decay_log()
    exact = convergence_figures(log, window=1)  # no smoothing: the closed form holds exactly
    assert exact["steps_to_margin"] == expected_step_within(0.05) == 88
    assert exact["steps_to_margin_pct"] == pytest.approx(44.0)
    assert convergence_figures(log, margin=0.10, window=1)["steps_to_margin"] == expected_step_within(0.10)
    assert exact["best_smoothed_loss"] == pytest.approx(FLOOR + AMPLITUDE * math.exp(-10))
    assert exact["loss_at_25pct"] == pytest.approx(FLOOR + AMPLITUDE * math.exp(-50 / TAU))
    assert exact["loss_at_50pct"] == pytest.approx(FLOOR + AMPLITUDE * math.exp(-100 / TAU))
    first = FLOOR + AMPLITUDE * math.exp(-1 / TAU)
    assert exact["loss_drop_pct"] == pytest.approx(100 * (first - exact["best_smoothed_loss"]) / first)
    # The default centred window (11 steps for 200) barely moves it: no lag, unlike an EMA.
    smoothed = convergence_figures(log)
    assert abs(smoothed["steps_to_margin"] - 88) <= smoothing_window(STEPS) // 2
    assert smoothed["non_finite_steps"] == 0


def test_fraction_of_budget_is_of_the_configured_steps() -> None:
    log = decay_log(100)  # a run that stopped at half of a 200-step budget
    figures = convergence_figures(log, window=1, total_steps=200)
    assert figures["loss_at_25pct"] == pytest.approx(FLOOR + AMPLITUDE * math.exp(-50 / TAU))
    assert figures["loss_at_50pct"] == pytest.approx(FLOOR + AMPLITUDE * math.exp(-100 / TAU))
    assert figures["steps_to_margin_pct"] == pytest.approx(100 * figures["steps_to_margin"] / 200)


def test_centred_moving_average() -> None:
    assert smooth([1.0, 2.0, 3.0, 4.0, 5.0], window=3) == pytest.approx([1.5, 2.0, 3.0, 4.0, 4.5])
    assert smooth([1.0, math.nan, 3.0], window=3) == pytest.approx([1.0, 2.0, 3.0])  # NaN skipped
    assert smooth([], window=3) == []
    assert smoothing_window(200) == 11 and smoothing_window(10) == 3 and smoothing_window(2) == 1
    with pytest.raises(ValueError, match="odd"):
        smooth([1.0, 2.0], window=2)
    assert steps_to_margin([1, 2, 3], [3.0, 1.04, 1.0], 0.05) == 2


def test_tail_spread() -> None:
    flat_then_wiggle = [5.0] * 90 + [1.1, 0.9] * 5  # the last 10% alternate around 1 by 0.1
    assert tail_std(flat_then_wiggle, 0.1) == pytest.approx(0.1 * math.sqrt(10 / 9))
    assert tail_std([2.0] * 50, 0.1) == pytest.approx(0.0)
    assert tail_std([1.0], 0.1) is None
    log = {"step": list(range(1, 101)), "loss": flat_then_wiggle, "grad_norm": [1.0] * 100}
    assert convergence_figures(log)["loss_tail_std"] == pytest.approx(0.1 * math.sqrt(10 / 9))


def test_gradient_statistics_and_non_finite_steps(tmp_path: Path) -> None:
    norms = [float(v) for v in range(1, 101)]
    stats = gradient_stats(norms + [math.nan, math.inf])
    assert stats["grad_norm_median"] == pytest.approx(50.5)
    assert stats["grad_norm_p95"] == pytest.approx(95.05)  # numpy.percentile(range(1, 101), 95)
    assert stats["grad_norm_max"] == 100.0
    losses = [1.0, math.nan, 0.9, 0.8, math.inf]
    grads = [1.0, 1.0, math.inf, 1.0, 1.0]
    assert non_finite_steps(losses, grads) == 3

    path = tmp_path / "train_log.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "learning_rate", "grad_norm", "elapsed_s", "tokens_seen"])
        for step, (loss, grad) in enumerate(zip(losses, grads, strict=True), start=1):
            writer.writerow([step, loss, 1e-4, grad, 0.1 * step, 10 * step])
    log = read_log(path)
    assert log["step"] == [1, 2, 3, 4, 5] and math.isnan(log["loss"][1])
    figures = convergence_figures(log)
    assert figures["non_finite_steps"] == 3
    assert figures["grad_norm_max"] == 1.0
    assert math.isfinite(figures["best_smoothed_loss"])


# --- capacity ------------------------------------------------------------------------------


def test_effective_rank_of_known_matrices() -> None:
    torch.manual_seed(0)
    u, v = torch.randn(12, 1), torch.randn(1, 7)
    assert effective_rank(singular_values(u @ v)) == pytest.approx(1.0, abs=1e-5)
    assert effective_rank(singular_values(torch.eye(9))) == pytest.approx(9.0)
    assert effective_rank(singular_values(torch.zeros(5, 4))) == 0.0
    m = torch.randn(10, 6)
    assert effective_rank(singular_values(1e3 * m)) == pytest.approx(effective_rank(singular_values(m)))
    assert 1.0 <= effective_rank(singular_values(m)) <= 6.0
    # Two equal singular values and one half as large: exp(H(0.4, 0.4, 0.2)).
    expected = math.exp(-(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)))
    assert effective_rank(singular_values(torch.diag(torch.tensor([2.0, 2.0, 1.0])))) == pytest.approx(expected)


def test_linear_capacity_fields() -> None:
    torch.manual_seed(0)
    delta = torch.randn(100, 3) @ torch.randn(3, 80)  # rank 3
    figures = linear_capacity(delta, top_k=10)
    assert figures["kind"] == "linear" and figures["shape"] == [100, 80]
    assert figures["update_jacobian_rank"] == 3  # a linear update's Jacobian is ΔW: its rank
    assert len(figures["singular_values"]) == 10 and figures["singular_values_total"] == 80
    assert figures["singular_values"] == sorted(figures["singular_values"], reverse=True)
    assert 1.0 <= figures["effective_rank"] <= 3.0
    assert figures["frobenius_norm"] == pytest.approx(float(torch.linalg.norm(delta.double())), rel=1e-6)
    zero = linear_capacity(torch.zeros(4, 4))
    assert zero["effective_rank"] == 0.0 and zero["update_jacobian_rank"] == 0


def test_jacobian_rank_of_functions_with_known_bounds() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    m = torch.randn(5, 3) @ torch.randn(3, 8)  # a linear map of rank 3
    linear = jacobian_rank(lambda v: m @ v, x)
    assert linear["ranks"] == [3] * 6 and linear["bound"] == 5 and linear["update_jacobian_rank"] == 3
    w = torch.randn(2, 8)
    narrow = jacobian_rank(lambda v: torch.tanh(w @ v), x)  # R^8 -> R^2: rank <= 2 (= 2 generically)
    assert narrow["max"] <= 2 and narrow["ranks"] == [2] * 6
    scalar = jacobian_rank(lambda v: (v**2).sum(), x)
    assert scalar["ranks"] == [1] * 6 and scalar["bound"] == 1

    def branching(v: torch.Tensor) -> torch.Tensor:  # data-dependent control flow: not vmap-able
        if float(v.detach().norm()) == 0.0:
            return torch.zeros(4)
        return (m[:4] @ v) / v.norm()

    normalised = jacobian_rank(branching, x)
    # A map through a unit sphere loses the radial direction: rank 3 - 0 or 1, never more than 3.
    assert all(r <= 3 for r in normalised["ranks"]) and normalised["samples"] == 6
    summary = summarise_capacity({"a": normalised, "b": linear})
    assert summary["update_jacobian_rank_max"] <= 3 and summary["capacity_modules"] == 2
    assert summary["update_jacobian_rank_bound"] == 5
    assert "effective_rank_median" not in summary  # an effective rank is a linear update's only
    assert summarise_capacity({}) == {}


# --- seeds ---------------------------------------------------------------------------------


def test_mean_and_sample_std() -> None:
    stats = mean_std([1.0, 2.0, 3.0, 4.0])
    assert stats["mean"] == 2.5 and stats["n"] == 4
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3))  # n - 1 in the denominator
    assert mean_std([7.0])["std"] is None
    assert mean_std([None, math.nan, 2.0])["n"] == 1
    assert mean_std([])["mean"] is None


def test_aggregation_over_seeds() -> None:
    per_seed = {
        "0": {"lora": {"bleu": 10.0, "trainable_params": 100, "resumed_from": None, "name": "a",
                       "robustness": [{"shots": None, "depolarizing": 0.0, "bleu": 9.0},
                                      {"shots": 100, "depolarizing": 0.1, "bleu": 5.0}]}},
        "1": {"lora": {"bleu": 14.0, "trainable_params": 100, "resumed_from": "x", "name": "a",
                       "robustness": [{"shots": None, "depolarizing": 0.0, "bleu": 11.0},
                                      {"shots": 100, "depolarizing": 0.1, "bleu": 7.0}]},
              "qaa": {"bleu": 3.0}},
    }
    means, spread = aggregate_methods(per_seed)
    assert means["lora"]["bleu"] == 12.0
    assert isinstance(means["lora"]["trainable_params"], int) and means["lora"]["trainable_params"] == 100
    assert means["lora"]["name"] == "a" and means["lora"]["resumed_from"] is None
    assert means["lora"]["robustness"][1] == {"shots": 100, "depolarizing": 0.1, "bleu": 6.0}
    assert means["lora"]["robustness"][0]["shots"] is None
    assert spread["lora"]["bleu"]["std"] == pytest.approx(math.sqrt(8.0)) and spread["lora"]["bleu"]["n"] == 2
    assert spread["lora"]["trainable_params"]["std"] == 0.0
    assert spread["lora"]["robustness"][0]["bleu"]["mean"] == 10.0
    assert "name" not in spread["lora"]
    assert means["qaa"] == {"bleu": 3.0} and spread["qaa"]["bleu"]["n"] == 1  # a method one seed lacks
    assert mean_value([{"a": [1, 2]}, {"a": [3, 4]}]) == {"a": [2.0, 3.0]}
    assert spread_value(["x", "x"]) is None


# --- delta weights and capacity of trained models -------------------------------------------


def _randomise_lora_b(model: torch.nn.Module) -> None:
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_lora_delta_is_the_merged_update_out_by_in(kind: str, tokenizer) -> None:  # noqa: ANN001
    from transformers.pytorch_utils import Conv1D

    from helpers import tiny_gpt2, tiny_llama
    from qpeft.methods import get_method
    from qpeft.methods.lora import LoRAConfig
    from qpeft.methods.targets import find_target_modules

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return tiny_llama(len(tokenizer)) if kind == "llama" else tiny_gpt2(len(tokenizer))

    base = build()
    lora = get_method("lora")
    model = lora.prepare(build(), LoRAConfig(r=4))
    _randomise_lora_b(model)
    deltas = lora.delta_weights(model, base)
    targets = find_target_modules(base, "auto")
    assert set(deltas) == set(targets)
    merged = dict(model.merge_and_unload().named_modules())
    for name, delta in deltas.items():
        change = merged[name].weight.detach() - targets[name].weight.detach()
        if isinstance(targets[name], Conv1D):
            change = change.T  # Conv1D stores in x out; ΔW is reported out x in
        assert delta.shape == change.shape
        assert torch.allclose(delta, change, atol=1e-5)
        assert linear_capacity(delta)["update_jacobian_rank"] <= 4


def test_capacity_of_trained_lora_and_full(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path) -> None:
    from qpeft.experiment.runs import load_run
    from qpeft.methods import get_method
    from qpeft.models import load_model

    common = cli_args(tiny_llama_dir, toy_data_dir, steps=4, save_steps=4, max_new_tokens=4, eval_batch_size=None,
                      max_test_items=2)
    assert main(["train", "--method", "lora", "--lora-r", "4", "--output", str(tmp_path / "lora"), *common]) == 0
    assert main(["train", "--method", "full", "--full-learning-rate", "1e-3", "--output", str(tmp_path / "full"),
                 *common]) == 0
    base = load_model(str(tiny_llama_dir))
    ids = torch.tensor([[3, 4, 5, 6]])

    lora_model, _, _ = load_run(tmp_path / "lora")
    lora_capacity = get_method("lora").capacity(lora_model, base, ids)
    full_model, _, _ = load_run(tmp_path / "full")
    full_capacity = get_method("full").capacity(full_model, base, ids)

    assert set(lora_capacity) == set(full_capacity)  # the same modules: q_proj and v_proj of both layers
    assert len(lora_capacity) == 4
    for name, entry in lora_capacity.items():
        assert 0 < entry["effective_rank"] <= 4 and entry["update_jacobian_rank"] <= 4, name
    for name, entry in full_capacity.items():
        assert entry["frobenius_norm"] > 0 and entry["effective_rank"] > 1, name
    summary = summarise_capacity(lora_capacity)
    assert summary["effective_rank_min"] <= summary["effective_rank_median"] <= summary["effective_rank_max"] <= 4
    assert summary["update_jacobian_rank_max"] <= 4
    assert get_method("prefix").capacity(lora_model, base, ids) == {}  # no per-token update


R = 4  # the LoRA / SoRA rank of the capacity tests below


def _adapted(name: str, model_dir: Path) -> torch.nn.Module:
    """``name`` prepared on the tiny model, with its update moved off zero (as training would)."""
    from qpeft.methods import get_method
    from qpeft.methods.targets import find_target_modules
    from qpeft.models import load_model

    method = get_method(name)
    overrides = {"r": R} if name in ("lora", "sora") else {}
    model = method.prepare(load_model(str(model_dir)), method.config_class(**overrides))
    torch.manual_seed(1)
    with torch.no_grad():
        if name == "full":
            for module in find_target_modules(model, "auto").values():
                module.weight.add_(0.01 * torch.randn_like(module.weight))
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith(("lora_B.default.weight", "sora_B", "qaa_up")):
                parameter.normal_()
            if parameter_name.endswith("sora_gate"):
                parameter[0] = 0.0  # a pruned rank: the gate is part of SoRA's update
    return model


@pytest.mark.parametrize("name", ["full", "lora", "sora", "qaa"])
def test_every_per_token_method_reports_the_update_jacobian_rank(name: str, tiny_model_dir: Path) -> None:
    from qpeft.methods import get_method
    from qpeft.models import load_model

    model = _adapted(name, tiny_model_dir)
    capacity = get_method(name).capacity(model, load_model(str(tiny_model_dir)), torch.tensor([[3, 4, 5, 6]]))
    assert capacity
    for module, entry in capacity.items():
        rank = entry["update_jacobian_rank"]
        if name == "full":  # a dense random change has full rank
            assert rank == min(entry["shape"]), module
        elif name == "lora":
            assert 1 <= rank <= R, module
        elif name == "sora":
            assert rank == R - 1, module  # generic B and A, one gate at zero
        else:
            assert 1 <= rank <= entry["n_qubits"], module
    summary = summarise_capacity(capacity)
    assert summary["update_jacobian_rank_min"] <= summary["update_jacobian_rank_median"]
    assert summary["update_jacobian_rank_median"] <= summary["update_jacobian_rank_max"]
    assert ("effective_rank_median" in summary) == (name != "qaa")  # only a linear update has one


def test_lora_update_jacobian_is_delta_w_at_every_input(tiny_model_dir: Path) -> None:
    """The numerical Jacobian of a LoRA layer's update (torch.func) is ΔW, so its rank is rank(ΔW) at any x."""
    from peft.tuners.lora import LoraLayer

    from qpeft.methods import get_method
    from qpeft.models import load_model

    model = _adapted("lora", tiny_model_dir)
    deltas = get_method("lora").delta_weights(model, load_model(str(tiny_model_dir)))
    torch.manual_seed(2)
    for name, layer in model.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        delta = deltas[name.removeprefix("base_model.model.")]

        def update(x: torch.Tensor, layer: torch.nn.Module = layer) -> torch.Tensor:
            return layer(x) - layer.base_layer(x)  # the adapted layer's output minus the frozen one's

        x = torch.randn(3, delta.shape[1])
        for sample in x:
            torch.testing.assert_close(torch.func.jacrev(update)(sample), delta, atol=1e-5, rtol=1e-4)
        expected = linear_capacity(delta)["update_jacobian_rank"]
        assert jacobian_rank(update, x)["ranks"] == [expected] * 3, name


def test_capacity_finding_keeps_unlike_measures_apart() -> None:
    from qpeft.report.findings import _capacity_finding

    torch.manual_seed(0)
    w = torch.randn(4, 16)
    capacity = {
        "full": {"q": linear_capacity(torch.randn(24, 16))},
        "lora": {"q": linear_capacity(torch.randn(24, R) @ torch.randn(R, 16))},
        "qaa": {"q": jacobian_rank(lambda x: torch.tanh(w @ x), torch.randn(5, 16))},
        "prefix": {},
    }
    payload = {"methods": {"base": {}, **{name: summarise_capacity(e) for name, e in capacity.items()}},
               "method_configs": {"lora": {"r": R}}}
    text = _capacity_finding(payload)
    sentences = [s for s in re.split(r"(?<=\.)\s+", text) if s]
    jacobian = next(s for s in sentences if "Jacobian" in s)
    assert "full 16" in jacobian and f"lora {R} (rank r = {R})" in jacobian and "qaa 4 (of at most 4)" in jacobian
    effective = next(s for s in sentences if "effective rank" in s)
    assert "full" in effective and "lora" in effective
    for sentence in sentences:
        assert not ("effective" in sentence and ("Jacobian" in sentence or "qaa" in sentence)), sentence
    assert "prefix has no weight update to measure" in text


# --- compare --seeds ---------------------------------------------------------------------------


def test_compare_over_two_seeds_reports_per_seed_figures_and_their_spread(
    tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "lora,prefix", "--seeds", "0,1", "--output", str(out),
            *cli_args(tiny_llama_dir, toy_data_dir, steps=4, save_steps=4, max_new_tokens=4, eval_batch_size=4),
            "--same-process"]
    assert main(args) == 0
    for seed in (0, 1):
        for name in ("base", "lora", "prefix"):
            assert (out / f"seed-{seed}" / name / "metrics.json").exists()
        assert json.loads((out / f"seed-{seed}" / "results.json").read_text())["seeds"] == [seed]
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1] and results["experiment"]["seed"] is None
    assert set(results["per_seed"]) == {"0", "1"}
    assert {"torch", "transformers", "peft"} <= set(results["versions"])
    assert results["analysis"]["convergence_margin"] == 0.05

    per_seed = [results["per_seed"][s]["methods"]["lora"] for s in ("0", "1")]
    for figures in per_seed:
        for key in ("steps_to_margin", "loss_at_25pct", "loss_at_50pct", "loss_tail_std", "grad_norm_median",
                    "grad_norm_p95", "grad_norm_max", "non_finite_steps", "effective_rank_median",
                    "update_jacobian_rank_median",
                    "latency_ms_per_token", "latency_vs_base", "latency_vs_base_low", "latency_vs_base_high"):
            assert isinstance(figures[key], (int, float)), key
        # each seed's latency from its own 7 pairs (the default), the median inside its interval
        assert len(figures["latency_ratios"]) == 7
        assert figures["latency_vs_base_low"] <= figures["latency_vs_base"] <= figures["latency_vs_base_high"]
    assert len(results["methods"]["lora"]["latency_ratios"]) == 14  # both seeds' pairs, pooled
    loss = [f["test_loss"] for f in per_seed]
    assert per_seed[0]["train_tokens"] > 0 and loss[0] != loss[1]  # the seeds really differ
    assert results["methods"]["lora"]["test_loss"] == pytest.approx(sum(loss) / 2)
    spread = results["aggregate"]["lora"]["test_loss"]
    assert spread["n"] == 2 and spread["std"] == pytest.approx(abs(loss[0] - loss[1]) / math.sqrt(2))
    assert results["methods"]["base"]["latency_vs_base"] == 1.0

    seed0 = results["per_seed"]["0"]
    assert len(seed0["capacity"]["lora"]) == 4 and seed0["capacity"]["prefix"] == {}
    assert "effective_rank_median" not in seed0["methods"]["prefix"]
    assert "update_jacobian_rank_median" not in seed0["methods"]["prefix"]
    curve = seed0["curves"]["lora"]
    assert curve["step"] == [1, 2, 3, 4] and len(curve["smoothed"]) == 4

    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["seed"] for r in rows if r["method"] == "lora"] == ["0", "1", "mean", "std"]
    assert float(next(r for r in rows if r["method"] == "lora" and r["seed"] == "std")["test_loss"]) > 0
    assert "± " in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert 'id="plot-loss"' in html and 'id="plot-capacity-spectra"' in html and 'id="plot-noise"' not in html

    # A second run trains nothing again and re-derives the analysis from the files.
    before = snapshot(out / "seed-1" / "lora")
    assert main(args) == 0
    assert snapshot(out / "seed-1" / "lora") == before
    assert json.loads((out / "results.json").read_text())["methods"]["lora"]["test_loss"] == pytest.approx(
        sum(loss) / 2)

    capsys.readouterr()
    single = [a for a in args if a not in ("--seeds", "0,1")]
    assert main(single) == 2  # the folder holds the two-seed comparison
    assert "different experiment" in capsys.readouterr().err
    assert main(["compare", "--methods", "lora", "--seeds", "1,1", "--output", str(tmp_path / "dup"),
                 "--model", str(tiny_llama_dir), "--dataset", str(toy_data_dir)]) == 2
    assert "each seed once" in capsys.readouterr().err

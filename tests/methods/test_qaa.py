"""QAA: the adapter layer, its method hooks, training, QASM export, shots and noise, capacity."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import build_tokenizer, logits, tiny_llama, toy_rows, write_jsonl
from qpeft.cli import main
from qpeft.methods import get_method
from qpeft.methods.base import trainable_parameter_count
from qpeft.methods.qaa import ROBUSTNESS_GRID, QAAConfig, QAAEvalOptions, QAALinear, qaa_layers, read_adapter
from qpeft.methods.targets import find_target_modules, linear_shape
from qpeft.quantum import CircuitSpec, simulate, to_qiskit
from qpeft.utils.errors import UsageError

FAST = ["--batch-size", "4", "--save-steps", "100", "--max-new-tokens", "4", "--bertscore-model", "none",
        "--eval-batch-size", "2", "--max-test-items", "2"]
# A tiny random model learns little through q/v alone within a few steps; all-linear at a high
# rate shows the loss falling within 30.
TRAIN = ["--steps", "30", "--qaa-learning-rate", "0.05", "--qaa-angle-learning-rate", "0.05",
         "--qaa-target-modules", "all-linear"]


def prepared(model_dir: Path, **options: object) -> tuple[torch.nn.Module, QAAConfig]:
    config = QAAConfig(**options)
    config.validate()
    return get_method("qaa").prepare(AutoModelForCausalLM.from_pretrained(model_dir), config), config


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every W_up and bias non-zero values, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in qaa_layers(model):
            layer.qaa_up.copy_(torch.randn(layer.qaa_up.shape, generator=generator) * 0.5)
            layer.qaa_bias.copy_(torch.randn(layer.qaa_bias.shape, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, data folder) of a QAA run trained for 30 steps on the tiny Llama and toy data."""
    root = tmp_path_factory.mktemp("qaa-run")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model_dir = root / "model"
    tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = root / "toy"
    data.mkdir()
    write_jsonl(data / "train.jsonl", toy_rows(64, seed=1))
    write_jsonl(data / "test.jsonl", toy_rows(4, seed=2))
    run = root / "run"
    args = ["train", "--method", "qaa", "--output", str(run), "--model", str(model_dir), "--dataset", str(data),
            *FAST, *TRAIN]
    assert main(args) == 0
    return run, data


# The layer ---------------------------------------------------------------------------------


def test_qaa_adapts_the_targets_and_counts_its_parameters(tiny_model_dir: Path) -> None:
    # that it starts exactly at the base model is part of the method contract (test_contract.py)
    model, _ = prepared(tiny_model_dir)
    targets = find_target_modules(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "auto")
    assert {name for name, _ in qaa_layers(model)} == set(targets)
    expected = 0
    for module in targets.values():
        d_in, d_out = linear_shape(module)
        n = math.ceil(math.log2(d_in))
        expected += 2 * n + n * d_out + d_out
    assert trainable_parameter_count(model) == expected
    if model.config.model_type == "gpt2":
        assert all(layer.is_conv1d for _, layer in qaa_layers(model))


@pytest.mark.parametrize(("layers", "ansatz", "readout", "bias"),
                         [(1, "ry", "z", True), (2, "ry", "z", True), (3, "ry", "z", False),
                          (2, "ry_rz", "z", True), (2, "ry", "probs", True)])
def test_trainable_parameters_follow_the_formula(layers: int, ansatz: str, readout: str, bias: bool) -> None:
    layer = QAALinear(torch.nn.Linear(576, 576), layers, ansatz, readout, bias=bias)
    n = 10  # ceil(log2 576)
    angles = layers * n * (2 if ansatz == "ry_rz" else 1)
    width = n if readout == "z" else 2**n
    expected = angles + width * 576 + (576 if bias else 0)
    assert layer.trainable_count() == expected
    assert sum(p.numel() for p in layer.parameters() if p is not layer.base_layer.weight
               and p is not layer.base_layer.bias) == expected
    if (layers, ansatz, readout, bias) == (2, "ry", "z", True):
        assert expected == 5_760 + 576 + 10 * layers  # n d_out + d_out bias + L n


def test_zero_input_gives_zero_delta() -> None:
    torch.manual_seed(0)
    base = torch.nn.Linear(24, 8)
    layer = QAALinear(base, 2)
    with torch.no_grad():
        layer.qaa_up.normal_()
        layer.qaa_bias.normal_()
    x = torch.randn(3, 5, 24)
    x[0, 1] = 0
    x[2] = 0
    delta = layer(x) - base(x)
    assert torch.count_nonzero(delta[0, 1]) == 0 and torch.count_nonzero(delta[2]) == 0
    assert delta[0, 0].abs().max() > 0
    layer.to_inference()
    inference_delta = layer(x) - base(x)
    assert torch.count_nonzero(inference_delta[0, 1]) == 0 and torch.count_nonzero(inference_delta[2]) == 0
    zeros = torch.zeros(4, 24, requires_grad=True)
    layer.to_training()
    out = layer.update(zeros)
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert torch.count_nonzero(zeros.grad) == 0
    # the bias learns from the present tokens only: 9 of the 15 have an input
    layer.qaa_bias.grad = None
    layer.update(x).sum().backward()
    torch.testing.assert_close(layer.qaa_bias.grad, torch.full((8,), 9.0 * layer.scale))


def test_the_update_is_the_circuit_readout_times_w_up() -> None:
    torch.manual_seed(1)
    base = torch.nn.Linear(12, 5, dtype=torch.float64)
    layer = QAALinear(base, 2, scale=0.5)
    with torch.no_grad():
        layer.qaa_up.normal_()
        layer.qaa_bias.normal_()
    x = torch.randn(7, 12, dtype=torch.float64)
    z = simulate(x, layer.qaa_angles.double(), CircuitSpec(4, 2))
    expected = 0.5 * (z @ layer.qaa_up.double().T + layer.qaa_bias.double())
    torch.testing.assert_close(layer(x) - base(x), expected)


@pytest.mark.parametrize("base_kind", ["linear", "linear-no-bias", "conv1d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_training_forward_adds_into_the_base_output_and_keeps_every_gradient(base_kind: str, dtype) -> None:
    # the training path adds the update into the base layer's own output in place: the output and every gradient
    # (input, base weight, W_up, bias, angles) must equal base(x) + update(x) taken apart
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(4)
    base = Conv1D(8, 24) if base_kind == "conv1d" else torch.nn.Linear(24, 8, bias=base_kind == "linear")
    base = base.to(dtype)
    layer = QAALinear(base, 2, scale=0.7)
    with torch.no_grad():
        layer.qaa_up.normal_()
        layer.qaa_bias.normal_()
    x = torch.randn(3, 5, 24, dtype=dtype)
    weight = torch.randn(3, 5, 8, dtype=dtype)
    grads = []
    for together in (True, False):
        xi = x.clone().requires_grad_()
        out = layer(xi) if together else base(xi) + layer.update(xi).to(dtype)
        params = [xi, base.weight, layer.qaa_up, layer.qaa_bias, layer.qaa_angles]
        base.weight.requires_grad_(True)  # frozen by the layer; its gradient still shows the output is right
        grads.append((out.detach(), torch.autograd.grad((out * weight).sum(), params)))
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=tolerance)
    for got, expected in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=tolerance)


def graph_node_objects(tensor: torch.Tensor) -> list:
    """Every node in the autograd graph behind tensor."""
    seen, nodes, stack = set(), [], [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return nodes


def graph_nodes(tensor: torch.Tensor) -> set[str]:
    """The names of every node in the autograd graph behind tensor."""
    return {type(node).__name__ for node in graph_node_objects(tensor)}


@pytest.mark.parametrize("base_kind", ["linear", "linear_no_bias"])
def test_the_in_place_update_copies_no_gradient_in_backward(base_kind: str) -> None:
    # Added in place into a view of the base layer's output, the update would make autograd copy the whole output
    # gradient in backward (a CopySlices node: 1.2 MB a module call in a SmolLM2 step): the base layer runs on the
    # tokens as rows, and the update goes into that output itself.
    layer = QAALinear(torch.nn.Linear(24, 8, bias=base_kind == "linear"), 2)
    out = layer(torch.randn(3, 5, 24, requires_grad=True))
    assert out.shape == (3, 5, 8)
    names = graph_nodes(out)
    assert "AddmmBackward0" in names and "CopySlices" not in names, names


@pytest.mark.parametrize("bias", [True, False])
def test_the_update_matrix_reaches_backward_in_the_fast_orientation(bias: bool) -> None:
    # autograd's matrix-multiply backward keeps the layout of the matrix it was given: handed [W_up | b] transposed
    # (a view), it took the two products of backward as (output gradient)^T z and g [W_up | b], the slow orientation
    # of these tall, narrow shapes (0.56 ms a module call at SmolLM2's width, 0.24 ms contiguous in (readout, out)).
    layer = QAALinear(torch.nn.Linear(24, 8, bias=False).requires_grad_(False), 2, bias=bias)
    out = layer(torch.randn(3, 5, 24, requires_grad=True))
    nodes = [node for node in graph_node_objects(out) if type(node).__name__ == "AddmmBackward0"]
    assert len(nodes) == 1
    matrix, readout = nodes[0]._saved_mat2, layer.spec.output_dim + bias
    assert matrix.shape == (readout, 8) and matrix.is_contiguous()
    with torch.profiler.profile(record_shapes=True) as profile:
        out.sum().backward()
    products = [e.input_shapes[:2] for e in profile.events() if e.name == "aten::mm"]
    assert [[readout, 15], [15, 8]] in products and [[8, 15], [15, readout]] not in products, products


def test_the_circuit_input_gradient_is_added_into_the_base_layers_in_place() -> None:
    # Both the base layer and the circuit send a gradient to the input; autograd adds the second into the first
    # in place only where it holds the first's last reference, which it did for the base layer's (the circuit's
    # was copied into a new tensor: 0.1-0.3 ms a module call in a SmolLM2 step).
    layer = QAALinear(torch.nn.Linear(24, 8, bias=False).requires_grad_(False), 2)
    x = torch.randn(3, 5, 24, requires_grad=True)
    out = layer(x)
    with torch.profiler.profile(record_shapes=True) as profile:
        out.sum().backward()
    new_sums = [e for e in profile.events() if e.name == "aten::add" and e.input_shapes[:2] == [[15, 24], [15, 24]]]
    assert new_sums == []
    assert x.grad is not None


def test_under_bf16_autocast_the_circuit_runs_in_float32() -> None:
    torch.manual_seed(2)
    base = torch.nn.Linear(40, 16)
    layer = QAALinear(base, 2)
    with torch.no_grad():
        layer.qaa_up.normal_()
    x = torch.randn(6, 40)
    exact = layer.update(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        update = layer.update(x)
    assert out.dtype == torch.bfloat16 and update.dtype == torch.float32
    torch.testing.assert_close(update, exact)
    torch.testing.assert_close(out.float() - base(x).bfloat16().float(), exact, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("ansatz", ["ry", "ry_rz"])  # the fused CPU kernel, and the PyTorch one
def test_inference_form_gives_the_training_forms_logits_without_autograd(tiny_model_dir: Path, ansatz: str) -> None:
    torch.manual_seed(0)
    model, _ = prepared(tiny_model_dir, target_modules="all-linear", ansatz=ansatz)
    randomise(model)
    ids = torch.randint(2, 100, (2, 9))
    training_form = logits(model, ids)
    for _, layer in qaa_layers(model):
        layer.to_inference()
    with torch.no_grad():  # the update is added into the base layer's output in place
        torch.testing.assert_close(model(input_ids=ids).logits, training_form, rtol=1e-5, atol=1e-5)
    model.requires_grad_(True)
    out = model(input_ids=ids).logits  # out of place: the base output is in the graph
    torch.testing.assert_close(out.detach(), training_form, rtol=1e-5, atol=1e-5)
    # The inference branch builds no graph: only the frozen path is differentiable.
    layer = next(layer for _, layer in qaa_layers(model))
    x = torch.randn(3, layer.in_features, requires_grad=True)
    assert not layer._inference_update(x).requires_grad
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.autograd.grad(layer.base_layer(x).sum(), x)[0])


def test_save_and_load_give_the_same_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    method = get_method("qaa")
    model, config = prepared(tiny_model_dir, layers=3, bias=False, scale=2.0)
    randomise_no_bias = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, layer in qaa_layers(model):
            layer.qaa_up.copy_(torch.randn(layer.qaa_up.shape, generator=randomise_no_bias))
    ids = torch.randint(2, 100, (2, 9))
    before = logits(model, ids)
    method.save(model, config, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    loaded = method.load(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    assert all(layer.inference_form and layer.spec.n_layers == 3 and not layer.has_bias
               for _, layer in qaa_layers(loaded))
    assert trainable_parameter_count(loaded) == 0
    torch.testing.assert_close(logits(loaded, ids), before, rtol=1e-5, atol=1e-5)


def test_bad_options_are_usage_errors(tiny_llama_dir: Path) -> None:
    for options, message in [({"layers": 0}, "at least one circuit layer"), ({"ansatz": "rx"}, "unknown QAA ansatz"),
                             ({"readout": "x"}, "unknown QAA readout"), ({"scale": 0.0}, "scale"),
                             ({"angle_init": "big"}, "angle_init"), ({"learning_rate": -1.0}, "learning_rate"),
                             ({"angle_learning_rate": -1.0}, "angle_learning_rate")]:
        with pytest.raises(UsageError, match=message):
            QAAConfig(**options).validate()
    with pytest.raises(UsageError, match="match no linear layer"):
        prepared(tiny_llama_dir, target_modules="no_such_proj")
    for options, message in [({"shots": -1}, "non-negative"), ({"depolarizing": 1.5}, r"\[0, 1\]"),
                             ({"depolarizing": -0.1}, r"\[0, 1\]")]:
        with pytest.raises(UsageError, match=message):
            QAAEvalOptions(**options).validate()
    model, _ = prepared(tiny_llama_dir)
    with pytest.raises(UsageError, match="non-negative"):
        get_method("qaa").set_eval_options(model, QAAEvalOptions(shots=-5))


def test_bad_options_fail_on_the_command_line(tiny_llama_dir: Path, toy_data_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    common = ["--model", str(tiny_llama_dir), "--dataset", str(toy_data_dir), *FAST, "--steps", "1"]
    for flags, message in [(["--qaa-layers", "0"], "at least one circuit layer"),
                           (["--qaa-ansatz", "rx"], "unknown QAA ansatz"),
                           (["--qaa-readout", "x"], "unknown QAA readout"),
                           (["--qaa-target-modules", "nowhere"], "match no linear layer")]:
        capsys.readouterr()
        code = main(["train", "--method", "qaa", "--output", str(tmp_path / flags[1]), *common, *flags])
        assert code == 2
        assert message in capsys.readouterr().err
    lora_run = tmp_path / "lora-run"
    lora_run.mkdir()
    (lora_run / "config.json").write_text(json.dumps({"method": "lora"}))
    capsys.readouterr()
    assert main(["qasm", str(lora_run)]) == 2
    assert "not a QAA run" in capsys.readouterr().err


# A trained run: training, export, shots and noise, capacity --------------------------------------


def test_training_lowers_the_loss_and_records_resources(trained_run: tuple[Path, Path]) -> None:
    run, _ = trained_run
    with (run / "train_log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(row["loss"]) for row in rows]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.98 * sum(losses[:5]) / 5
    assert float(rows[-1]["qaa_up_norm"]) > 0
    metrics = json.loads((run / "metrics.json").read_text())
    adapter = read_adapter(run / "adapter")
    assert metrics["qaa_adapters"] == len(adapter.modules) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    total = metrics["qaa_resources"]["total"]
    tokens = int(rows[-1]["tokens_seen"]) / 30
    assert total["tokens_per_step"] == pytest.approx(tokens)
    assert total["circuit_runs_per_step"] == pytest.approx(14 * tokens)
    entry = metrics["qaa_resources"]["per_adapter"]["model.layers.0.self_attn.q_proj"]
    assert entry["qubits"] == 5 and entry["rotations"] == 10 and entry["cnots"] == 10
    assert entry["state_prep"]["cnots"] > 0
    assert total["state_prep_cnots_per_step"] == pytest.approx(
        tokens * sum(e["state_prep"]["cnots"] for e in metrics["qaa_resources"]["per_adapter"].values()))
    # the optimiser gave the angles their own rate
    assert json.loads((run / "config.json").read_text())["method_config"]["angle_learning_rate"] == 0.05


def test_qasm_export_round_trips_through_qiskit(trained_run: tuple[Path, Path]) -> None:
    from qiskit import qasm2
    from qiskit.circuit.library import StatePreparation
    from qiskit.quantum_info import Statevector

    run, _ = trained_run
    assert main(["qasm", str(run)]) == 0
    adapter = read_adapter(run / "adapter")
    for name in adapter.modules:
        assert (run / "qasm" / f"{name}.qasm").exists() and (run / "qasm" / f"{name}.qasm3").exists()
    index = json.loads((run / "qasm" / "index.json").read_text())
    assert set(index["modules"]) == set(adapter.modules)
    assert main(["qasm", str(run), "--output", str(run / "only3"), "--version", "3"]) == 0
    assert not list((run / "only3").glob("*.qasm")) and list((run / "only3").glob("*.qasm3"))

    name = "model.layers.1.mlp.down_proj"  # 64 inputs: 6 qubits
    module = adapter.modules[name]
    circuit = qasm2.loads((run / "qasm" / f"{name}.qasm").read_text())
    x = torch.randn(module.in_features, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    n = module.spec.n_qubits
    amplitudes = torch.zeros(2**n, dtype=torch.float64)
    amplitudes[: x.shape[0]] = x / x.norm()
    full = circuit.copy_empty_like()
    full.append(StatePreparation(amplitudes.tolist()), range(n))
    full.compose(circuit, inplace=True)
    probs = torch.tensor(Statevector(full).probabilities(), dtype=torch.float64)
    # Qiskit's qubit n-1-q is qpeft's wire q: bit q of an index, from the most significant end.
    index_bits = (torch.arange(2**n)[:, None] >> (n - 1 - torch.arange(n))) & 1
    readout = probs @ (1 - 2 * index_bits).double()
    expected = simulate(x, module.angles.double(), module.spec)
    torch.testing.assert_close(readout, expected, atol=1e-8, rtol=0)
    # the same through to_qiskit with the state preparation built in
    direct = torch.tensor(Statevector(to_qiskit(module.spec, module.angles, x)).probabilities(), dtype=torch.float64)
    torch.testing.assert_close(direct, probs, atol=1e-10, rtol=0)


def test_shot_evaluation_is_seeded(trained_run: tuple[Path, Path]) -> None:
    run, data = trained_run
    for tag in ("a", "b"):
        assert main(["evaluate", str(run), "--data-dir", str(data), "--qaa-shots", "20", "--qaa-noise-seed", "7",
                     "--tag", tag]) == 0
    first, second = (json.loads((run / f"metrics_{tag}.json").read_text()) for tag in ("a", "b"))
    for key in ("bleu", "rougeL", "test_loss"):
        assert first[key] == second[key]
    assert (run / "predictions_a.jsonl").read_text() == (run / "predictions_b.jsonl").read_text()
    exact = json.loads((run / "metrics.json").read_text())
    assert first["test_loss"] != exact["test_loss"]  # 20 shots are not the exact readout
    assert main(["evaluate", str(run), "--data-dir", str(data), "--qaa-depolarizing", "0.05", "--tag", "dep"]) == 0
    assert json.loads((run / "metrics_dep.json").read_text())["test_loss"] != exact["test_loss"]


def test_hardware_noise_evaluation_from_the_cli(trained_run: tuple[Path, Path],
                                               capsys: pytest.CaptureFixture) -> None:
    run, data = trained_run
    exact = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--data-dir", str(data), "--qaa-gate-errors", "0,0,0", "--tag", "hw0"]) == 0
    assert json.loads((run / "metrics_hw0.json").read_text())["test_loss"] == pytest.approx(exact["test_loss"],
                                                                                             rel=1e-5)
    predictions = [json.loads(line)["prediction"] for line in (run / "predictions.jsonl").read_text().splitlines()]
    at_zero = [json.loads(line)["prediction"] for line in (run / "predictions_hw0.jsonl").read_text().splitlines()]
    assert at_zero == predictions
    assert main(["evaluate", str(run), "--data-dir", str(data), "--qaa-device", "quantinuum-h2", "--tag", "h2"]) == 0
    assert json.loads((run / "metrics_h2.json").read_text())["test_loss"] != pytest.approx(exact["test_loss"],
                                                                                            rel=1e-5)
    capsys.readouterr()
    for flags, message in ((["--qaa-device", "ibm-eagle"], "unknown QAA device profile 'ibm-eagle'"),
                           (["--qaa-device", "ibm-heron", "--qaa-depolarizing", "0.1"],
                            "choose one noise model, not --qaa-depolarizing and --qaa-device"),
                           (["--qaa-gate-errors", "1e-3,2"], "takes three numbers")):
        assert main(["evaluate", str(run), "--data-dir", str(data), *flags, "--tag", "bad"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (run / "metrics_bad.json").exists()


def test_hardware_noise_on_a_layer_scales_its_readout_by_the_circuit_fidelity() -> None:
    from qpeft.quantum.hardware import GateErrors, circuit_fidelity, device_circuit, gate_counts

    torch.manual_seed(4)
    base = torch.nn.Linear(20, 6)
    layer = QAALinear(base, 2)
    with torch.no_grad():
        layer.qaa_up.normal_()
    x = torch.randn(3, 20)
    exact_z = simulate(x, layer.qaa_angles.detach(), layer.spec)
    errors = GateErrors(1e-4, 1e-3, 1e-2)
    layer.set_noise(None, 0.0, 0, (errors, "all-to-all"))
    fidelity = circuit_fidelity(gate_counts(device_circuit(5, 2, "ry")), errors)
    assert 0.9 < fidelity < 1
    with torch.no_grad():
        # <Z_q> times F and (1 - 2 * 0.01) for the readout flips; the bias is zero
        torch.testing.assert_close(layer(x) - base(x), (exact_z * fidelity * 0.98) @ layer.qaa_up.T)
    layer.set_noise(None, 0.0, 0, (GateErrors(0, 0, 0), "all-to-all"))
    with torch.no_grad():
        torch.testing.assert_close(layer(x) - base(x), exact_z @ layer.qaa_up.T)


def test_sampled_readout_converges_to_the_exact_update() -> None:
    torch.manual_seed(3)
    base = torch.nn.Linear(20, 6)
    layer = QAALinear(base, 2)
    with torch.no_grad():
        layer.qaa_up.normal_()
        layer.qaa_bias.normal_()
    x = torch.randn(20)
    exact = layer(x[None]) - base(x[None])
    shots, tokens = 200, 500
    get_method("qaa").set_eval_options(torch.nn.Sequential(layer), QAAEvalOptions(shots=shots, noise_seed=1))
    with torch.no_grad():
        sampled = layer(x.expand(tokens, 20)) - base(x.expand(tokens, 20))
    assert not torch.allclose(sampled[0], sampled[1])  # every token draws its own shots
    # each z_q estimate has variance <= 1 / shots, so |W_up (z_hat - z)| <= |W_up row| |z_hat - z|
    bound = 5 * layer.qaa_up.norm(dim=1) * math.sqrt(layer.n_qubits / (shots * tokens))
    assert ((sampled.mean(0) - exact[0]).abs() <= bound).all()
    layer.set_noise(None, 0.0, 0)
    torch.testing.assert_close(layer(x[None]) - base(x[None]), exact)


def test_jacobian_rank_of_a_real_layer_is_at_most_n(trained_run: tuple[Path, Path]) -> None:
    from qpeft.experiment.runs import load_run

    run, _ = trained_run
    model, _, _ = load_run(run)
    ids = torch.randint(2, 100, (2, 6))
    capacity = get_method("qaa").capacity(model, model, ids)
    assert set(capacity) == {name for name, _ in qaa_layers(model)}
    for name, entry in capacity.items():
        layer = model.get_submodule(name)
        assert entry["kind"] == "jacobian" and entry["bound"] == min(layer.n_qubits, layer.out_features)
        assert 1 <= entry["update_jacobian_rank"] <= entry["bound"] == entry["n_qubits"]
        assert all(rank <= layer.n_qubits for rank in entry["ranks"])


def loss_with_w_up_zeroed(run: Path, data: Path) -> float:
    """The run's test loss with every W_up zeroed in a copy of its adapter: the update is then s b for every token."""
    from safetensors.torch import load_file, save_file

    from qpeft.experiment.runs import evaluate_run

    copy = run.parent / "run-without-w-up"
    shutil.copytree(run, copy, dirs_exist_ok=True)
    weights = copy / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    save_file({name: torch.zeros_like(t) if name.endswith("qaa_up") else t for name, t in tensors.items()}, weights)
    return evaluate_run(copy, str(data), {"test_loss": True, "metrics": "default"}, tag="no-w-up")["test_loss"]


def test_compare_re_evaluates_qaa_on_its_robustness_grid(trained_run: tuple[Path, Path]) -> None:
    from qpeft.experiment.compare import robustness_figures

    run, data = trained_run
    assert robustness_figures(run, "lora", {}, str(data)) == []  # no grid, no re-evaluation
    metrics = json.loads((run / "metrics.json").read_text())
    rows = robustness_figures(run, "qaa", metrics, str(data))
    assert [(row["shots"], row["depolarizing"], row["gate_errors"], row["device"]) for row in rows] == [
        (None, 0, None, None), (100, 0, None, None), (1000, 0, None, None), (10000, 0, None, None),
        (100000, 0, None, None), (1000000, 0, None, None), (None, 0, [1e-3, 1e-2, 1e-2], None),
        (None, 0, [1e-4, 1e-3, 1e-3], None), (None, 0, [1e-5, 1e-4, 1e-4], None), (None, 0, [1e-6, 1e-5, 1e-5], None),
        (None, 0, [4.6e-4, 1.8e-3, 9.5e-3], "ibm-heron"), (None, 0, [1.8e-5, 1.0e-3, 1.6e-3], "quantinuum-h2"),
        (None, 1.0, None, None)]  # the circuit fully depolarised: its output the same for every token
    assert rows[0]["bleu"] == metrics["bleu"] and rows[0]["predictions_unchanged_pct"] == 100.0
    assert rows[0]["test_loss"] == metrics["test_loss"]
    for row in rows:
        assert {"bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1", "test_loss"} <= set(row)
        assert isinstance(row["bleu"], float) and 0 <= row["predictions_unchanged_pct"] <= 100
    # 1,000,000 shots sit closer to the exact readout than 100: at least as many predictions unchanged
    assert rows[5]["predictions_unchanged_pct"] >= rows[1]["predictions_unchanged_pct"]
    tags = ("shots100", "shots1000", "gates0.001-0.01-0.01", "device-ibm-heron", "device-quantinuum-h2", "dep1")
    files = {tag: run / f"metrics_{tag}.json" for tag in tags}
    assert all(path.exists() for path in files.values())
    # the test loss where no shots are drawn (exact expectations: one forward pass), never the exact run's carried over
    assert [row["test_loss"] is None for row in rows[1:]] == [True] * 5 + [False] * 7
    assert all(row["test_loss"] != rows[0]["test_loss"] for row in rows[6:])
    # fully depolarised, the update is s b for every token: exactly the adapter with W_up zeroed
    assert rows[-1]["test_loss"] == pytest.approx(loss_with_w_up_zeroed(run, data), abs=1e-4)
    stamps = {tag: path.stat().st_mtime_ns for tag, path in files.items()}
    assert robustness_figures(run, "qaa", metrics, str(data)) == rows  # finished settings are reused
    assert {tag: path.stat().st_mtime_ns for tag, path in files.items()} == stamps


def test_robustness_names_the_settings_re_evaluated(trained_run: tuple[Path, Path]) -> None:
    from qpeft.experiment.compare import robustness_figures, robustness_settings

    run, data = trained_run
    assert robustness_settings("qaa", "default") == list(ROBUSTNESS_GRID)
    assert robustness_settings("qaa", "none") == []
    assert robustness_settings("lora", "shots=1000") == []  # LoRA has no inference options to vary
    assert robustness_settings("qaa", " shots=1000, depolarizing=0.02") == [
        QAAEvalOptions(shots=1000), QAAEvalOptions(depolarizing=0.02)]
    metrics = json.loads((run / "metrics.json").read_text())
    rows = robustness_figures(run, "qaa", metrics, str(data), "depolarizing=0.02, device=ibm-heron")
    assert [(row["shots"], row["depolarizing"], row["device"]) for row in rows] == [
        (None, 0.0, None), (None, 0.02, None), (None, 0.0, "ibm-heron")]
    assert (run / "metrics_dep0.02.json").exists() and (run / "metrics_device-ibm-heron.json").exists()
    assert robustness_figures(run, "qaa", metrics, str(data), "none") == []

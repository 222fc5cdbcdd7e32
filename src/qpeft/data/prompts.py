"""Prompt formatting and tokenisation with the loss on target tokens only."""

from __future__ import annotations

import logging

from transformers import PreTrainedTokenizerBase

from qpeft.data import Example
from qpeft.errors import UsageError

log = logging.getLogger(__name__)

TEMPLATES = ("plain", "chat")
PLAIN_TEMPLATE = "Input: {input}\nOutput:"
IGNORE_INDEX = -100


def format_prompt(text: str, tokenizer: PreTrainedTokenizerBase, template: str = "plain") -> str:
    """The text the model sees before the target.

    ``plain`` (default): ``"Input: <input>\\nOutput:"``; the target follows after a space.
    ``chat``: the tokenizer's own chat template with the input as the user turn and the
    assistant turn opened, for instruction-tuned models.
    """
    if template == "plain":
        return PLAIN_TEMPLATE.format(input=text)
    if template == "chat":
        if not tokenizer.chat_template:
            raise UsageError("--template chat: this tokenizer has no chat template")
        messages = [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise UsageError(f"unknown template {template!r} (choose from {', '.join(TEMPLATES)})")


def target_text(target: str, template: str) -> str:
    return " " + target if template == "plain" else target


def encode_prompt(text: str, tokenizer: PreTrainedTokenizerBase, template: str) -> list[int]:
    prompt = format_prompt(text, tokenizer, template)
    # A chat template already writes the model's special tokens.
    return tokenizer(prompt, add_special_tokens=template == "plain")["input_ids"]


def encode_examples(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
) -> list[dict[str, list[int]]]:
    """Token ids with EOS appended and prompt tokens masked out of the labels.

    Examples longer than ``max_length`` are cut at the end, with one warning that counts them.
    """
    encoded, truncated = [], 0
    for example in examples:
        prompt = encode_prompt(example.input, tokenizer, template)
        target = tokenizer(target_text(example.target, template), add_special_tokens=False)["input_ids"]
        target = target + [tokenizer.eos_token_id]
        input_ids = prompt + target
        labels = [IGNORE_INDEX] * len(prompt) + target
        if len(input_ids) > max_length:
            truncated += 1
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        encoded.append({"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)})
    if truncated:
        log.warning("%d of %d examples were longer than --max-length %d tokens and were truncated",
                    truncated, len(examples), max_length)
    return encoded

"""Prompt formatting and tokenisation with the loss on target tokens only."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from qpeft.data.types import Example
from qpeft.utils.errors import UsageError

log = logging.getLogger(__name__)

TEMPLATES = ("plain", "chat")
PLAIN_TEMPLATE = "Input: {input}\nOutput:"
IGNORE_INDEX = -100


def format_prompt(
    text: str, tokenizer: PreTrainedTokenizerBase, template: str = "plain", shots: Sequence[Example] = ()
) -> str:
    """The text the model sees before the target.

    ``plain`` (default): ``"Input: <input>\\nOutput:"``; the target follows after a space.
    ``chat``: the tokenizer's own chat template with the input as the user turn and the
    assistant turn opened, for instruction-tuned models.
    ``shots``: solved examples shown first, in the same format (the few-shot baseline): one
    ``Input: ...\\nOutput: ...`` block each, separated by a blank line, or one user and
    assistant turn each.
    """
    if template == "plain":
        solved = "".join(PLAIN_TEMPLATE.format(input=s.input) + target_text(s.target, template) + "\n\n" for s in shots)
        return solved + PLAIN_TEMPLATE.format(input=text)
    if template == "chat":
        if not tokenizer.chat_template:
            raise UsageError("--template chat: this tokenizer has no chat template")
        messages = [turn for s in shots for turn in ({"role": "user", "content": s.input},
                                                      {"role": "assistant", "content": s.target})]
        messages.append({"role": "user", "content": text})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise UsageError(f"unknown template {template!r} (choose from {', '.join(TEMPLATES)})")


def target_text(target: str, template: str) -> str:
    return " " + target if template == "plain" else target


def encode_prompt(
    text: str, tokenizer: PreTrainedTokenizerBase, template: str, shots: Sequence[Example] = ()
) -> list[int]:
    prompt = format_prompt(text, tokenizer, template, shots)
    # A chat template already writes the model's special tokens.
    return tokenizer(prompt, add_special_tokens=template == "plain")["input_ids"]


def encode_example(
    example: Example, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int, shots: Sequence[Example] = ()
) -> tuple[dict[str, list[int]], bool]:
    """Token ids of one example with EOS appended and prompt tokens masked out of the labels, cut
    to ``max_length`` tokens; and whether it was cut."""
    prompt = encode_prompt(example.input, tokenizer, template, shots)
    target = tokenizer(target_text(example.target, template), add_special_tokens=False)["input_ids"]
    target = target + [tokenizer.eos_token_id]
    input_ids = prompt + target
    labels = [IGNORE_INDEX] * len(prompt) + target
    cut = len(input_ids) > max_length
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)}, cut


def encode_examples(
    examples: list[Example],
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    max_length: int,
    shots: Sequence[Example] = (),
) -> list[dict[str, list[int]]]:
    """``encode_example`` for each example, with one warning that counts the cut ones.

    ``max_length`` does not count the ``shots`` shown before each example.
    """
    shot_tokens = len(encode_prompt("", tokenizer, template, shots)) - len(encode_prompt("", tokenizer, template))
    pairs = [encode_example(example, tokenizer, template, max_length + shot_tokens, shots) for example in examples]
    warn_truncated(sum(cut for _, cut in pairs), len(pairs), max_length)
    return [encoded for encoded, _ in pairs]


def warn_truncated(truncated: int, count: int, max_length: int) -> None:
    if truncated:
        log.warning("%d of %d examples were longer than --max-length %d tokens and were truncated",
                    truncated, count, max_length)

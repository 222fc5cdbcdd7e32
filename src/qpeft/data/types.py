"""The data types every loader returns, and the splitting helpers the loaders share."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    input: str
    target: str


@dataclass(frozen=True)
class TestItem:
    input: str
    references: tuple[str, ...]


@dataclass
class DataSplits:
    name: str
    train: list[Example]
    validation: list[Example]
    test: list[TestItem]


def reference_pairs(items: list[TestItem]) -> list[Example]:
    """Every (input, reference) pair of the test items, for the test loss."""
    return [Example(item.input, ref) for item in items for ref in item.references]


def group_by_input(rows: list[Example]) -> list[TestItem]:
    grouped: dict[str, list[str]] = {}
    for row in rows:
        grouped.setdefault(row.input, []).append(row.target)
    return [TestItem(text, tuple(refs)) for text, refs in grouped.items()]


def split_by_input(
    rows: list[Example], fractions: tuple[float, ...], seed: int
) -> list[list[Example]]:
    """Split rows into parts of roughly the given input shares, never splitting one input.

    With at least as many distinct inputs as parts, every part gets one or more of them.
    """
    inputs = list(dict.fromkeys(row.input for row in rows))
    random.Random(seed).shuffle(inputs)
    bounds, start = [], 0
    for part, share in enumerate(fractions[:-1]):
        later_parts = len(fractions) - 1 - part
        stop = start + max(1, min(round(share * len(inputs)), len(inputs) - start - later_parts))
        bounds.append((start, stop))
        start = stop
    bounds.append((start, len(inputs)))
    part_of = {text: i for i, (lo, hi) in enumerate(bounds) for text in inputs[lo:hi]}
    parts: list[list[Example]] = [[] for _ in fractions]
    for row in rows:
        parts[part_of[row.input]].append(row)
    return parts

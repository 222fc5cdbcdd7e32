"""Data sets as train / validation / test splits of (input, target) pairs.

Test items group every row that shares an input: each is generated once and scored
against all its references, as the E2E challenge does.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from qpeft.errors import UsageError


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
    notes: list[str] = field(default_factory=list)


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
    """Split rows into parts of roughly the given input shares, never splitting one input."""
    inputs = list(dict.fromkeys(row.input for row in rows))
    random.Random(seed).shuffle(inputs)
    bounds, start = [], 0
    for share in fractions[:-1]:
        stop = start + max(1, round(share * len(inputs)))
        bounds.append((start, stop))
        start = stop
    bounds.append((start, len(inputs)))
    part_of = {text: i for i, (lo, hi) in enumerate(bounds) for text in inputs[lo:hi]}
    parts: list[list[Example]] = [[] for _ in fractions]
    for row in rows:
        parts[part_of[row.input]].append(row)
    return parts


def resolve_data_dir(data_dir: str | None) -> Path | None:
    value = data_dir or os.environ.get("QPEFT_DATA_DIR")
    return Path(value) if value else None


def load_splits(
    dataset: str,
    data_dir: str | None = None,
    input_column: str = "input",
    target_column: str = "target",
    validation_fraction: float = 0.05,
    seed: int = 0,
) -> DataSplits:
    """``dataset`` is ``e2e`` or a path to a JSONL/CSV file or a folder with train/test files."""
    from qpeft.data import e2e, files

    if dataset == "e2e":
        return e2e.load(resolve_data_dir(data_dir), validation_fraction, seed)
    path = Path(dataset)
    if not path.exists():
        raise UsageError(f"unknown dataset {dataset!r}: use 'e2e' or a path to a .jsonl/.csv file or folder")
    return files.load(path, input_column, target_column, validation_fraction, seed)

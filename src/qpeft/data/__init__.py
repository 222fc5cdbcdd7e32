"""Data sets as train / validation / test splits of (input, target) pairs.

Test items group every row that shares an input: each is generated once and scored
against all its references, as the E2E challenge does. The types live in ``data.types``;
``load_splits`` picks the loader.
"""

from __future__ import annotations

import os
from pathlib import Path

from qpeft.data import e2e, files
from qpeft.data.types import DataSplits, Example, TestItem, group_by_input, reference_pairs, split_by_input
from qpeft.utils.errors import UsageError

__all__ = [
    "DataSplits", "Example", "TestItem", "group_by_input", "load_splits", "reference_pairs", "resolve_data_dir",
    "split_by_input",
]


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
    if dataset == "e2e":
        return e2e.load(resolve_data_dir(data_dir), validation_fraction, seed)
    path = Path(dataset)
    if not path.exists():
        raise UsageError(f"unknown dataset {dataset!r}: use 'e2e' or a path to a .jsonl/.csv file or folder")
    return files.load(path, input_column, target_column, validation_fraction, seed)

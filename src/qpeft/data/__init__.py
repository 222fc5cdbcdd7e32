"""Data sets as train / validation / test splits of (input, target) pairs.

Test items group every row that shares an input: each is generated once and scored
against all its references, as the E2E challenge does. The types live in ``data.types``;
``load_splits`` picks the loader. The built-in data sets (``BUILTIN_TASKS``) are read from
``--data-dir`` / ``QPEFT_DATA_DIR``; each has its kind of task (``TASK_TYPES``).
"""

from __future__ import annotations

import os
from pathlib import Path

from qpeft.data import e2e, files
from qpeft.data.types import DataSplits, Example, TestItem, group_by_input, reference_pairs, split_by_input
from qpeft.utils.errors import UsageError

__all__ = [
    "BUILTIN_TASKS", "TASK_TYPES", "DataSplits", "Example", "TestItem", "group_by_input", "load_splits",
    "reference_pairs", "resolve_data_dir", "split_by_input",
]


TASK_TYPES = ("generation", "classification")
#: The data sets qpeft knows by name, each with its kind of task. Their sources and licences: the data folder's README.
BUILTIN_TASKS = {"e2e": "generation", "dart": "generation", "sst2": "classification", "rte": "classification"}
# where each folder-shaped built-in comes from, for the error that says it is missing
SOURCES = {
    "dart": "DART v1.1.1, github.com/Yale-LILY/dart",
    "sst2": "SST-2 from GLUE, gluebenchmark.com",
    "rte": "RTE from GLUE, gluebenchmark.com",
}


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
    """``dataset`` is a built-in name (``BUILTIN_TASKS``) or a path to a JSONL/CSV file or a folder with train/test
    files. A built-in folder is read with its own columns, ``input`` and ``target``."""
    if dataset == "e2e":
        return e2e.load(resolve_data_dir(data_dir), validation_fraction, seed)
    if dataset in BUILTIN_TASKS:
        # DART's official test split holds one empty reference (its input has others): left out, with a warning
        return files.load(builtin_folder(dataset, resolve_data_dir(data_dir)), "input", "target",
                          validation_fraction, seed, skip_empty_test_targets=dataset == "dart")
    path = Path(dataset)
    if not path.exists():
        raise UsageError(f"unknown dataset {dataset!r}: use one of {', '.join(BUILTIN_TASKS)} or a path to a "
                         ".jsonl/.csv file or folder")
    return files.load(path, input_column, target_column, validation_fraction, seed)


def builtin_folder(name: str, data_dir: Path | None) -> Path:
    """``DATA_DIR/<name>``, holding ``train.jsonl`` and ``test.jsonl``; else the one-line error that says so."""
    hint = (f"point --data-dir or QPEFT_DATA_DIR at a folder holding {name}/train.jsonl and {name}/test.jsonl "
            f"(source: {SOURCES[name]})")
    if data_dir is None:
        raise UsageError(f"no local copy of the {name} data set: {hint}")
    folder = data_dir / name
    if not ((folder / "train.jsonl").is_file() and (folder / "test.jsonl").is_file()):
        raise UsageError(f"{name} files not found under {data_dir}: {hint}")
    return folder

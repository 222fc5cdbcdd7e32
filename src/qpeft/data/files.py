"""User data: one JSONL or CSV file, or a folder holding ``train`` and ``test`` files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from qpeft.data.types import DataSplits, Example, group_by_input, split_by_input
from qpeft.utils.errors import UsageError

SUFFIXES = (".jsonl", ".csv")


def read_rows(path: Path, input_column: str, target_column: str) -> list[Example]:
    """Read (input, target) rows; any malformed content is a one-line UsageError."""
    if path.suffix not in SUFFIXES:
        raise UsageError(f"{path}: unsupported file type (use .jsonl or .csv)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not valid UTF-8 (byte {error.start})") from None
    records = _jsonl_records(path, text) if path.suffix == ".jsonl" else _csv_records(path, text)
    if not records:
        raise UsageError(f"{path}: no rows")
    rows = []
    for number, record in records:
        missing = [c for c in (input_column, target_column) if c not in record]
        if missing:
            raise UsageError(f"{path}: row {number} has no column {missing[0]!r} (columns: {sorted(record)})")
        source, target = record[input_column], record[target_column]
        if not isinstance(source, str) or not isinstance(target, str) or not source.strip():
            raise UsageError(f"{path}: row {number}: {input_column!r} and {target_column!r} must be text")
        rows.append(Example(source.strip(), target.strip()))
    return rows


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise UsageError(f"{path}: line {number} is not a JSON object")
        records.append((number, record))
    return records


def _csv_records(path: Path, text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines())
    try:
        records = [(number, row) for number, row in enumerate(reader, start=2)]
    except csv.Error as error:
        raise UsageError(f"{path}: malformed CSV ({error})") from None
    if reader.fieldnames is None:
        raise UsageError(f"{path}: no header row")
    for number, row in records:
        if None in row or None in row.values():
            raise UsageError(f"{path}: row {number} has a different number of fields than the header")
    return records


def _find_split_file(folder: Path, split: str) -> Path | None:
    for suffix in SUFFIXES:
        if (folder / f"{split}{suffix}").exists():
            return folder / f"{split}{suffix}"
    return None


def load(path: Path, input_column: str, target_column: str, validation_fraction: float, seed: int) -> DataSplits:
    if path.is_dir():
        train_file, test_file = _find_split_file(path, "train"), _find_split_file(path, "test")
        if train_file is None or test_file is None:
            raise UsageError(f"{path}: a data folder needs train.jsonl|csv and test.jsonl|csv")
        rows = read_rows(train_file, input_column, target_column)
        test_rows = read_rows(test_file, input_column, target_column)
        train, validation = split_by_input(rows, (1 - validation_fraction, validation_fraction), seed)
        return DataSplits(path.name, train, validation, group_by_input(test_rows))
    rows = read_rows(path, input_column, target_column)
    if len({row.input for row in rows}) < 3:
        raise UsageError(f"{path}: a single file needs at least 3 distinct inputs to split into train/validation/test")
    # a single file: split by input into 80% train, 10% validation, 10% test
    train, validation, test = split_by_input(rows, (0.8, 0.1, 0.1), seed)
    return DataSplits(path.stem, train, validation, group_by_input(test))

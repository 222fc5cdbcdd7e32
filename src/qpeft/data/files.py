"""User data: one JSONL or CSV file, or a folder holding ``train`` and ``test`` files."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

from qpeft.data.types import DataSplits, Example, group_by_input, split_by_input
from qpeft.utils.errors import UsageError

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".csv")


def read_rows(path: Path, input_column: str, target_column: str, skip_empty_targets: bool = False) -> list[Example]:
    """Read (input, target) rows; any malformed content is a one-line UsageError.

    An empty target is an error, unless ``skip_empty_targets`` (for a published test file known to hold
    some): then those rows are left out and a warning names them.
    """
    if path.suffix not in SUFFIXES:
        raise UsageError(f"{path}: unsupported file type (use .jsonl or .csv)")
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name. Decoded from
        # the bytes: read_text() would turn a quoted field's "\r\n" into "\n" before the csv module sees it.
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not valid UTF-8 (byte {error.start})") from None
    records = _jsonl_records(path, text) if path.suffix == ".jsonl" else _csv_records(path, text)
    if not records:
        raise UsageError(f"{path}: no rows")
    rows, skipped = [], []
    for number, record in records:
        missing = [c for c in (input_column, target_column) if c not in record]
        if missing:
            raise UsageError(f"{path}: row {number} has no column {missing[0]!r} (columns: {sorted(record)})")
        source, target = record[input_column], record[target_column]
        if not isinstance(source, str) or not isinstance(target, str):
            raise UsageError(f"{path}: row {number}: {input_column!r} and {target_column!r} must be text")
        if skip_empty_targets and not target.strip():
            skipped.append(number)
            continue
        for column, text in ((input_column, source), (target_column, target)):
            if not text.strip():
                # an empty target teaches only the end of text, and an empty reference scores nothing
                raise UsageError(f"{path}: row {number}: {column!r} is empty")
        rows.append(Example(source, target))  # as written: the data layer never changes a row
    if skipped:
        log.warning("%s: left out %d row(s) with an empty target (row %s)", path, len(skipped),
                    ", ".join(map(str, skipped)))
    return rows


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict]]:
    records = []
    # "\n" only: str.splitlines() also breaks at U+2028, \x1c and others, which JSON strings may hold raw
    for number, line in enumerate(text.split("\n"), start=1):
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
    # A stream, not text.splitlines(): a quoted field may hold a line break (and splitlines also
    # breaks at characters csv keeps inside fields). Rows are numbered by the line they start on.
    reader = csv.DictReader(io.StringIO(text, newline=""))
    _check_csv_header(path, reader)
    records, number = [], reader.line_num + 1
    try:
        for row in reader:
            records.append((number, row))
            number = reader.line_num + 1
    except csv.Error as error:
        raise UsageError(f"{path}: malformed CSV near line {reader.line_num} ({error})") from None
    for number, row in records:
        if None in row or None in row.values():
            raise UsageError(f"{path}: row {number} has a different number of fields than the header")
    return records


def _check_csv_header(path: Path, reader: csv.DictReader) -> None:
    try:
        header = reader.fieldnames
    except csv.Error as error:
        raise UsageError(f"{path}: malformed CSV header ({error})") from None
    if not header:
        raise UsageError(f"{path}: no header row")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        # csv.DictReader would keep the last of them silently
        raise UsageError(f"{path}: the header names column {repeated[0]!r} more than once")


def _find_split_file(folder: Path, split: str) -> Path | None:
    for suffix in SUFFIXES:
        if (folder / f"{split}{suffix}").exists():
            return folder / f"{split}{suffix}"
    return None


def load(path: Path, input_column: str, target_column: str, validation_fraction: float, seed: int,
         skip_empty_test_targets: bool = False) -> DataSplits:
    if path.is_dir():
        train_file, test_file = _find_split_file(path, "train"), _find_split_file(path, "test")
        if train_file is None or test_file is None:
            raise UsageError(f"{path}: a data folder needs train.jsonl|csv and test.jsonl|csv")
        rows = read_rows(train_file, input_column, target_column)
        test_rows = read_rows(test_file, input_column, target_column, skip_empty_test_targets)
        if len({row.input for row in rows}) < 2:
            raise UsageError(f"{train_file}: needs at least 2 distinct inputs to hold one out for validation")
        train, validation = split_by_input(rows, (1 - validation_fraction, validation_fraction), seed)
        return DataSplits(path.name, train, validation, group_by_input(test_rows))
    rows = read_rows(path, input_column, target_column)
    if len({row.input for row in rows}) < 3:
        raise UsageError(f"{path}: a single file needs at least 3 distinct inputs to split into train/validation/test")
    # a single file: split by input into 80% train, 10% validation, 10% test
    train, validation, test = split_by_input(rows, (0.8, 0.1, 0.1), seed)
    return DataSplits(path.stem, train, validation, group_by_input(test))

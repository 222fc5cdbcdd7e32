"""The E2E NLG Challenge data set (Novikova, Dusek and Rieser, SIGDIAL 2017).

Training rows come from ``devset.csv`` (the full 42k training split is too large for an
offline copy) with a validation slice held out by meaning representation; the test
split is ``testset_w_refs.csv``, grouped so that every MR carries all its references.
"""

from __future__ import annotations

from pathlib import Path

from qpeft.data import DataSplits, group_by_input, split_by_input
from qpeft.data.files import read_rows
from qpeft.errors import UsageError

TRAIN_FILE = "devset.csv"
TEST_FILE = "testset_w_refs.csv"
OFFICIAL_RELEASE = "https://github.com/tuetschek/e2e-dataset"


def find_folder(data_dir: Path | None) -> Path:
    hint = (
        f"point --data-dir or QPEFT_DATA_DIR at a folder holding e2e/{TRAIN_FILE} and "
        f"e2e/{TEST_FILE} (the official release is at {OFFICIAL_RELEASE})"
    )
    if data_dir is None:
        raise UsageError(f"no local copy of the E2E data set: {hint}")
    for folder in (data_dir / "e2e", data_dir):
        if (folder / TRAIN_FILE).exists() and (folder / TEST_FILE).exists():
            return folder
    raise UsageError(f"E2E files not found under {data_dir}: {hint}")


def load(data_dir: Path | None, validation_fraction: float, seed: int) -> DataSplits:
    folder = find_folder(data_dir)
    rows = read_rows(folder / TRAIN_FILE, "mr", "ref")
    train, validation = split_by_input(rows, (1 - validation_fraction, validation_fraction), seed)
    test = group_by_input(read_rows(folder / TEST_FILE, "mr", "ref"))
    return DataSplits("e2e", train, validation, test)

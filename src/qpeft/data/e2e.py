"""The E2E NLG Challenge data set (Novikova, Dusek and Rieser, SIGDIAL 2017).

Where the folder holds the official ``trainset.csv``, it trains on that and validates on
``devset.csv``. Otherwise (the offline copy has no 42k-row training split) it trains on
``devset.csv`` with a validation slice held out by meaning representation. The test split
is ``testset_w_refs.csv``, grouped so that every MR carries all its references.
"""

from __future__ import annotations

from pathlib import Path

from qpeft.data.files import read_rows
from qpeft.data.types import DataSplits, group_by_input, split_by_input
from qpeft.utils.errors import UsageError

OFFICIAL_TRAIN_FILE = "trainset.csv"
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
    test = group_by_input(read_rows(folder / TEST_FILE, "mr", "ref"))
    dev = read_rows(folder / TRAIN_FILE, "mr", "ref")
    if (folder / OFFICIAL_TRAIN_FILE).exists():
        train = read_rows(folder / OFFICIAL_TRAIN_FILE, "mr", "ref")
        return DataSplits("e2e", train, dev, test)  # the official split: trainset / devset / testset
    # trained on devset.csv less a validation slice held out by MR
    train, validation = split_by_input(dev, (1 - validation_fraction, validation_fraction), seed)
    return DataSplits("e2e", train, validation, test)

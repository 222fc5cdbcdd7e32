"""A run folder: one method trained and evaluated under one experiment's settings.

Layout: ``config.json`` (everything needed to reproduce the run), ``train_log.csv``,
``checkpoints/`` (while training), ``adapter/`` and ``training.json`` (when training ended; the
checkpoints, which only serve to resume it, are then deleted: for full fine-tuning they weigh
gigabytes), ``predictions.jsonl``, ``metrics.json``. ``metrics.json`` is written last, so its
presence means the run finished.
While a process works in the folder it holds ``.qpeft.lock`` (``qpeft.utils.locks``): one owner
at a time. ``RunDir`` is the one place that knows this layout and checks a folder against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qpeft.settings import Experiment
from qpeft.utils.atomic import read_json, write_json
from qpeft.utils.distributed import is_main_process, on_main_process
from qpeft.utils.errors import UsageError
from qpeft.utils.locks import acquire, holds_only_locks, release

#: What a comparison's folder records of its experiment; a folder holding another is refused.
EXPERIMENT_FILE = "experiment.json"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def training_path(self) -> Path:
        return self.path / "training.json"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def train_log(self) -> Path:
        return self.path / "train_log.csv"

    def predictions(self, tag: str = "") -> Path:
        return self.path / f"predictions{'_' + tag if tag else ''}.jsonl"

    def tagged_metrics(self, tag: str = "") -> Path:
        return self.path / f"metrics{'_' + tag if tag else ''}.json"

    def is_finished(self) -> bool:
        return self.metrics_path.exists()

    def metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json``, or nothing when it has not finished."""
        return read_json(self.metrics_path) if self.is_finished() else {}

    def is_trained(self) -> bool:
        """Whether training ended and recorded its figures (the run may still lack its evaluation)."""
        return self.training_path.exists() and self.adapter_dir.exists()

    def training(self) -> dict[str, Any]:
        """The figures training recorded (``training.json``)."""
        figures = read_json(self.training_path)
        if not isinstance(figures, dict):
            raise UsageError(f"{self.training_path} holds no JSON object; remove it to train the run again")
        return figures

    def config(self) -> dict[str, Any]:
        """The run's ``config.json``; a folder without one is a one-line error."""
        if not self.config_path.exists():
            raise UsageError(f"{self.path} is not a qpeft run folder (no config.json)")
        return read_json(self.config_path)

    def trained_adapter(self) -> Path:
        """The adapter folder, once training has written it."""
        if not self.adapter_dir.exists():
            raise UsageError(f"{self.path} has no trained adapter yet; run training to the end first")
        return self.adapter_dir

    def require(self, method: str, label: str, reason: str = "") -> Path:
        """The trained adapter of a run of ``method``; another method's run is a one-line error saying ``reason``."""
        found = self.config().get("method")
        if found != method:
            raise UsageError(f"{self.path} is a {found!r} run, not a {label} run" + (f": {reason}" if reason else ""))
        return self.trained_adapter()

    @contextlib.contextmanager
    def claimed(self, config: dict[str, Any]) -> Iterator[bool]:
        """Hold the folder for ``config`` while the block runs; yields True when the run already finished.

        A folder that holds a different experiment, or anything but a qpeft run, is never touched.
        """
        with claimed_folder(self.path, self.config_path, config, "run"):
            yield self.is_finished()


@contextlib.contextmanager
def claimed_folder(folder: Path, record_path: Path, record: dict[str, Any], kind: str) -> Iterator[None]:
    """Lock ``folder`` and record ``record`` in it (or check that it holds it) while the block runs.

    On the main process only: under ``torchrun``/``accelerate launch`` the others wait for the
    claim and share its outcome, so a refusal is one line on every process. ``kind`` names what
    the folder holds in messages ("run", "comparison").
    """
    def claim() -> None:
        if folder.exists() and not record_path.exists() and not holds_only_locks(folder):
            raise UsageError(f"{folder} is not empty and holds no qpeft {kind}; choose another output folder")
        acquire(folder)  # checked again below: another process may have recorded its own meanwhile
        try:
            if record_path.exists():
                if read_json(record_path) != record:
                    raise UsageError(f"{folder} holds a different experiment; choose another output folder")
            else:
                write_json(record_path, record)
        except BaseException:
            release(folder)
            raise

    on_main_process(claim)
    try:
        yield
    finally:
        if is_main_process():
            release(folder)


def claimed_comparison(folder: Path, experiment: Experiment) -> contextlib.AbstractContextManager[None]:
    """``claimed_folder`` for a comparison's folder (``compare``, and ``tune``, which shares it)."""
    return claimed_folder(folder, folder / EXPERIMENT_FILE, experiment.to_dict(), "comparison")

"""``qpeft compare --datasets a,b,...``: the same comparison on each task into ``OUTPUT/<task>/``, then the
cross-task summary (``analysis.tasks``) in ``OUTPUT/summary.json``.

Each task folder is a complete comparison of its own, resumable as one: an interrupted multi-task
run given again keeps every finished run of every task and goes on where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from qpeft.analysis.tasks import cross_task_summary
from qpeft.data import BUILTIN_TASKS
from qpeft.experiment.checks import check_experiment
from qpeft.experiment.run_dir import claimed_folder
from qpeft.settings import Experiment
from qpeft.utils.atomic import write_json
from qpeft.utils.errors import UsageError

log = logging.getLogger(__name__)

TASKS_FILE = "tasks.json"
SUMMARY_FILE = "summary.json"


def task_name(dataset: str) -> str:
    """The folder of a task under OUTPUT: a built-in's name, a file's stem, a folder's name."""
    if dataset in BUILTIN_TASKS:
        return dataset
    path = Path(dataset)
    return path.stem if path.suffix else path.name


def parse_datasets(text: str) -> list[str]:
    """``--datasets e2e,dart,...`` as a list; empty, repeated or clashing task names are a UsageError."""
    datasets = [part.strip() for part in text.split(",") if part.strip()]
    if not datasets:
        raise UsageError("--datasets: name at least one data set")
    names = [task_name(dataset) for dataset in datasets]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"--datasets: two data sets would share the folder {repeated[0]!r}; name each once")
    return datasets


def compare_tasks(
    output: Path,
    experiment: Experiment,
    datasets: list[str],
    rows: dict[str, str],
    method_configs: dict[str, dict[str, Any]],
    data_dir: str | None,
    compare_one: Callable[[Path, Experiment], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``compare_one(OUTPUT/<task>, experiment on that task)`` for every data set, then summarise.

    Every task's data, every method and the models are checked before the first task trains, so a
    bad fourth data set fails in seconds, not after three comparisons. ``rows``: row -> method.
    """
    tasks = {task_name(dataset): replace(experiment, dataset=dataset) for dataset in datasets}
    for task_experiment in tasks.values():
        check_experiment(task_experiment, {name: method_configs.get(name, {}) for name in rows}, data_dir, rows)
    record = {"datasets": datasets, "experiment": replace(experiment, dataset=None).to_dict()}
    with claimed_folder(output, output / TASKS_FILE, record, "multi-task comparison"):
        payloads = {}
        for name, task_experiment in tasks.items():
            log.info("###### task %s ######", name)
            payloads[name] = compare_one(output / name, task_experiment)
        if not all(payloads.values()):
            return {}  # another process than the main one under a multi-process launcher
        summary = cross_task_summary(payloads)
        write_json(output / SUMMARY_FILE, summary)
    return summary

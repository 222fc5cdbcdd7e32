"""``qpeft compare``: every method under one experiment, then the results and report."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from qpeft.errors import UsageError
from qpeft.io import read_json, write_csv, write_json, write_text_atomic
from qpeft.methods import get_method
from qpeft.report import RESULT_COLUMNS, markdown_report
from qpeft.runs import BASE, Experiment, base_run, train_run
from qpeft.training import check_compatible

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    import qpeft

    return {"qpeft": qpeft.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def claim_output(output: Path, experiment: Experiment) -> None:
    """Refuse an output folder that holds another experiment; otherwise record this one."""
    marker = output / "experiment.json"
    if marker.exists():
        if read_json(marker) != experiment.to_dict():
            raise UsageError(f"{output} holds a different experiment; choose another --output")
        return
    if output.exists() and any(output.iterdir()):
        raise UsageError(f"{output} is not empty and holds no qpeft comparison; choose another --output")
    output.mkdir(parents=True, exist_ok=True)
    write_json(marker, experiment.to_dict())


def compare(
    output: Path,
    experiment: Experiment,
    methods: list[str],
    method_configs: dict[str, dict[str, Any]],
    data_dir: str | None,
) -> dict[str, Any]:
    """Train and evaluate each method (finished ones are kept), then write results and report."""
    if not methods:
        raise UsageError("--methods: name at least one method")
    experiment.validate()
    for name in methods:
        method = get_method(name)
        method.config_class.from_dict(method_configs.get(name, {})).validate()
        check_compatible(method, experiment.train)
    experiment.load_data(data_dir)  # bad data fails before anything is written
    claim_output(output, experiment)
    results = {BASE: base_run(output / BASE, experiment, data_dir)}
    for name in methods:
        log.info("=== %s ===", name)
        results[name] = train_run(output / name, experiment, name, method_configs.get(name, {}), data_dir)
        gc.collect()
    payload = {
        "experiment": experiment.to_dict(),
        "method_configs": {name: read_json(output / name / "config.json")["method_config"] for name in methods},
        "versions": versions(),
        "methods": results,
    }
    write_json(output / "results.json", payload)
    rows = [{"method": name, **figures} for name, figures in results.items()]
    write_csv(output / "results.csv", rows, ["method", *RESULT_COLUMNS])
    write_text_atomic(output / "report.md", markdown_report(payload))
    return payload

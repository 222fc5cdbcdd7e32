"""Everything that can be checked before the first training step, for ``qpeft train`` and ``compare``.

A user's worst case is an error after an hour of training, so every option of the experiment
and of each method, the data (read and split, every split non-empty), the base model and the
BERTScore model are checked here first; ``compare`` checks every method before training the first.
"""

from __future__ import annotations

from typing import Any

from qpeft.data import DataSplits
from qpeft.evaluation.classification import label_set
from qpeft.evaluation.metrics import check_bertscore_model
from qpeft.methods import get_method
from qpeft.methods.base import MethodConfig
from qpeft.models import check_model, check_split_qkv
from qpeft.settings import Experiment
from qpeft.training.trainer import check_compatible
from qpeft.utils.errors import UsageError


def check_method(name: str, config: dict[str, Any], experiment: Experiment) -> MethodConfig:
    """The method's validated config; an unknown name, a bad option or an impossible pairing is a UsageError."""
    method = get_method(name)
    method_config = method.config_class.from_dict(config)
    method_config.validate()
    check_compatible(method, experiment.train)
    return method_config


def check_splits(splits: DataSplits, dataset: str) -> None:
    """Each split holds at least one item: training, the validation loss and the test scores all need one."""
    for split, items in (("training", splits.train), ("validation", splits.validation), ("test", splits.test)):
        if not items:
            raise UsageError(f"{dataset}: the {split} split is empty; give more distinct inputs")


def check_experiment(experiment: Experiment, methods: dict[str, dict[str, Any]], data_dir: str | None,
                     method_of: dict[str, str] | None = None) -> DataSplits:
    """Check the experiment and every row of ``methods`` (name -> given config; ``method_of`` names the method
    of a row that is not one, a variant); returns the data splits."""
    experiment.validate()
    for name, config in methods.items():
        check_method((method_of or {}).get(name, name), config, experiment)
    splits = experiment.load_data(data_dir)
    check_splits(splits, experiment.dataset)
    if experiment.task_type() == "classification":
        label_set(splits.train)
    check_model(experiment.model)
    if experiment.split_qkv:
        check_split_qkv(experiment.model)
    if experiment.task_type() == "generation" and experiment.eval.bertscore_model != "none":
        check_bertscore_model(experiment.eval.bertscore_model, experiment.eval.bertscore_num_layers)
    return splits

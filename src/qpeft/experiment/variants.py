"""Named variants: other configurations of a method as rows of their own (ablations).

A comparison's rows are its methods, each under its own name, and any variants, each a name
the user chooses for a method and some of its options: in a ``--config`` file,
``variants: {lora-r4: {method: lora, r: 4}}``. A variant is trained, tuned, evaluated and
reported like a method; its options override the method's flags.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

from qpeft.experiment.results import BASELINES
from qpeft.methods import REGISTRY, get_method
from qpeft.utils.errors import UsageError

#: A row name becomes a folder name: lower-case letters, digits, '-', '_' and '.', no path.
ROW_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def parse_variants(text: str | None) -> dict[str, dict[str, Any]]:
    """``--variants`` (JSON: name -> {"method": ..., options}) checked: names, methods and option names."""
    if not text:
        return {}
    try:
        variants = json.loads(text)
    except ValueError as error:
        raise UsageError(f"--variants: not valid JSON ({error})") from None
    if not isinstance(variants, dict):
        raise UsageError("--variants: expected a mapping of variant names to {method: ..., options}")
    for name, spec in variants.items():
        check_variant(name, spec)
    return variants


def check_variant(name: str, spec: Any) -> None:
    if not ROW_NAME.fullmatch(name) or name in REGISTRY or name in BASELINES:
        raise UsageError(f"variant {name!r}: a variant needs a name of its own (lower-case letters, digits, "
                         "'-', '_', '.'), not a method's or a baseline's")
    if not isinstance(spec, dict) or spec.get("method") not in REGISTRY:
        raise UsageError(f"variant {name!r}: give its method, one of {', '.join(REGISTRY)}")
    known = {f.name for f in fields(get_method(spec["method"]).config_class)}
    unknown = sorted(set(spec) - known - {"method"})
    if unknown:
        raise UsageError(f"variant {name!r}: {spec['method']} has no option {unknown[0]!r}")


def rows_of(methods: list[str], variants: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Row name -> method name: the methods under their own names, then the variants."""
    rows = {name: name for name in methods}
    for name, spec in variants.items():
        rows[name] = spec["method"]
    return rows


def row_configs(rows: dict[str, str], variants: dict[str, dict[str, Any]],
                method_flags: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each row's given options: its method's flags, and a variant's own options over them."""
    configs = {}
    for name, method in rows.items():
        options = {key: value for key, value in variants.get(name, {}).items() if key != "method"}
        configs[name] = {**method_flags.get(method, {}), **options}
    return configs

"""``--config FILE``: a YAML file of flags, so that a long experiment is one file.

Each top-level key is a flag of the command (``steps: 500`` is ``--steps 500``), a nested
mapping under a method name holds that method's options (``lora: {r: 4}`` is ``--lora-r 4``).
``variants:`` holds named configurations of a method (``variants: {lora-r4: {method: lora, r: 4}}``),
passed on as ``--variants`` JSON. Flags given on the command line come after the file's and so
override them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from qpeft.utils.errors import UsageError


def _flag(name: str) -> str:
    return "--" + str(name).replace("_", "-")


def _as_flags(prefix: str, values: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in values.items():
        flag = _flag(f"{prefix}-{key}" if prefix else key)
        if key == "variants" and not prefix:
            argv += [flag, json.dumps(value)]
        elif isinstance(value, dict):
            argv += _as_flags(str(key), value)
        elif isinstance(value, bool):
            # Method switches have a --no- form; the command's own switches are off unless given.
            argv += [flag] if value else (["--no-" + flag[2:]] if prefix else [])
        elif isinstance(value, list):
            argv += [flag, ",".join(str(item) for item in value)]
        else:
            argv += [flag, str(value)]
    return argv


def expand_config_file(argv: Sequence[str]) -> list[str]:
    """Replace ``--config FILE`` in ``argv`` by the flags the file holds (placed before the others)."""
    argv = list(argv)
    if "--config" not in argv:
        return argv
    at = argv.index("--config")
    if at + 1 >= len(argv):
        raise UsageError("--config needs a YAML file")
    path = Path(argv[at + 1])
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read config {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path}: expected a mapping of flag names to values")
    rest = argv[:at] + argv[at + 2 :]
    # The file's flags go right after the command name, so that the command line's come last and win.
    command = next((i for i, arg in enumerate(rest) if not arg.startswith("-")), len(rest))
    return rest[: command + 1] + _as_flags("", values) + rest[command + 1 :]

"""The help comes from the code, and the README's flag tables say what the code does.

Every option's help text is ``metadata["help"]`` on its dataclass field; the CLI renders it. The README's
"Shared flags", SoRA and QAA tables are parsed here and checked against the parser and the config classes.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any

import pytest

from helpers import ROOT
from qpeft.cli.parser import build_parser, field_flag
from qpeft.methods import REGISTRY
from qpeft.settings import AnalysisSettings, EvalSettings, Experiment, TrainSettings

README = ROOT / "README.md"
#: The argument groups of ``qpeft train`` whose flags the README's "Shared flags" table lists.
SHARED_GROUPS = ("model and data", "training budget", "evaluation")
#: README default words and what they stand for.
WORDS: dict[str, Any] = {"on": True, "off": False, "unset": None}


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def option_fields(cls: type) -> list[Field]:
    """The fields of a config or settings class that are options (not a nested settings object)."""
    return [f for f in fields(cls) if not (f.default_factory is not MISSING and is_dataclass(f.default_factory))]


def readme_table(heading: str) -> list[list[str]]:
    """The cells of each body row of the first Markdown table after the line that starts with ``heading``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    rows = []
    for line in lines[first + 2:]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def readme_value(text: str) -> Any:
    """A README default as a value: ``on``/``off`` as booleans, ``unset`` as None, numbers as floats, ``$VAR`` as
    None (read at run time), anything else as its text; a trailing parenthesis is a comment."""
    text = re.sub(r"\s*\(.*\)$", "", text).strip().strip("`")
    if text.startswith("$"):
        return None
    if text in WORDS:
        return WORDS[text]
    try:
        return float(text)
    except ValueError:
        return text


def table_defaults(rows: list[list[str]]) -> dict[str, Any]:
    """name -> README default, for rows like | `--steps`, `--batch-size` | 200, 8 | ... |."""
    found = {}
    for names_cell, default_cell, *_ in rows:
        names = re.findall(r"`([^`]+)`", names_cell)
        defaults = default_cell.split(", ")
        assert len(names) == len(defaults), f"README row {names_cell!r}: {len(names)} names, defaults {default_cell!r}"
        found.update({name: readme_value(default) for name, default in zip(names, defaults, strict=True)})
    return found


def method_table(method: str, heading: str) -> dict[str, Any]:
    """``--<method>-<option>`` -> README default; a row may name the option alone (``r``) or as its flag."""
    rows = table_defaults(readme_table(heading))
    return {name if name.startswith("--") else field_flag(method, name): value for name, value in rows.items()}


@pytest.mark.parametrize("cls", [TrainSettings, EvalSettings, Experiment, AnalysisSettings,
                                 *(m.config_class for m in REGISTRY.values()),
                                 *(m.eval_options_class for m in REGISTRY.values())],
                         ids=lambda cls: cls.__name__)
def test_every_option_field_carries_help(cls: type) -> None:
    assert [f.name for f in option_fields(cls) if not str(f.metadata.get("help", "")).strip()] == []


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_flag_of_train_and_compare_has_a_sentence_of_help(command: str) -> None:
    actions = [a for a in subcommand(command)._actions if not isinstance(a, argparse._HelpAction)]
    bare = [a.option_strings for a in actions if not a.help or a.help.startswith("(default")]
    assert bare == []


@pytest.mark.parametrize("command", ["train", "compare", "tune", "evaluate", "generate", "sora-export", "qasm"])
def test_every_commands_help_renders(command: str) -> None:
    # argparse formats help with %: a field help's own "95%" once made `qpeft compare --help` raise
    text = subcommand(command).format_help()
    if command == "compare":
        assert "interval of at least 95% coverage" in " ".join(text.split())


def test_method_flags_render_the_field_help_and_default() -> None:
    action = flag_actions(subcommand("train"))["--sora-gate-learning-rate"]
    gate_learning_rate = next(f for f in fields(REGISTRY["sora"].config_class) if f.name == "gate_learning_rate")
    assert action.help == f"{gate_learning_rate.metadata['help']} (default 0.1)"


def test_the_shared_flags_table_lists_every_shared_flag_with_its_default() -> None:
    train = subcommand("train")
    shared = {flag for group in train._action_groups if group.title in SHARED_GROUPS
              for action in group._group_actions for flag in action.option_strings}
    readme = table_defaults(readme_table("Shared flags"))
    assert set(readme) == shared
    actions = flag_actions(train)
    assert {flag: value for flag, value in readme.items() if value != actions[flag].default} == {}


@pytest.mark.parametrize(("method", "heading"), [("sora", "## SoRA"), ("qaa", "## QAA")])
def test_a_method_table_lists_every_option_with_the_config_default(method: str, heading: str) -> None:
    readme = method_table(method, heading)
    config = REGISTRY[method].config_class
    code = {field_flag(method, f.name): f.default for f in fields(config)}
    assert set(readme) == set(code)
    assert set(readme) <= set(flag_actions(subcommand("train")))
    assert {flag: value for flag, value in readme.items() if value != code[flag]} == {}


def test_the_readme_reader_parses_lists_words_and_comments() -> None:
    rows = [["`--a`, `--b`", "200, `x`"], ["`--c`", "0 (all)"], ["`--d`", "off"], ["`--e`", "`$HOME`"]]
    assert table_defaults(rows) == {"--a": 200.0, "--b": "x", "--c": 0.0, "--d": False, "--e": None}

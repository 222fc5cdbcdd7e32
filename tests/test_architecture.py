"""Imports run one way: each module imports only modules of its own stage or of lower ones, and no cycle.

The graph is read with ``ast`` from the source files, so it holds every import of a qpeft
module: at the top of a file, inside functions, under ``TYPE_CHECKING``. ``from X import Y``
counts as an import of ``X.Y`` when that is a module, else of ``X``. Importing a submodule
also runs its package's ``__init__``; that is Python's doing, not an edge of the graph.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "qpeft"

#: The stages, lowest first: a module may import its own stage and the ones below, never one above.
#: The longest prefix of a module's name that is listed here gives its stage; a new top-level module needs a row.
STAGES: dict[str, int] = {
    "qpeft.utils": 0,  # errors, atomic files, cache folder, versions, processes, memory
    "qpeft.utils.extras": 0,  # which optional libraries (Qiskit, PennyLane) are installed
    "qpeft.data": 1,  # data types and loaders, prompts
    "qpeft.quantum": 1,  # the circuit, its simulators, noise, hardware export
    "qpeft.analysis": 1,  # pure functions of numbers: convergence, capacity, seeds, significance, timing
    "qpeft.methods": 2,  # the method contract and the five methods
    "qpeft.methods.sora.config": 2,  # SoRA's options: defaults, help, validation
    "qpeft.methods.qaa.config": 2,  # QAA's options, eval options and robustness grid
    "qpeft.methods.sora.model": 2,  # SoRA on a model: inject, find layers, save and load the adapter folder
    "qpeft.methods.qaa.model": 2,  # QAA on a model: inject, find layers, save and load the adapter folder
    "qpeft.settings": 2,  # Experiment, TrainSettings, EvalSettings, AnalysisSettings
    "qpeft.models": 3,  # loading base models and tokenizers
    "qpeft.training": 3,  # the Trainer loop, its log, validation loss, checkpoints
    "qpeft.evaluation": 3,  # generation, scores, latency
    "qpeft.experiment": 4,  # run folders, runs, the comparison, the results schema
    "qpeft.report": 5,  # Markdown and HTML reports and their plots, from a results payload
    "qpeft.api": 6,  # the Python API: prepare/save/load an adapter in your own loop, the commands as calls
    "qpeft.cli": 6,  # the qpeft command
    "qpeft.__main__": 6,
    "qpeft": 7,  # the package's own __init__ (only it): whatever it re-exports sits below it
}


def module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root``: name -> file."""
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> list[tuple[str, int]]:
    """(imported qpeft module, line) for every import statement of one file, wherever it stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((target if target in known else base, node.lineno))
    return [(target, line) for target, line in found if target == "qpeft" or target.startswith("qpeft.")]


def import_graph(root: Path = SOURCE) -> dict[str, list[tuple[str, int]]]:
    """module -> [(module it imports, line)], qpeft modules only, no self-edges."""
    found = modules(root)
    graph = {}
    for name, path in found.items():
        edges = dict.fromkeys((target, line) for target, line in imports(path, name, set(found)) if target != name)
        graph[name] = [(target, line) for target, line in edges if target in found]
    return graph


def stage(name: str) -> int | None:
    prefixes = [prefix for prefix in STAGES if name == prefix or (prefix != "qpeft" and name.startswith(prefix + "."))]
    return STAGES[max(prefixes, key=len)] if prefixes else None


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Every import of a module from a higher stage, as 'a (stage) imports b (stage) at line n'."""
    wrong = []
    for name, edges in graph.items():
        for target, line in edges:
            low, high = stage(name), stage(target)
            if low is not None and high is not None and high > low:
                wrong.append(f"{name} (stage {low}) imports {target} (stage {high}) at line {line}")
    return wrong


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in graph.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int]]]:
    return import_graph()


def test_every_module_has_a_stage(graph: dict[str, list[tuple[str, int]]]) -> None:
    assert [name for name in graph if stage(name) is None] == []


def test_no_module_imports_from_a_higher_stage(graph: dict[str, list[tuple[str, int]]]) -> None:
    assert upward_imports(graph) == []


def test_no_import_cycles(graph: dict[str, list[tuple[str, int]]]) -> None:
    assert cycles(graph) == []


def test_the_reader_sees_lazy_and_from_imports_and_finds_cycles(tmp_path: Path) -> None:
    # A made-up package: utils imports methods inside a function (upward), data/__init__ and data/e2e import
    # each other (a cycle through ``from qpeft.data import e2e``), and one import is relative.
    root = tmp_path / "qpeft"
    files = {
        "__init__.py": "",
        "utils/__init__.py": "",
        "utils/errors.py": "def f():\n    from qpeft.methods import base\n",
        "data/__init__.py": "from qpeft.data import e2e\n",
        "data/e2e.py": "from qpeft.data import Example\nfrom ..utils import errors\n",
        "methods/__init__.py": "",
        "methods/base.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    graph = import_graph(root)
    assert graph["qpeft.data.e2e"] == [("qpeft.data", 1), ("qpeft.utils.errors", 2)]
    assert upward_imports(graph) == ["qpeft.utils.errors (stage 0) imports qpeft.methods.base (stage 2) at line 2"]
    assert cycles(graph) == [["qpeft.data", "qpeft.data.e2e"]]


@pytest.mark.multiprocess  # a fresh interpreter
def test_the_package_and_the_report_import_no_model_library() -> None:
    # `import qpeft` stays cheap, and presentation code reads a payload without torch or transformers.
    code = ("import sys, qpeft, qpeft.report, qpeft.experiment.results; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""The trained circuits of a QAA adapter as OpenQASM 2 and 3 files (``qpeft qasm``)."""

from __future__ import annotations

from pathlib import Path

from qpeft.methods.qaa.model import QAAAdapter
from qpeft.quantum import to_qasm
from qpeft.utils.atomic import write_json
from qpeft.utils.errors import UsageError
from qpeft.utils.extras import require

QASM_VERSIONS = {"2": (2,), "3": (3,), "both": (2, 3)}
QASM_SUFFIX = {2: ".qasm", 3: ".qasm3"}


def check_version(version: str) -> None:
    if version not in QASM_VERSIONS:
        raise UsageError(f"--version must be one of {', '.join(QASM_VERSIONS)}, got {version!r}")


def target_path(out_dir: Path, file_name: str) -> Path:
    """``out_dir / file_name``, refused unless it lies directly inside ``out_dir``.

    The name comes from the adapter's files: ``read_adapter`` already refuses any module name that
    is not a dotted path, and this guards an adapter built otherwise (or a planted symlink).
    """
    path = out_dir / file_name
    try:
        inside = "\0" not in file_name and path.resolve().parent == out_dir.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise UsageError(f"refusing to write {file_name!r}: it would not lie directly inside {out_dir}")
    return path


def export_qasm(adapter: QAAAdapter, out_dir: Path, version: str = "both", run: str = "") -> list[Path]:
    """Write every trained circuit of a QAA adapter as OpenQASM 2 (``.qasm``) and/or 3 (``.qasm3``).

    Files are ``<out_dir>/<module name>.qasm[3]`` (``qpeft qasm`` defaults to ``run_dir/qasm``) plus
    ``index.json``. Each circuit is the parameterised part only, with the trained angles; on
    hardware it follows the amplitude embedding of the token's input (normalised, zero-padded to
    2**n) and ends with a Z measurement of every qubit. Qiskit numbers qubits little-endian: qpeft's
    wire q is ``q[n-1-q]`` in the files. ``run`` (the run folder) is recorded in ``index.json``.
    """
    check_version(version)
    require("qiskit", "OpenQASM export")  # before anything is written: no half-filled folder
    out_dir = Path(out_dir)
    targets = {(name, number): target_path(out_dir, f"{name}{QASM_SUFFIX[number]}")
               for name in adapter.modules for number in QASM_VERSIONS[version]}
    out_dir.mkdir(parents=True, exist_ok=True)
    written, index = [], {}
    for name, module in adapter.modules.items():
        files = []
        for number in QASM_VERSIONS[version]:
            path = targets[name, number]
            path.write_text(to_qasm(module.spec, module.angles.double(), number))
            written.append(path)
            files.append(path.name)
        index[name] = {"files": files, "n_qubits": module.spec.n_qubits, "layers": module.spec.n_layers,
                       "ansatz": module.spec.ansatz, "readout": module.spec.readout,
                       "in_features": module.in_features, "out_features": module.out_features}
    write_json(out_dir / "index.json", {
        "run": run,
        "note": "parameterised circuit only: prepare the amplitude-embedded input first (normalised, zero-padded "
                "to 2**n); qpeft wire q is Qiskit qubit n-1-q; readout: Z expectation of every qubit ('z') or "
                "the basis probabilities ('probs')",
        "modules": index,
    })
    return written

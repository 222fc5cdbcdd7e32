"""The optional extras: which of their libraries are installed, and the one-line error when one is missing.

``qpeft[quantum]`` adds PennyLane (the reference simulator the tests compare against) and Qiskit
(QAA's resource counts and ``qpeft qasm``). Training and evaluation never need either, so code
that does asks here first instead of failing with a traceback after a whole training run.
"""

from __future__ import annotations

import importlib.util

from qpeft.utils.errors import UsageError

#: How to get the optional quantum libraries, as a user would type it.
QUANTUM_INSTALL = "pip install 'qpeft[quantum]'"


def is_available(name: str) -> bool:
    """Whether ``import name`` would find the library, without importing it (Qiskit takes seconds)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken install, or a module whose __spec__ is unset
        return False


def require(name: str, purpose: str) -> None:
    """A one-line ``UsageError`` saying how to install ``name`` when ``purpose`` needs it and it is missing."""
    if not is_available(name):
        raise UsageError(f"{purpose} needs {name}, an optional extra: {QUANTUM_INSTALL}")

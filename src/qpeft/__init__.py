"""qpeft: parameter-efficient fine-tuning of causal LMs, classical and quantum, compared honestly."""

from qpeft.utils.version import __version__

__all__ = ["__version__"]

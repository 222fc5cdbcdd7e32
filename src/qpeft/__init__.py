"""qpeft: parameter-efficient fine-tuning of causal LMs, classical and quantum, compared honestly.

The Python API (``qpeft.prepare``, ``save_adapter``, ``load_adapter``, ``optimizer``,
``sora_optimizer``, ``train``, ``compare``, ``evaluate``) lives in ``qpeft.api`` and is
loaded on first use, so that ``import qpeft`` imports no model library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qpeft.utils.version import __version__

if TYPE_CHECKING:
    from qpeft.api import compare, evaluate, load_adapter, optimizer, prepare, save_adapter, sora_optimizer, train

__all__ = [
    "__version__", "compare", "evaluate", "load_adapter", "optimizer", "prepare", "save_adapter", "sora_optimizer",
    "train",
]
#: The names ``__getattr__`` takes from ``qpeft.api``.
API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    """The API's names, imported from ``qpeft.api`` (and with it torch) only when first asked for."""
    if name in API:
        from qpeft import api

        return getattr(api, name)
    raise AttributeError(f"module 'qpeft' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})

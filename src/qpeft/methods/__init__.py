"""The method registry: each fine-tuning method is one name.

To add a method, write a module with a ``Method`` subclass and list it below.
"""

from __future__ import annotations

from qpeft.methods.base import EvalOptions, Method, MethodConfig
from qpeft.methods.full import FullFineTuning
from qpeft.methods.lora import LoRA
from qpeft.methods.prefix import PrefixTuning
from qpeft.methods.qaa import QAA
from qpeft.methods.sora import SoRA
from qpeft.utils.errors import UsageError

REGISTRY: dict[str, Method] = {
    method.name: method for method in (FullFineTuning(), LoRA(), PrefixTuning(), SoRA(), QAA())
}


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise UsageError(f"unknown method {name!r} (choose from {', '.join(REGISTRY)})")
    return REGISTRY[name]


__all__ = ["REGISTRY", "EvalOptions", "Method", "MethodConfig", "get_method"]

"""Process roles under ``accelerate launch`` / ``torchrun``: every process trains, one writes.

Without a launcher there is one process, which is the main one, and waiting is a no-op.
"""

from __future__ import annotations

from accelerate import PartialState


def is_main_process() -> bool:
    return PartialState().is_main_process


def wait_for_everyone() -> None:
    PartialState().wait_for_everyone()

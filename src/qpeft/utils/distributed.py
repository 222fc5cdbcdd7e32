"""Process roles under ``accelerate launch`` / ``torchrun``: every process trains, one writes.

Without a launcher there is one process, which is the main one, and waiting is a no-op.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TypeVar

import torch
from accelerate import PartialState

from qpeft.utils.errors import UsageError
from qpeft.utils.locks import FolderInUse

T = TypeVar("T")


def process_state() -> PartialState:
    """The launcher's processes, joined as transformers' Trainer joins them.

    Between CPU processes that is gloo; ``PartialState()`` alone would see a single process there
    until the Trainer starts, and every process would then take itself for the main one.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        return PartialState(backend="gloo")
    return PartialState()


def is_main_process() -> bool:
    return process_state().is_main_process


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


def on_main_process(function: Callable[[], T]) -> T:
    """``function()`` on the main process only, its JSON-able result (or its ``UsageError``) on every process.

    The others wait for it, so that a folder is claimed once; and they learn its outcome, so that
    a refusal ends every process in one line instead of leaving the others waiting forever.
    """
    state = process_state()
    if state.num_processes == 1:
        return function()
    outcome: dict = {}
    if state.is_main_process:
        try:
            outcome = {"result": function()}
        except UsageError as error:
            outcome = {"error": str(error), "kind": type(error).__name__}
    outcome = _broadcast_json(outcome, state.device)
    if "error" in outcome:
        # the same kind on every process (a tuning worker waits on a folder in use, and fails on the rest)
        raise (FolderInUse if outcome["kind"] == FolderInUse.__name__ else UsageError)(outcome["error"])
    return outcome["result"]


def _broadcast_json(value: dict, device: torch.device) -> dict:
    """``value`` of the main process on every process, as JSON bytes (torch's object broadcast would pickle)."""
    main = process_state().is_main_process
    data = torch.tensor(list(json.dumps(value).encode()) if main else [],
                        dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    torch.distributed.broadcast(size, src=0)
    if not main:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    torch.distributed.broadcast(data, src=0)
    return json.loads(bytes(data.cpu().tolist()).decode())

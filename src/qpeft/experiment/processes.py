"""Running one run in a fresh process: its peak memory its own, a crash in it not the caller's."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import signal
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from transformers.utils import logging as hf_logging

from qpeft.utils.distributed import process_state


def isolated(function: Callable[..., dict[str, Any]], fresh_process: bool, *args: Any) -> dict[str, Any]:
    """``function(*args)``, in a fresh process when asked (and not under a multi-process launcher).

    A fresh process per run makes each method's peak memory its own: in one shared process the
    resident set keeps what earlier methods left behind (allocator caches, imported libraries),
    so a method's figure would depend on which methods ran before it. It also keeps a crash in
    one method (a segfault in a compiled kernel) from ending the comparison.
    """
    if not fresh_process or process_state().num_processes > 1:
        return function(*args)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=start_child, initargs=(logging.getLogger("qpeft").level,)) as pool:
        try:
            return pool.submit(function, *args).result()
        except BrokenProcessPool:
            raise RuntimeError("the run's process died (killed, or a crash in compiled code)") from None


def start_child(level: int) -> None:
    """A spawned run process: it ends with its parent, and logs like it (it starts with no logging set up)."""
    end_with_parent()
    logging.basicConfig(level=level or logging.INFO, format="qpeft: %(message)s")
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def end_with_parent() -> None:
    """Ask Linux to terminate this process when its parent dies (prctl PR_SET_PDEATHSIG).

    Without it, a comparison killed from outside (SIGTERM, SIGKILL of its process alone) leaves its
    run process training on, orphaned, still writing into the run folder. Elsewhere a no-op: the
    run process then ends when the pool's pipe to the dead parent breaks.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

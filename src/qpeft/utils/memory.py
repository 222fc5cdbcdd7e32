"""Peak memory of a block of work: process RSS on CPU, allocated memory on CUDA."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil
import torch


class PeakMemory:
    """Context manager; ``peak_mb`` holds the peak once the block ends.

    On CPU a background thread samples the resident set size, because the kernel's own
    high-water mark (ru_maxrss) never resets and would carry one method's peak into the
    next method measured in the same process.
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._use_cuda = torch.cuda.is_available()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self._use_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            process = psutil.Process()
            self._peak_bytes = process.memory_info().rss
            self._thread = threading.Thread(target=self._sample, args=(process,), daemon=True)
            self._thread.start()
        return self

    def _sample(self, process: psutil.Process) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak_bytes = max(self._peak_bytes, process.memory_info().rss)

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._use_cuda:
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._peak_bytes = max(self._peak_bytes, psutil.Process().memory_info().rss)
        self.peak_mb = self._peak_bytes / 2**20

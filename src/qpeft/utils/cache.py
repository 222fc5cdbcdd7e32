"""The qpeft cache folder: converted models and compiled kernels (``$QPEFT_CACHE``, else ``~/.cache/qpeft``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("QPEFT_CACHE", Path.home() / ".cache" / "qpeft"))

"""The library versions qpeft's tests prove, and a start-up check against the others.

Prefix tuning's generation (``qpeft.methods.prefix``) relies on how ``generate`` takes a
pre-filled KV cache in transformers 5.24 (the ``cache`` argument) and on PEFT 0.21's
prefix layout; PEFT's own prefix ``generate`` silently drops the prefix there. Other
versions may work, but nothing here has checked them, so they are refused rather than
allowed to produce quietly wrong results.
"""

from __future__ import annotations

import importlib

from packaging.version import Version

from qpeft.utils.errors import UsageError

#: library -> (lowest verified version, first unverified version); keep in step with pyproject.toml.
TESTED_RANGES: dict[str, tuple[str, str]] = {
    "transformers": ("5.24", "5.25"),
    "peft": ("0.21.2", "0.22"),
}


def installed_version(library: str) -> str:
    return importlib.import_module(library).__version__


def check_library_versions() -> None:
    """Raise ``UsageError`` (one line) unless every library in ``TESTED_RANGES`` is inside its tested range."""
    outside = []
    for library, (low, high) in TESTED_RANGES.items():
        found = installed_version(library)
        if not Version(low) <= Version(found) < Version(high):
            outside.append(f"{library} {found} (tested: >={low},<{high})")
    if outside:
        wanted = " ".join(f"'{lib}>={low},<{high}'" for lib, (low, high) in TESTED_RANGES.items())
        raise UsageError(f"untested library versions: {'; '.join(outside)}; prefix-tuning generation is only "
                         f"verified there (pip install {wanted})")

"""Orchestration: run folders (``run_dir``), one run (``runs``), a comparison (``compare``) and what it
writes (``results``). Kept free of imports so that ``results`` is cheap to import for the report."""

"""Presentation: the Markdown and HTML reports of a comparison, rendered from its ``results.json`` payload.

``payload`` reads the payload, ``tables`` and ``findings`` turn it into rows and sentences,
``markdown``, ``html`` and ``plots`` render them. Nothing here runs a model or imports the
orchestration: the row names and columns come from ``qpeft.experiment.results``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qpeft.report.cross_task import cross_task_html, cross_task_markdown
from qpeft.report.html import html_report
from qpeft.report.markdown import markdown_report
from qpeft.utils.atomic import write_text_atomic


def write_report(output: Path, payload: dict[str, Any]) -> None:
    """``report.md`` and ``report.html`` of a comparison, beside its ``results.json``."""
    write_text_atomic(Path(output) / "report.md", markdown_report(payload))
    write_text_atomic(Path(output) / "report.html", html_report(payload))


def write_cross_task_report(output: Path, summary: dict[str, Any]) -> None:
    """``report.md`` and ``report.html`` of a multi-task comparison, beside its ``summary.json``."""
    write_text_atomic(Path(output) / "report.md", cross_task_markdown(summary))
    write_text_atomic(Path(output) / "report.html", cross_task_html(summary))

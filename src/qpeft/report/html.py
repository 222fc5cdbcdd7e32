"""The self-contained HTML report (``report.html``).

One HTML file with the tables of the Markdown report and the plots of ``report.plots``
embedded as base64 PNG, so it opens offline and can be mailed as it is. The page needs no
script; its style sheet is ``report.css`` beside this module.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from qpeft.report.findings import findings
from qpeft.report.hardware import HARDWARE_LIMITS
from qpeft.report.markdown import baselines_sentence, sample_sentence
from qpeft.report.payload import seeds_phrase, trained
from qpeft.report.plots import PLOTS
from qpeft.report.tables import (
    CAPACITY_COLUMNS,
    CAPACITY_NOTE,
    CONVERGENCE_NOTE,
    E2E_NOTE,
    EFFICIENCY_COLUMNS,
    EFFICIENCY_NOTE,
    capacity_errors,
    convergence_columns,
    e2e_table,
    figure_table,
    robustness_table,
    significance_rows,
    summary_rows,
)
from qpeft.report.tuning import learning_rate_sentence, tuning_rows, window_sentences

CSS = (Path(__file__).with_name("report.css")).read_text()


def inline_markdown(text: str) -> str:
    """Markdown-ish sentence to HTML: escape, then **bold** and `code`."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def html_table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{html.escape(row[0])}">' + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return (f'<div class="table-wrap"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _figure_html(plot_id: str, png: bytes | None) -> str:
    return figure_html(plot_id, png, PLOTS[plot_id].caption)


def figure_html(element_id: str, png: bytes | None, caption: str) -> str:
    """A PNG inline as base64 with its caption, or nothing without one."""
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    caption = html.escape(caption)
    return (f'<figure><img id="{element_id}" class="plot" alt="{caption}" '
            f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>')


def _description(payload: dict[str, Any]) -> str:
    experiment = payload["experiment"]
    train, evaluation = experiment["train"], experiment["eval"]
    test_items = next(iter(payload["methods"].values()), {}).get("test_items")
    decoding = "greedy" if evaluation["num_beams"] == 1 else f"beam-{evaluation['num_beams']}"
    return (f"Model <code>{html.escape(str(experiment['model']))}</code>, data set "
            f"<code>{html.escape(str(experiment['dataset']))}</code>, {html.escape(seeds_phrase(payload))}; "
            f"{train['steps']:,} steps of batch {train['batch_size']} × {train['grad_accum']} "
            f"(max {train['max_length']} tokens); {test_items if test_items is not None else '?'} test items, "
            f"{decoding} decoding, at most {evaluation['max_new_tokens']} new tokens. Scores are on a 0–100 "
            f"scale against every reference of a test item. {inline_markdown(baselines_sentence(payload))} "
            f"{inline_markdown(sample_sentence(payload))} {inline_markdown(learning_rate_sentence(payload))}")


def html_report(payload: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML page (plots inline as base64 PNG, no script)."""
    images = {plot_id: plot.draw(payload) for plot_id, plot in PLOTS.items()}
    names = trained(payload)
    sections: list[tuple[str, str, str]] = []  # (id, title, body)

    items = "".join(f"<li>{inline_markdown(s)}</li>" for s in findings(payload))
    if items:
        sections.append(("findings", "Findings", f'<ul class="findings">{items}</ul>'))
    sections.append(("summary", "Summary", html_table(*summary_rows(payload), "table-summary")))
    headers, rows = significance_rows(payload)
    if rows:
        sections.append(("tests", "Paired tests", html_table(headers, rows, "table-tests")))

    headers, rows = tuning_rows(payload)
    if rows:
        windows = "".join(f"<li>{inline_markdown(s)}</li>" for s in window_sentences(payload))
        sections.append(("learning-rates", "Learning rates",
                         _figure_html("plot-learning-rates", images["plot-learning-rates"])
                         + f'<ul class="findings">{windows}</ul>' + html_table(headers, rows, "table-tuning")))

    body = _figure_html("plot-loss", images["plot-loss"]) + _figure_html("plot-grad-norm", images["plot-grad-norm"])
    headers, rows = figure_table(payload, convergence_columns(payload), names)
    if len(headers) > 1:
        body += f'<p class="note">{html.escape(CONVERGENCE_NOTE)}</p>' + html_table(headers, rows, "table-convergence")
    if body:
        sections.append(("convergence", "Convergence", body))

    body = _figure_html("plot-quality", images["plot-quality"])
    if body:
        sections.append(("quality", "Quality against trainable share", body))

    body = _figure_html("plot-efficiency", images["plot-efficiency"])
    headers, rows = figure_table(payload, EFFICIENCY_COLUMNS, names)
    if len(headers) > 1:
        body += f'<p class="note">{html.escape(EFFICIENCY_NOTE)}</p>' + html_table(headers, rows, "table-efficiency")
    if body:
        sections.append(("efficiency", "Efficiency", body))

    body = (_figure_html("plot-capacity-spectra", images["plot-capacity-spectra"])
            + _figure_html("plot-capacity-rank", images["plot-capacity-rank"]))
    headers, rows = figure_table(payload, CAPACITY_COLUMNS, names)
    if len(headers) > 1:
        body += f'<p class="note">{html.escape(CAPACITY_NOTE)}</p>' + html_table(headers, rows, "table-capacity")
    body += "".join(f'<p class="error">{html.escape(e)}</p>' for e in capacity_errors(payload))
    if body:
        sections.append(("capacity", "Capacity", body))

    headers, rows = e2e_table(payload)
    if rows:
        body = f'<p class="note">{html.escape(E2E_NOTE)}</p>' + html_table(headers, rows, "table-e2e")
        sections.append(("e2e", "E2E challenge metrics", body))

    headers, rows = robustness_table(payload)
    if rows:
        body = (_figure_html("plot-noise", images["plot-noise"])
                + _figure_html("plot-hardware", images["plot-hardware"]) + html_table(headers, rows, "table-noise")
                + f'<p class="note">{html.escape(HARDWARE_LIMITS)}</p>')
        sections.append(("noise", "Quantum adapter under shots, noise and hardware", body))

    setup = {key: payload.get(key) for key in ("experiment", "seeds", "method_configs", "analysis", "versions")}
    sections.append(("setup", "Set-up",
                     "<details><summary>Experiment, method configurations, analysis settings and versions</summary>"
                     f"<pre>{html.escape(json.dumps(setup, indent=2))}</pre></details>"))

    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in sections)
    content = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'
                      for sid, title, body in sections)
    versions = ", ".join(f"{k} {v}" for k, v in payload.get("versions", {}).items())
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>qpeft comparison</title><style>{CSS}</style></head>"
        f'<body><main><h1>qpeft comparison</h1><p class="meta">{_description(payload)}</p><nav>{nav}</nav>'
        f"{content}<footer><p>Versions: {html.escape(versions)}.</p></footer></main></body></html>\n"
    )

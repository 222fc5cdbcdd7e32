"""The report's plots, drawn with matplotlib's Agg renderer into PNG bytes.

Every function takes a ``results.json`` payload and returns PNG bytes, or None when the
payload holds nothing to draw (e.g. no QAA robustness data). No pyplot: figures are
built with ``matplotlib.figure.Figure`` so that importing this module never changes
the caller's matplotlib backend or global state.

With several seeds, lines are means over seeds and shaded bands or error bars are one
sample standard deviation.
"""

from __future__ import annotations

import functools
import io
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qpeft.analysis.convergence import smooth
from qpeft.experiment.results import BASE, BASELINES, FEWSHOT
from qpeft.report.hardware import error_curve
from qpeft.report.payload import interval, number, robustness_sets, std, value
from qpeft.report.payload import trained as trained_methods
from qpeft.report.tables import quality_metrics

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
BASE_COLOR = "#7f7f7f"
FEWSHOT_COLOR = "#b5b5b5"


def method_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method, the same in every plot (the base model is grey, few-shot light grey)."""
    colors, trained = {}, [n for n in names if n not in BASELINES]
    for i, name in enumerate(trained):
        colors[name] = PALETTE[i % len(PALETTE)]
    colors[BASE] = BASE_COLOR
    colors[FEWSHOT] = FEWSHOT_COLOR
    return colors


def styled(function: Callable[[dict[str, Any]], bytes | None]) -> Callable[[dict[str, Any]], bytes | None]:
    """Draw under the report's style without touching matplotlib's global settings."""

    @functools.wraps(function)
    def wrapper(payload: dict[str, Any]) -> bytes | None:
        from matplotlib import rc_context

        with rc_context(STYLE):
            return function(payload)

    return wrapper


def _figure(width: float, height: float, ncols: int = 1, sharey: bool = False):  # noqa: ANN202 - matplotlib types
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, list(figure.subplots(1, ncols, squeeze=False, sharey=sharey)[0])


def _legend_outside(axis: Any) -> None:
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def _error_bar(payload: dict[str, Any], method: str, key: str, center: float) -> list[list[float]] | None:
    """The bootstrap interval as an asymmetric error bar, else ±1 std over seeds, else none."""
    interval = payload["methods"][method].get("ci", {}).get(key)
    if isinstance(interval, list) and len(interval) == 2 and None not in interval:
        return [[max(center - interval[0], 0.0)], [max(interval[1] - center, 0.0)]]
    error = std(payload, method, key) or 0.0
    return [[error], [error]] if error else None


def _curves(payload: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [seed["curves"][method] for seed in payload.get("per_seed", {}).values()
            if method in seed.get("curves", {})]


def _mean_band(series: list[list[float | None]]) -> tuple[list[float], list[float]]:
    """Pointwise mean and sample std over seeds (a position with no value anywhere is NaN)."""
    length = min(len(s) for s in series)
    means, stds = [], []
    for i in range(length):
        values = [s[i] for s in series if s[i] is not None]
        if not values:
            means.append(math.nan)
            stds.append(math.nan)
            continue
        mean = sum(values) / len(values)
        means.append(mean)
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)
    return means, stds


def _as_float(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _curve_plot(payload: dict[str, Any], raw_key: str, smooth_key: str | None, ylabel: str, title: str,
                log_y: bool, dashed_key: str | None = None) -> bytes | None:
    colors = method_colors(list(payload["methods"]))
    methods = [m for m in trained_methods(payload) if _curves(payload, m)]
    if not methods:
        return None
    figure, (axis,) = _figure(7.5, 3.6)
    for method in methods:
        curves = _curves(payload, method)
        color = colors[method]
        for curve in curves:
            axis.plot(curve["step"], _as_float(curve[raw_key]), color=color, alpha=0.22, linewidth=0.8)
        if smooth_key is None:
            smoothed = [_as_float(smooth(_as_float(c[raw_key]))) for c in curves]
        else:
            smoothed = [_as_float(c[smooth_key]) for c in curves]
        mean, std = _mean_band(smoothed)
        steps = curves[0]["step"][: len(mean)]
        axis.plot(steps, mean, color=color, linewidth=1.8, label=method)
        if len(curves) > 1:
            axis.fill_between(steps, [m - s for m, s in zip(mean, std, strict=True)],
                              [m + s for m, s in zip(mean, std, strict=True)], color=color, alpha=0.18, linewidth=0)
        if dashed_key:
            _measured_points(axis, curves, dashed_key, color)
    if log_y:
        axis.set_yscale("log")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    _legend_outside(axis)
    return _png(figure)


def _measured_points(axis: Any, curves: list[dict[str, Any]], key: str, color: str) -> None:
    """A sparse series (the validation loss at its few steps), mean over seeds, dashed with markers."""
    series = [c.get(key) or [] for c in curves]
    mean, _ = _mean_band(series) if all(series) else ([], [])
    points = [(step, v) for step, v in zip(curves[0]["step"], mean, strict=False) if math.isfinite(v)]
    if points:
        axis.plot(*zip(*points, strict=True), color=color, linestyle="--", marker="o", markersize=3.5, linewidth=1.2)


@styled
def loss_curves(payload: dict[str, Any]) -> bytes | None:
    """Training loss per step: raw (faint, one line per seed) and smoothed (solid; band = ±1 std over seeds)."""
    raw = [v for m in trained_methods(payload) for c in _curves(payload, m) for v in c["loss"]
           if v is not None and v > 0]
    log_y = bool(raw) and max(raw) / min(raw) > 30  # a loss falling by orders of magnitude reads better on log y
    return _curve_plot(payload, "loss", "smoothed", "loss", "Training loss (faint: raw; solid: smoothed) and "
                       "validation loss (dashed)", log_y, dashed_key="validation_loss")


@styled
def grad_norm_curves(payload: dict[str, Any]) -> bytes | None:
    """Gradient norm per step: raw and smoothed, as the loss (log y when norms differ by orders of magnitude)."""
    norms = [v for m in trained_methods(payload) for c in _curves(payload, m) for v in c.get("grad_norm", [])
             if v is not None and v > 0]
    if not norms:
        return None
    log_y = max(norms) / min(norms) > 20
    return _curve_plot(payload, "grad_norm", None, "gradient norm", "Gradient norm (before clipping)", log_y)


@styled
def quality_vs_share(payload: dict[str, Any]) -> bytes | None:
    """Each quality score against the trainable share of parameters (log x); the base model as a line."""
    methods = payload["methods"]
    trained = [m for m in trained_methods(payload) if (number(methods[m].get("trainable_pct")) or 0) > 0]
    metrics = [(key, label) for key, label in quality_metrics(payload)
               if any(number(methods[m].get(key)) is not None for m in trained)]
    if not trained or not metrics:
        return None
    colors = method_colors(list(methods))
    figure, axes = _figure(3.3 * len(metrics) + 0.6, 3.4, len(metrics))
    offsets = [(7, 6), (7, -13), (7, 17), (7, -24)]  # alternate label positions so that close points stay legible
    for axis, (key, label) in zip(axes, metrics, strict=True):
        for i, method in enumerate(trained):
            x, y = number(methods[method].get("trainable_pct")), number(methods[method].get(key))
            if x is None or y is None:
                continue
            axis.errorbar([x], [y], yerr=_error_bar(payload, method, key, y), fmt="o", color=colors[method],
                          markersize=7, capsize=3, label=method)
            axis.annotate(method, (x, y), textcoords="offset points", xytext=offsets[i % len(offsets)], fontsize=8)
        base = number(methods.get(BASE, {}).get(key))
        if base is not None:
            axis.axhline(base, color=BASE_COLOR, linestyle="--", linewidth=1, label="base (untrained)")
        fewshot = number(methods.get(FEWSHOT, {}).get(key))
        if fewshot is not None:
            axis.axhline(fewshot, color=BASE_COLOR, linestyle=":", linewidth=1.2, label="base, few-shot")
        axis.set_xscale("log")
        axis.set_xlabel("trainable % of the base model (log)")
        axis.set_ylabel(label)
        axis.set_title(f"{label} vs trainable share")
        axis.margins(x=0.25, y=0.2)
    _legend_outside(axes[-1])
    return _png(figure)


@styled
def efficiency_bars(payload: dict[str, Any]) -> bytes | None:
    """Peak memory, training throughput and generation latency against the base model."""
    methods = payload["methods"]
    trained = trained_methods(payload)
    panels = [("peak_memory_mb", "peak memory (MB)", "Peak memory in training"),
              ("train_tokens_per_s", "tokens / s", "Training throughput"),
              ("latency_vs_base", "x base model", "Generation latency vs base")]
    panels = [p for p in panels if any(number(methods[m].get(p[0])) is not None for m in trained)]
    if not trained or not panels:
        return None
    colors = method_colors(list(methods))
    figure, axes = _figure(3.1 * len(panels) + 0.6, 3.2, len(panels))
    for axis, (key, ylabel, title) in zip(axes, panels, strict=True):
        names = [m for m in trained if number(methods[m].get(key)) is not None]
        values = [number(methods[m][key]) for m in names]
        errors = interval_errors(payload, names, key)
        if errors is None:
            errors = [std(payload, m, key) or 0.0 for m in names]
        positions = list(range(len(names)))
        axis.bar(positions, values, yerr=errors if any(errors) else None, capsize=3,
                 color=[colors[m] for m in names], alpha=0.85, error_kw={"elinewidth": 1})
        unit = "x" if key == "latency_vs_base" else ""
        axis.set_xticks(positions, [f"{m}\n{_short(v)}{unit}" for m, v in zip(names, values, strict=True)])
        if key == "latency_vs_base":
            axis.axhline(1.0, color=BASE_COLOR, linestyle="--", linewidth=1)
        axis.set_ylabel(ylabel)
        axis.set_title(title)
        axis.margins(y=0.15)
        axis.grid(axis="x", visible=False)
    return _png(figure)


def interval_errors(payload: dict[str, Any], names: list[str], key: str) -> list[list[float]] | None:
    """A figure's own intervals (latency vs base) as error bars (below, above), where every method has one."""
    bounds = [interval(payload, m, key) for m in names]
    if any(b is None for b in bounds):
        return None
    values = [value(payload, m, key) for m in names]
    return [[v - low for v, (low, _) in zip(values, bounds, strict=True)],
            [high - v for v, (_, high) in zip(values, bounds, strict=True)]]


def _short(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _linear_entries(payload: dict[str, Any], method: str, first_seed_only: bool) -> list[dict[str, Any]]:
    seeds = list(payload.get("per_seed", {}).values())
    if first_seed_only:
        seeds = seeds[:1]
    return [entry for seed in seeds for entry in seed.get("capacity", {}).get(method, {}).values()
            if entry.get("singular_values")]


@styled
def capacity_spectra(payload: dict[str, Any]) -> bytes | None:
    """Normalised singular values σ_i / σ_1 of every module's update (faint) and their median (solid)."""
    from matplotlib.ticker import MaxNLocator

    methods = [m for m in trained_methods(payload) if _linear_entries(payload, m, True)]
    if not methods:
        return None
    colors = method_colors(list(payload["methods"]))
    figure, axes = _figure(min(3.2 * len(methods) + 0.6, 12), 3.3, len(methods), sharey=True)
    for axis, method in zip(axes, methods, strict=True):
        spectra = []
        for entry in _linear_entries(payload, method, True):
            values = [v for v in entry["singular_values"] if v is not None]
            if not values or values[0] <= 0:
                continue
            # Values past the numerical rank are rounding noise of the float32 update: not drawn.
            values = values[: max(1, int(entry.get("update_jacobian_rank") or len(values)))]
            normalised = [v / values[0] for v in values]
            spectra.append(normalised)
            axis.plot(range(1, len(normalised) + 1), normalised, color=colors[method], alpha=0.2, linewidth=0.8)
        if spectra:
            length = max(len(s) for s in spectra)
            middle = [statistics.median(s[i] for s in spectra if i < len(s)) for i in range(length)]
            axis.plot(range(1, length + 1), middle, color=colors[method], linewidth=2, label="median over modules")
        erank = number(payload["methods"][method].get("effective_rank_median"))
        if erank is not None:
            axis.axvline(erank, color="black", linestyle=":", linewidth=1, label=f"median effective rank {erank:.1f}")
        axis.set_yscale("log")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("singular value index")
        axis.set_title(f"{method}: {len(spectra)} modules")
        axis.legend(loc="lower left")
    axes[0].set_ylabel(r"$\sigma_i\,/\,\sigma_1$")
    return _png(figure)


@styled
def capacity_ranks(payload: dict[str, Any]) -> bytes | None:
    """Per module (and seed): the update Jacobian rank of every per-token method, and apart from it
    the effective rank of the linear updates, so that only like measures share an axis."""
    colors = method_colors(list(payload["methods"]))
    panels = [(title, marker, rows) for title, marker, rows in (
        ("update Jacobian rank", "s", _capacity_rows(payload, "update_jacobian_rank")),
        ("effective rank (linear updates)", "o", _capacity_rows(payload, "effective_rank")),
    ) if rows]
    if not panels:
        return None
    width = sum(max(2.5, 1.1 * len(rows) + 1.2) for _, _, rows in panels) + 0.6
    figure, axes = _figure(min(width, 12), 3.3, len(panels))
    for axis, (title, marker, rows) in zip(axes, panels, strict=True):
        _rank_boxes(axis, rows, colors, marker)
        axis.set_title(title)
    axes[0].set_ylabel("rank")
    return _png(figure)


def _capacity_rows(payload: dict[str, Any], key: str) -> list[tuple[str, list[float]]]:
    """(method, values of ``key`` over its modules in every seed) for the methods that have any."""
    rows = []
    for method in trained_methods(payload):
        values = [float(e[key]) for seed in payload.get("per_seed", {}).values()
                  for e in seed.get("capacity", {}).get(method, {}).values() if number(e.get(key)) is not None]
        if values:
            rows.append((method, values))
    return rows


def _rank_boxes(axis: Any, rows: list[tuple[str, list[float]]], colors: dict[str, str], marker: str) -> None:
    positions = list(range(1, len(rows) + 1))
    axis.boxplot([values for _, values in rows], positions=positions, widths=0.5, showfliers=False,
                 medianprops={"color": "black"})
    for position, (method, values) in zip(positions, rows, strict=True):
        spread = [position + 0.18 * ((i * 0.618) % 1 - 0.5) for i in range(len(values))]  # deterministic jitter
        axis.scatter(spread, values, s=10, color=colors[method], alpha=0.6, zorder=3, marker=marker)
    axis.set_xticks(positions, [method for method, _ in rows])
    values = [v for _, vs in rows for v in vs if v > 0]
    if values and max(values) / min(values) > 20:  # full fine-tuning's rank beside a low-rank adapter's
        axis.set_yscale("log")
    else:
        axis.set_ylim(bottom=0)
    axis.grid(axis="x", visible=False)


@styled
def noise_curves(payload: dict[str, Any]) -> bytes | None:
    """Quality against depolarising noise, one line per shot count (exact expectations when shots is null or 0).

    Only where some row has depolarising noise short of the fully depolarised circuit (whose constant output the
    findings weigh on its own: beside the exact row alone it is no curve); the hardware model's rows have their
    own plot.
    """
    sets = {name: [r for r in rows if not r.get("gate_errors")] for name, rows in robustness_sets(payload).items()}
    if not any(0 < (number(r.get("depolarizing")) or 0) < 1 for rows in sets.values() for r in rows):
        return None
    metrics = [(key, label) for key, label in quality_metrics(payload)
               if any(number(r.get(key)) is not None for rows in sets.values() for r in rows)]
    if not sets or not metrics:
        return None
    figure, axes = _figure(3.4 * len(metrics) + 0.6, 3.4, len(metrics))
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P"]
    for axis, (key, label) in zip(axes, metrics, strict=True):
        probabilities = []
        for m_index, (method, rows) in enumerate(sets.items()):
            spread = payload.get("aggregate", {}).get(method, {}).get("robustness")
            groups: dict[Any, list[tuple[float, float, float]]] = {}
            for i, row in enumerate(rows):
                p, value = number(row.get("depolarizing")) or 0.0, number(row.get(key))
                if value is None:
                    continue
                std = 0.0
                if isinstance(spread, list) and i < len(spread) and isinstance(spread[i], dict):
                    std = (spread[i].get(key) or {}).get("std") or 0.0
                groups.setdefault(row.get("shots") or None, []).append((p, value, std))  # 0 shots: exact
                probabilities.append(p)
            ordered = sorted(groups, key=lambda s: (s is not None, -(s or 0)))  # exact, then most shots first
            for g_index, shots in enumerate(ordered):
                points = sorted(groups[shots])
                shots_label = "exact" if shots is None else f"{shots:,} shots"
                name = shots_label if len(sets) == 1 else f"{method}, {shots_label}"
                axis.errorbar([p for p, _, _ in points], [v for _, v, _ in points], yerr=[s for _, _, s in points],
                              linestyle=styles[m_index % len(styles)], marker=markers[g_index % len(markers)],
                              capsize=2, markersize=4, label=name)
        positive = [p for p in probabilities if p > 0]
        if positive and max(positive) / min(positive) > 50:
            axis.set_xscale("symlog", linthresh=min(positive))
        base = number(payload["methods"].get(BASE, {}).get(key))
        if base is not None:
            axis.axhline(base, color=BASE_COLOR, linestyle="--", linewidth=1, label="base (untrained)")
        axis.set_xlabel("depolarising probability p")
        axis.set_ylabel(label)
        axis.set_title(f"{label} under shots and noise")
    _legend_outside(axes[-1])
    return _png(figure)


@styled
def hardware_curves(payload: dict[str, Any]) -> bytes | None:
    """Quality against the two-qubit error rate of the hardware model (log x), with the exact and base-model
    lines and each device profile as a labelled point at its own two-qubit rate."""
    sets = robustness_sets(payload)
    metrics = [(key, label) for key, label in quality_metrics(payload)
               if any(error_curve(rows, key) for rows in sets.values())]
    if not metrics:
        return None
    figure, axes = _figure(3.6 * len(metrics) + 0.6, 3.4, len(metrics))
    colors = method_colors(list(sets))
    for axis, (key, label) in zip(axes, metrics, strict=True):
        for name, rows in sets.items():
            curve = error_curve(rows, key)
            if not curve:
                continue
            axis.plot([e for e, _ in curve], [s for _, s in curve], marker="o", color=colors[name],
                      label=f"{name}, per-gate errors")
            exact = number(rows[0].get(key))
            if exact is not None:
                axis.axhline(exact, color=colors[name], linestyle=":", linewidth=1, label=f"{name}, exact")
            for row in rows:
                score = number(row.get(key))
                if row.get("device") and score is not None and isinstance(row.get("gate_errors"), list):
                    axis.plot([row["gate_errors"][1]], [score], marker="*", markersize=10, color=colors[name],
                              linestyle="none")
                    axis.annotate(row["device"], (row["gate_errors"][1], score), textcoords="offset points",
                                  xytext=(4, 4), fontsize=7)
        base = number(payload["methods"].get(BASE, {}).get(key))
        if base is not None:
            axis.axhline(base, color=BASE_COLOR, linestyle="--", linewidth=1, label="base (untrained)")
        axis.set_xscale("log")
        axis.invert_xaxis()  # better hardware to the right
        axis.set_xlabel("two-qubit gate error rate (single-qubit a tenth, readout equal)")
        axis.set_ylabel(label)
        axis.set_title(f"{label} on noisy hardware")
    _legend_outside(axes[-1])
    return _png(figure)


@styled
def learning_rate_sensitivity(payload: dict[str, Any]) -> bytes | None:
    """Validation loss against learning rate (log x), one line per tuned method; diverged trials as x on top."""
    tuning = payload.get("tuning") or {}
    if not tuning:
        return None
    figure, axes = _figure(5.4, 3.4)
    axis = axes[0]
    colors = method_colors(list(tuning))
    losses = [number(t.get("validation_loss")) for trials in tuning.values() for t in trials]
    top = max((v for v in losses if v is not None), default=1.0)
    for name, trials in tuning.items():
        points = sorted((t["learning_rate"], number(t.get("validation_loss"))) for t in trials)
        finished = [(rate, loss) for rate, loss in points if loss is not None]
        axis.plot([r for r, _ in finished], [v for _, v in finished], marker="o", color=colors[name], label=name)
        diverged = [rate for rate, loss in points if loss is None]
        if diverged:
            axis.scatter(diverged, [top] * len(diverged), marker="x", color=colors[name])
        chosen = number(payload["methods"].get(name, {}).get("learning_rate"))
        if chosen is not None:
            axis.scatter([chosen], [dict(finished).get(chosen, top)], s=80, facecolors="none",
                         edgecolors=colors[name])
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("validation loss")
    axis.set_title("Learning-rate sensitivity (circled: chosen; x: diverged)")
    _legend_outside(axis)
    return _png(figure)


@dataclass(frozen=True)
class Plot:
    """One figure of the HTML report: how to draw it from a payload, and the caption under it."""

    draw: Callable[[dict[str, Any]], bytes | None]
    caption: str


# id -> plot; the HTML report embeds each that returns an image, in this order.
PLOTS = {
    "plot-learning-rates": Plot(learning_rate_sensitivity, (
        "Validation loss at the end of each tuning trial against its learning rate (log scale), one line per "
        "method; the circled point is the chosen rate, an x a trial that diverged (drawn at the top)."
    )),
    "plot-loss": Plot(loss_curves, (
        "Training loss per optimizer step: faint lines are the raw loss (one per seed), solid lines the "
        "smoothed loss (mean over seeds; the band is ±1 standard deviation); dashed lines with dots are the "
        "validation loss (mean target-token loss on a fixed sample of the validation split)."
    )),
    "plot-grad-norm": Plot(grad_norm_curves, (
        "Gradient norm per step before clipping (log scale): raw (faint) and smoothed (solid)."
    )),
    "plot-quality": Plot(quality_vs_share, (
        "Test quality against the share of trainable parameters (log scale); error bars are ±1 standard "
        "deviation over seeds; the dashed line is the untrained base model."
    )),
    "plot-efficiency": Plot(efficiency_bars, (
        "Peak memory in training, training throughput, and generation latency per token as a multiple of the "
        "bare base model's (measured in the same process, in turns; its bars: the interval of the median ratio, "
        "the others' ± one standard deviation over seeds)."
    )),
    "plot-capacity-spectra": Plot(capacity_spectra, (
        "Singular values of each adapted module's update ΔW, divided by the largest (log scale); faint: one "
        "module each, solid: the median over modules (first seed)."
    )),
    "plot-capacity-rank": Plot(capacity_ranks, (
        "Effective rank (circles) or Jacobian rank (squares) of every adapted module, over all seeds; boxes "
        "show quartiles."
    )),
    "plot-noise": Plot(noise_curves, (
        "Quality of the quantum adapter evaluated with finite measurement shots and depolarising noise; "
        "'exact' is the noiseless expectation."
    )),
    "plot-hardware": Plot(hardware_curves, (
        "Quality of the quantum adapter with noise on every gate of the circuit a device runs, state "
        "preparation included, as the error rates fall (to the right); stars: device profiles' median rates; "
        "dotted: exact; dashed: the untrained base model."
    )),
}

"""What the report says about a quantum adapter on hardware: the error-rate curve, the rate at which half the
gain survives, the shots that leave the predictions unchanged, and the time one sentence would take."""

from __future__ import annotations

import math
from typing import Any

from qpeft.analysis.significance import significant
from qpeft.experiment.results import BASE
from qpeft.report.payload import number, robustness_sets, significance_level, value
from qpeft.report.tables import p_value_text

#: The model's limits, stated wherever its figures are.
HARDWARE_LIMITS = (
    "The hardware model puts a depolarising channel of the published error rate after every gate of the "
    "device's whole circuit (state preparation, trained layers, readout), and evaluates it in the "
    "global-depolarising approximation checked against Qiskit Aer (benchmarks/qaa_hardware_noise.py). It "
    "ignores crosstalk, leakage, idle decoherence, coherent and non-uniform errors, and calibration drift; "
    "times ignore queueing, compilation and the classical round trip between circuits."
)


def constant_output(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The exact re-evaluation with the circuit fully depolarised (p = 1): every readout at its fully-mixed value,
    so that every token gets the same update (s b with the z readout): the adapter without its circuit's say."""
    return next((row for row in rows if number(row.get("depolarizing")) == 1.0 and not row.get("shots")
                 and not row.get("gate_errors") and not row.get("device")), None)


def p_vs_exact(row: dict[str, Any], key: str) -> float | None:
    """The paired bootstrap's p-value of a re-evaluation against the exact run on ``key`` (None: not measured)."""
    p = row.get("p_vs_exact")
    return number(p.get(key)) if isinstance(p, dict) else None


def error_curve(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(two-qubit error rate, score) of the per-gate error rows without shots or a device profile, by rate."""
    points = [(float(row["gate_errors"][1]), number(row.get(key))) for row in rows
              if isinstance(row.get("gate_errors"), list) and not row.get("device") and not row.get("shots")]
    return sorted((e, s) for e, s in points if s is not None and e > 0)


def half_gain_rate(curve: list[tuple[float, float]], exact: float, base: float) -> tuple[str, float | None]:
    """Where the score falls to base + (exact - base) / 2, interpolated in log error rate.

    Returns ("at", rate), ("above", largest rate: still more than half there), ("below", smallest
    rate: less than half even there) or ("no-gain", None) when the adapter did not beat the base.
    """
    gain = exact - base
    if gain <= 0 or not curve:
        return "no-gain", None
    half = base + gain / 2
    if curve[0][1] < half:
        return "below", curve[0][0]
    for (low_e, low_s), (high_e, high_s) in zip(curve, curve[1:], strict=False):
        if low_s >= half > high_s:
            share = (low_s - half) / (low_s - high_s)
            return "at", 10 ** (math.log10(low_e) + share * (math.log10(high_e) - math.log10(low_e)))
    return "above", curve[-1][0]


def unchanged_shots(rows: list[dict[str, Any]]) -> tuple[int | None, float | None]:
    """The fewest noiseless shots that left every prediction unchanged, else (the most shots tried, its share)."""
    shot_rows = sorted((row for row in rows if row.get("shots") and not row.get("gate_errors")
                        and not row.get("device") and not row.get("depolarizing")), key=lambda r: r["shots"])
    for row in shot_rows:
        if number(row.get("predictions_unchanged_pct")) == 100.0:
            return int(row["shots"]), 100.0
    if shot_rows:
        return int(shot_rows[-1]["shots"]), number(shot_rows[-1].get("predictions_unchanged_pct"))
    return None, None


def duration_text(seconds: float) -> str:
    """Seconds in the largest unit of which there are at least two (a year of 365.25 days)."""
    for unit, size in (("years", 365.25 * 86400.0), ("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.2f} seconds"


def sentence_seconds(device: dict[str, Any], tokens: float, shots: int, beams: int = 1) -> float:
    """One generated item's hardware time: every token (prompt and generated, per beam) runs every circuit."""
    return float(device["seconds_per_token_per_shot"]) * shots * tokens * max(beams, 1)


def hardware_findings(payload: dict[str, Any], key: str, label: str) -> list[str]:
    """The half-gain error rate, each device profile's score, and one sentence's time on each device."""
    sentences = []
    base = value(payload, BASE, key)
    beams = int((payload.get("experiment", {}).get("eval") or {}).get("num_beams") or 1)
    alpha = significance_level(payload)
    for name, rows in robustness_sets(payload).items():
        exact = number(rows[0].get(key)) if rows else None
        floor_row = constant_output(rows)
        floor = number(floor_row.get(key)) if floor_row else None
        if floor_row is not None and exact is not None and floor is not None:
            sentences.append(_circuit_share_sentence(payload, name, key, label, rows[0], floor_row, alpha))
        curve = error_curve(rows, key)
        if exact is not None and base is not None and curve:
            circuit_p = p_vs_exact(floor_row, key) if floor_row else None
            sentences.append(_half_gain_sentence(name, label, curve, exact, base, floor, circuit_p, alpha))
        devices = [row for row in rows if row.get("device") and number(row.get(key)) is not None]
        if devices and exact is not None:
            scores = ", ".join(f"{row['device']} {row[key]:.2f}" for row in devices)
            references = [f"exact {exact:.2f}",
                          *([f"circuit output constant {floor:.2f}"] if floor is not None else []),
                          *([f"base model {base:.2f}"] if base is not None else [])]
            sentences.append(f"At today's devices' median error rates, {name}'s {label} was {scores} "
                             f"({', '.join(references)}). " + HARDWARE_LIMITS)
        time_sentence = _time_sentence(payload, name, rows, beams)
        if time_sentence:
            sentences.append(time_sentence)
    return sentences


def _circuit_share_sentence(payload: dict[str, Any], name: str, key: str, label: str, exact_row: dict[str, Any],
                            floor_row: dict[str, Any], alpha: float) -> str:
    """How much of the adapter's gain over the base model its circuit's output carries: the exact
    run against the same run with that output constant, in the main metric and (where measured) the test loss."""
    exact, floor, base = float(exact_row[key]), float(floor_row[key]), value(payload, BASE, key)
    loss, floor_loss = number(exact_row.get("test_loss")), number(floor_row.get("test_loss"))
    base_loss = value(payload, BASE, "test_loss") if loss is not None and floor_loss is not None else None
    measured = f"{label} was {floor:.2f}" + (f" and its test loss {floor_loss:.3f}" if floor_loss is not None else "")
    references = f"exact {exact:.2f}" + (f" and {loss:.3f}" if loss is not None and floor_loss is not None else "")
    if base is not None:
        references += f"; base model {base:.2f}" + (f" and {base_loss:.3f}" if base_loss is not None else "")
    p = p_vs_exact(floor_row, key)
    against = ("one re-evaluation, without an interval" if p is None else
               f"the paired bootstrap of its predictions against the exact run's, p = {p_value_text(p)}")
    text = ("With its circuit's output made constant (fully depolarised, p = 1: every readout at its fully-mixed "
            f"value, so that every token gets the same update), {name}'s {measured} ({references}; {against})")
    if base is None or exact <= base:
        return text + "."
    if exact <= floor:
        return text + f": its circuit's output carries none of {name}'s gain over the base model."
    text += (f": of the {exact - base:.2f} {label} {name} gains over the base model, its circuit's "
             f"output carries {exact - floor:.2f} ({100 * (exact - floor) / (exact - base):.0f}%)")
    if base_loss is not None and loss is not None and floor_loss is not None and base_loss > loss:
        text += (f"; of the {base_loss - loss:.3f} it takes off the test loss, {floor_loss - loss:.3f} "
                 f"({100 * (floor_loss - loss) / (base_loss - loss):.0f}%)")
    if p is not None and not significant(p, alpha):
        items = value(payload, name, "test_items")
        text += (f"; on {label} the sample cannot tell the circuit's share from none"
                 + (f" ({items:.0f} items)" if items else ""))
    return text + "."


def _half_gain_sentence(name: str, label: str, curve: list[tuple[float, float]], exact: float,
                        base: float, floor: float | None = None, circuit_p: float | None = None,
                        alpha: float = 0.05) -> str:
    """Where the noise takes half the gain: over the base model, or over the circuit's constant output (``floor``)
    where it was measured, since noise can take no more than the circuit adds; no rate where the paired bootstrap
    cannot tell what the circuit adds from nothing (``circuit_p``, exact against ``floor``, at least ``alpha``)."""
    rates = ", ".join(f"{score:.2f} at {error:g}" for error, score in curve)
    text = (f"With every gate of the device circuit noisy (two-qubit error rate e, single-qubit e/10, readout e), "
            f"{name}'s {label} was {rates} (exact {exact:.2f}, base model {base:.2f}; one re-evaluation each, "
            "without an interval)")
    if exact <= base:
        return text + f": {name} did not beat the base model, so there is no gain to keep."
    if floor is not None and (exact <= floor or (circuit_p is not None and not significant(circuit_p, alpha))):
        tell = ("" if exact <= floor else
                f", which the paired bootstrap cannot tell from nothing (p = {p_value_text(circuit_p)})")
        return text + (f": the circuit adds {max(exact - floor, 0.0):.2f} over its constant output ({floor:.2f})"
                       f"{tell}, so this curve cannot say how the circuit tolerates noise.")
    reference, gain = ((floor, f"what its circuit adds over its constant output ({floor:.2f})") if floor is not None
                       else (base, "its gain over the base model"))
    kind, rate = half_gain_rate(curve, exact, reference)
    if kind == "at":
        return text + f": it keeps half of {gain} at a two-qubit error rate of about {rate:.1e}."
    if kind == "above":
        return text + f": it keeps more than half of {gain} at every rate tried, up to {rate:g}."
    return text + f": it keeps less than half of {gain} even at {rate:g}, the lowest rate tried."


def _time_sentence(payload: dict[str, Any], name: str, rows: list[dict[str, Any]], beams: int) -> str | None:
    devices = payload["methods"].get(name, {}).get("qaa_hardware")
    prompt, generated = value(payload, name, "prompt_tokens_mean"), value(payload, name, "generated_tokens_mean")
    shots, unchanged = unchanged_shots(rows)
    if not isinstance(devices, dict) or not devices or prompt is None or generated is None or shots is None:
        return None
    tokens = prompt + generated
    if unchanged == 100.0:
        basis = f"At {shots:,} shots per circuit (the fewest tried that left every prediction unchanged)"
    else:
        share = "an unknown share" if unchanged is None else f"{unchanged:.0f}%"
        basis = f"At {shots:,} shots per circuit (the most tried; they left {share} of the predictions unchanged)"
    parts = []
    for device, figures in devices.items():
        if not isinstance(figures, dict) or number(figures.get("seconds_per_token_per_shot")) is None:
            continue
        seconds = sentence_seconds(figures, tokens, shots, beams)
        fidelity = number(figures.get("fidelity_min"))
        parts.append(f"{device} {duration_text(seconds)}" + (f" (circuit fidelity {fidelity:.2g})"
                                                             if fidelity is not None else ""))
    if not parts:
        return None
    return (f"{basis}, one test item on hardware ({tokens:.0f} tokens on average, prompt and output, each "
            f"running {name}'s {next(iter(devices.values())).get('circuit_runs_per_token')} circuits in turn) "
            "would take: " + ", ".join(parts) + ". Noise shrinks every readout by the circuit fidelity, so recovering "
            "the same precision by rescaling would need about 1/fidelity² times as many shots.")

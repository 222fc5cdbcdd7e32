"""What the report says about a quantum adapter on hardware: the error-rate curve, the rate at which half the
gain survives, the shots that leave the predictions unchanged, and the time one sentence would take."""

from __future__ import annotations

import math
from typing import Any

from qpeft.experiment.results import BASE
from qpeft.report.payload import number, robustness_sets, value

#: The model's limits, stated wherever its figures are.
HARDWARE_LIMITS = (
    "The hardware model puts a depolarising channel of the published error rate after every gate of the "
    "device's whole circuit (state preparation, trained layers, readout), and evaluates it in the "
    "global-depolarising approximation checked against Qiskit Aer (benchmarks/qaa_hardware_noise.py). It "
    "ignores crosstalk, leakage, idle decoherence, coherent and non-uniform errors, and calibration drift; "
    "times ignore queueing, compilation and the classical round trip between circuits."
)


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
    for name, rows in robustness_sets(payload).items():
        exact = number(rows[0].get(key)) if rows else None
        curve = error_curve(rows, key)
        if exact is not None and base is not None and curve:
            sentences.append(_half_gain_sentence(name, label, curve, exact, base))
        devices = [row for row in rows if row.get("device") and number(row.get(key)) is not None]
        if devices and exact is not None:
            scores = ", ".join(f"{row['device']} {row[key]:.2f}" for row in devices)
            sentences.append(f"At today's devices' median error rates, {name}'s {label} was {scores} "
                             f"(exact {exact:.2f}" + (f", base model {base:.2f})" if base is not None else ")")
                             + ". " + HARDWARE_LIMITS)
        time_sentence = _time_sentence(payload, name, rows, beams)
        if time_sentence:
            sentences.append(time_sentence)
    return sentences


def _half_gain_sentence(name: str, label: str, curve: list[tuple[float, float]], exact: float,
                        base: float) -> str:
    kind, rate = half_gain_rate(curve, exact, base)
    rates = ", ".join(f"{score:.2f} at {error:g}" for error, score in curve)
    text = (f"With every gate of the device circuit noisy (two-qubit error rate e, single-qubit e/10, readout e), "
            f"{name}'s {label} was {rates} (exact {exact:.2f}, base model {base:.2f}; one re-evaluation each, "
            "without an interval)")
    if kind == "no-gain":
        return text + f": {name} did not beat the base model, so there is no gain to keep."
    if kind == "at":
        return text + f": it keeps half its gain over the base model at a two-qubit error rate of about {rate:.1e}."
    if kind == "above":
        return text + f": it keeps more than half its gain at every rate tried, up to {rate:g}."
    return text + f": it keeps less than half its gain even at {rate:g}, the lowest rate tried."


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

"""The hardware findings by hand: the half-gain error rate, the unchanged shots and one sentence's time."""

import math

import pytest

from qpeft.report.findings import findings
from qpeft.report.hardware import duration_text, error_curve, half_gain_rate, sentence_seconds, unchanged_shots
from report.test_report_html import synthetic_payload


def sweep(scores: dict[float, float]) -> list[dict]:
    return [{"shots": None, "gate_errors": [e / 10, e, e], "device": None, "bleu": s} for e, s in scores.items()]


def test_half_gain_rate_interpolates_in_log_error_rate():
    # exact 50, base 10: half the gain is 30, between 40 at 1e-3 and 20 at 1e-2: half-way in log e
    curve = error_curve(sweep({1e-2: 20.0, 1e-3: 40.0, 1e-4: 49.0}), "bleu")
    assert curve == [(1e-4, 49.0), (1e-3, 40.0), (1e-2, 20.0)]
    kind, rate = half_gain_rate(curve, 50.0, 10.0)
    assert kind == "at" and rate == pytest.approx(10**-2.5)
    assert half_gain_rate(curve, 50.0, -20.0) == ("above", 1e-2)  # 20 is still above 15
    assert half_gain_rate(curve, 100.0, 10.0) == ("below", 1e-4)  # 49 is under 55 already
    assert half_gain_rate(curve, 5.0, 10.0) == ("no-gain", None)


def test_device_rows_and_shot_rows_stay_off_the_error_curve():
    rows = sweep({1e-3: 40.0}) + [{"shots": None, "gate_errors": [1e-4, 1e-3, 1e-2], "device": "x", "bleu": 1.0},
                                  {"shots": 100, "gate_errors": [1e-4, 1e-3, 1e-3], "device": None, "bleu": 2.0}]
    assert error_curve(rows, "bleu") == [(1e-3, 40.0)]


def test_unchanged_shots_is_the_fewest_that_keep_every_prediction():
    rows = [{"shots": None, "predictions_unchanged_pct": 100.0},
            {"shots": 10000, "predictions_unchanged_pct": 100.0}, {"shots": 1000, "predictions_unchanged_pct": 100.0},
            {"shots": 100, "predictions_unchanged_pct": 60.0},
            {"shots": 10, "gate_errors": [0, 0, 0], "predictions_unchanged_pct": 100.0}]  # not a noiseless row
    assert unchanged_shots(rows) == (1000, 100.0)
    assert unchanged_shots([{"shots": 100, "predictions_unchanged_pct": 60.0},
                            {"shots": 1000, "predictions_unchanged_pct": 90.0}]) == (1000, 90.0)
    assert unchanged_shots([{"shots": None}]) == (None, None)


def test_sentence_time_by_hand():
    # 60 circuits of 0.45 ms per shot = 27 ms per token and shot; 50 tokens, 1,000 shots, 2 beams
    device = {"seconds_per_token_per_shot": 60 * 0.45e-3}
    assert sentence_seconds(device, 50.0, 1000, 2) == pytest.approx(60 * 0.45e-3 * 50 * 1000 * 2)


def test_the_report_states_half_gain_device_scores_and_time():
    payload = synthetic_payload(seeds=(0,))
    sentences = findings(payload)
    half = next(s for s in sentences if s.startswith("With every gate of the device circuit noisy"))
    assert "keeps half its gain over the base model at a two-qubit error rate of about" in half
    devices = next(s for s in sentences if s.startswith("At today's devices' median error rates"))
    assert "ibm-heron" in devices and "crosstalk" in devices
    time = next(s for s in sentences if "one test item on hardware" in s)
    # 60 tokens x 1,000 shots (the fewest with every prediction unchanged) x 0.027 s = 27 minutes
    assert "60 tokens" in time and "At 1,000 shots per circuit (the fewest tried that left every" in time
    assert "ibm-heron 27.0 minutes" in time
    assert math.isclose(sentence_seconds({"seconds_per_token_per_shot": 0.027}, 60, 1000), 1620.0)


def test_durations_read_in_the_largest_unit_there_are_two_of():
    assert duration_text(1.5) == "1.50 seconds"
    assert duration_text(150) == "2.5 minutes"
    assert duration_text(3 * 86400) == "3.0 days"
    assert duration_text(136 * 365.25 * 86400) == "136.0 years"  # not 49,674.0 days
    assert duration_text(400 * 86400) == "400.0 days"  # 1.1 years: fewer than two

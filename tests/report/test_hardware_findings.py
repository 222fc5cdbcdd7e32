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
    assert "keeps half of its gain over the base model at a two-qubit error rate of about" in half
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


def demo_like_payload() -> dict:
    """The demo's QAA figures (stop 33): with its readout constant, QAA scored what it scored exactly (BLEU's paired
    bootstrap p 0.89, measured on that demo's two prediction files)."""
    payload = synthetic_payload(seeds=(0,), robustness=False)
    payload["methods"]["base"].update(bleu=13.92, test_loss=2.505)
    payload["methods"]["qaa"].update(bleu=52.03, test_loss=1.533)
    payload["methods"]["qaa"]["robustness"] = [
        {"shots": None, "depolarizing": 0.0, "bleu": 52.03, "test_loss": 1.533},
        {"shots": 1000, "depolarizing": 0.0, "bleu": 52.67, "test_loss": None},
        *sweep({1e-2: 51.0, 1e-3: 55.0, 1e-4: 52.2}),
        {"shots": None, "depolarizing": 0.0, "gate_errors": [4.6e-4, 1.8e-3, 9.5e-3], "device": "ibm-heron",
         "bleu": 51.52},
        {"shots": None, "depolarizing": 1.0, "bleu": 51.52, "test_loss": 1.586, "p_vs_exact": {"bleu": 0.89}}]
    return payload


def test_the_circuit_s_share_of_the_gain_is_measured_against_its_constant_output():
    """A fully depolarised circuit gives every token the same update: what is left of QAA's gain is not the
    circuit's, and a noise curve that never falls below it says nothing about the circuit."""
    sentences = findings(demo_like_payload())
    share = next(s for s in sentences if s.startswith("With its circuit's output made constant"))
    assert "qaa's BLEU was 51.52 and its test loss 1.586 (exact 52.03 and 1.533; base model 13.92 and 2.505" in share
    assert "2.505; the paired bootstrap of its predictions against the exact run's, p = 0.890)" in share
    assert ("of the 38.11 BLEU qaa gains over the base model, its circuit's output carries 0.51 (1%); "
            "of the 0.972 it takes off the test loss, 0.053 (5%); on BLEU the sample cannot tell the circuit's "
            "share from none") in share
    half = next(s for s in sentences if s.startswith("With every gate of the device circuit noisy"))
    assert "more than half" not in half and "keeps" not in half
    assert ("the circuit adds 0.51 over its constant output (51.52), which the paired bootstrap cannot tell from "
            "nothing (p = 0.890), so this curve cannot say how the circuit tolerates noise.") in half
    devices = next(s for s in sentences if s.startswith("At today's devices' median error rates"))
    assert "exact 52.03, circuit output constant 51.52, base model 13.92" in devices
    noise = [s for s in sentences if s.startswith("Under finite shots")]
    assert noise and all("depolarising p = 1" not in s for s in noise)  # the constant-output row is not "noise"


def test_the_half_gain_rate_counts_the_gain_over_the_constant_output_where_there_is_one():
    payload = demo_like_payload()
    # the circuit carries 22 of the 38 points, a difference the paired bootstrap tells from none
    payload["methods"]["qaa"]["robustness"][-1].update(bleu=30.0, p_vs_exact={"bleu": 0.001})
    payload["methods"]["qaa"]["robustness"][2:5] = sweep({1e-2: 31.0, 1e-3: 45.0, 1e-4: 52.0})
    sentences = findings(payload)
    half = next(s for s in sentences if s.startswith("With every gate of the device circuit noisy"))
    # half of the 22.03 over 30.00 is 41.02: between 45 at 1e-3 and 31 at 1e-2
    assert "keeps half of what its circuit adds over its constant output (30.00) at a two-qubit error rate" in half
    share = next(s for s in sentences if s.startswith("With its circuit's output made constant"))
    assert "cannot tell" not in share and "p = 0.001)" in share
    del payload["methods"]["qaa"]["robustness"][-1]["p_vs_exact"]  # a payload without the test: the rate, unqualified
    half = next(s for s in findings(payload) if s.startswith("With every gate of the device circuit noisy"))
    assert "keeps half of what its circuit adds over its constant output (30.00)" in half


def test_the_constant_output_alone_draws_no_depolarising_curve():
    from qpeft.report.plots import noise_curves

    payload = demo_like_payload()
    assert noise_curves(payload) is None  # p = 0 and p = 1 alone: two points, no curve
    payload["methods"]["qaa"]["robustness"].append({"shots": None, "depolarizing": 0.01, "bleu": 50.0})
    assert noise_curves(payload) is not None


def test_a_constant_output_that_scores_higher_leaves_the_circuit_none_of_the_gain():
    payload = demo_like_payload()
    payload["methods"]["qaa"]["robustness"][-1].update(bleu=53.0, test_loss=None)  # no test loss measured
    sentences = findings(payload)
    share = next(s for s in sentences if s.startswith("With its circuit's output made constant"))
    assert "qaa's BLEU was 53.00 (exact 52.03; base model 13.92; the paired bootstrap" in share
    assert share.endswith("its circuit's output carries none of qaa's gain over the base model.")
    half = next(s for s in sentences if s.startswith("With every gate of the device circuit noisy"))
    assert "the circuit adds 0.00 over its constant output (53.00)" in half


def test_the_shots_sentence_names_only_what_the_paired_bootstrap_separates_from_the_exact_run():
    payload = demo_like_payload()
    shots = payload["methods"]["qaa"]["robustness"][1]
    noise = next(s for s in findings(payload) if s.startswith("Under finite shots"))
    assert "without an interval" in noise  # not tested against the exact run: no claim either way
    shots["p_vs_exact"] = {"bleu": 0.686}  # the demo's 1,000 shots
    noise = next(s for s in findings(payload) if s.startswith("Under finite shots"))
    assert noise.endswith("(each paired with the exact run on the same items, the bootstrap separates none of "
                          "them from it at p < 0.05).")
    shots["p_vs_exact"] = {"bleu": 0.004}
    noise = next(s for s in findings(payload) if s.startswith("Under finite shots"))
    assert noise.endswith("the bootstrap separates 1,000 shots, p 0.004).")


def test_the_noise_table_shows_each_re_evaluation_s_p_value_against_the_exact_run():
    from qpeft.report.tables import robustness_table

    payload = demo_like_payload()
    headers, rows = robustness_table(payload)
    column = headers.index("p vs exact (BLEU)")
    assert rows[-1][column] == "0.890" and rows[0][column] == "–"  # the exact run is not tested against itself
    del payload["methods"]["qaa"]["robustness"][-1]["p_vs_exact"]
    assert "p vs exact (BLEU)" not in robustness_table(payload)[0]  # no test run, no column


@pytest.mark.parametrize("alpha", [0.95, "0.95", None, -1, float("nan"), True])
def test_every_hardware_sentence_tests_at_the_payload_s_alpha_and_a_malformed_one_falls_back(alpha):
    """The comparison's own alpha decides every "can(not) tell" (p 0.890 is a difference at alpha 0.95);
    a results.json whose alpha is not a number in (0, 1) is read at the default 0.05, not crashed on."""
    payload = demo_like_payload()
    payload["analysis"]["alpha"] = alpha
    payload["methods"]["qaa"]["robustness"][1]["p_vs_exact"] = {"bleu": 0.686}
    sentences = findings(payload)
    share = next(s for s in sentences if s.startswith("With its circuit's output made constant"))
    noise = next(s for s in sentences if s.startswith("Under finite shots"))
    half = next(s for s in sentences if s.startswith("With every gate of the device circuit noisy"))
    if alpha == 0.95:
        assert "cannot tell" not in share and "cannot tell" not in half
        assert noise.endswith("the bootstrap separates 1,000 shots, p 0.686).")
    else:
        assert "the sample cannot tell the circuit's share from none" in share
        assert "which the paired bootstrap cannot tell from nothing (p = 0.890)" in half
        assert noise.endswith("none of them from it at p < 0.05).")

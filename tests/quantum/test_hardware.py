"""The hardware noise model: exact at zero error, checked against Qiskit Aer, profiles and time by hand."""

import math

import pytest
import torch
from qiskit import QuantumCircuit

from qpeft.quantum import PROFILES, CircuitSpec, DeviceProfile, GateErrors, simulate, simulate_noisy
from qpeft.quantum.aer_ref import aer_density_readout
from qpeft.quantum.hardware import (
    circuit_fidelity,
    circuit_seconds,
    device_circuit,
    device_figures,
    gate_counts,
    heavy_hex_distance,
    shot_seconds,
)
from qpeft.utils.errors import UsageError


def inputs(n: int, seed: int = 0, tokens: int = 3):
    gen = torch.Generator().manual_seed(seed)
    spec = CircuitSpec(n, 2, "ry", "z")
    return spec, torch.randn(tokens, spec.dim, generator=gen, dtype=torch.float64), \
        torch.rand(spec.angle_shape, generator=gen, dtype=torch.float64) * (2 * math.pi)


@pytest.mark.parametrize("readout", ["z", "probs"])
def test_zero_error_rates_are_exact_evaluation(readout):
    spec, x, angles = inputs(4)
    spec = CircuitSpec(4, 2, "ry", readout)
    counts = gate_counts(device_circuit(4, 2, "ry"))
    fidelity = circuit_fidelity(counts, GateErrors(0.0, 0.0, 0.0))
    assert fidelity == 1.0
    noisy = simulate_noisy(x, angles, spec, fidelity=fidelity, readout_error=0.0)
    assert torch.equal(noisy, simulate(x, angles, spec))


@pytest.mark.parametrize("readout", ["z", "probs"])
def test_readout_error_on_one_qubit_by_hand(readout):
    # One qubit, x = (3, 4): amplitudes (0.6, 0.8) before RY(a) RY(b) (one per layer, no CNOT on one wire).
    spec = CircuitSpec(1, 2, "ry", readout)
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    angles = torch.tensor([[0.3], [0.5]], dtype=torch.float64)
    theta = math.atan2(0.8, 0.6) * 2 + 0.8  # RY(t) turns the Bloch angle by t
    p0, p1 = math.cos(theta / 2) ** 2, math.sin(theta / 2) ** 2
    e = 0.1
    seen0, seen1 = p0 * (1 - e) + p1 * e, p1 * (1 - e) + p0 * e  # a flip moves mass between the two outcomes
    expected = [seen0 - seen1] if readout == "z" else [seen0, seen1]
    noisy = simulate_noisy(x, angles, spec, readout_error=e)
    assert torch.allclose(noisy[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("readout", ["z", "probs"])
def test_zero_input_stays_zero_and_probabilities_stay_normalised(readout):
    spec = CircuitSpec(3, 2, "ry", readout)
    _, x, angles = inputs(3)
    x[1] = 0
    noisy = simulate_noisy(x, angles, spec, fidelity=0.7, readout_error=0.05)
    assert noisy[1].abs().max() == 0
    if readout == "probs":
        assert torch.allclose(noisy[[0, 2]].sum(-1), torch.ones(2, dtype=torch.float64))
        assert noisy.min() >= 0


def test_full_noise_leaves_the_maximally_mixed_readout():
    spec = CircuitSpec(3, 2, "ry", "probs")
    _, x, angles = inputs(3)
    noisy = simulate_noisy(x, angles, spec, fidelity=0.0, readout_error=0.0)
    assert torch.allclose(noisy, torch.full_like(noisy, 1 / 8))


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_global_depolarising_approximation_against_aer_density_matrix(n):
    """Stated tolerance: the approximation is within a quarter of (1 - F) of Aer's per-gate density matrix,
    and at least three times closer to it than the noiseless readout (it captures most of the noise)."""
    spec, x, angles = inputs(n, seed=n, tokens=2)
    errors = GateErrors(1e-3, 1e-2, 1e-2)
    for token in x:
        reference, circuit = aer_density_readout(token, angles, spec, errors)
        fidelity = circuit_fidelity(gate_counts(circuit), errors)
        approx = simulate_noisy(token, angles, spec, fidelity=fidelity, readout_error=errors.readout)
        error, noise = (approx - reference).abs().max(), (simulate(token, angles, spec) - reference).abs().max()
        assert error <= 0.25 * (1 - fidelity)
        assert error * 3 <= noise


def test_readout_flips_alone_match_aer_exactly():
    spec, x, angles = inputs(3, seed=5, tokens=1)
    errors = GateErrors(0.0, 0.0, 0.03)
    reference, _ = aer_density_readout(x[0], angles, spec, errors)
    approx = simulate_noisy(x[0], angles, spec, readout_error=errors.readout)
    assert torch.allclose(approx, reference, atol=1e-9)


def test_device_circuit_counts_state_preparation_and_layers():
    counts = gate_counts(device_circuit(4, 2, "ry"))
    assert counts["two"] > 2 * 4  # the ring's 8 CNOTs plus the preparation's
    routed = gate_counts(device_circuit(4, 2, "ry", "heavy-hex"))
    assert routed["two"] > counts["two"] and routed["measured"] >= 4  # SWAPs, on the lattice's qubits
    assert heavy_hex_distance(10) == 3 and heavy_hex_distance(20) == 5


def test_fidelity_is_the_probability_that_no_gate_error_fires():
    errors = GateErrors(2e-3, 8e-3, 0.0)
    # Pauli error probabilities: 2e-3 * 3/2 = 3e-3 per u, 8e-3 * 5/4 = 1e-2 per cx
    assert circuit_fidelity({"single": 10, "two": 3}, errors) == pytest.approx(0.997**10 * 0.99**3, rel=1e-12)


def test_schedule_time_of_a_hand_counted_circuit():
    profile = DeviceProfile("toy", "toy", GateErrors(0, 0, 0), single_gate_s=1.0, two_gate_s=10.0,
                            measure_s=100.0, shot_overhead_s=1000.0, connectivity="all-to-all", source="test")
    circuit = QuantumCircuit(3)
    circuit.cx(0, 1)  # 0 .. 10 on qubits 0, 1
    circuit.u(0.1, 0.2, 0.3, 2)  # 0 .. 1 on qubit 2, in parallel
    circuit.u(0.1, 0.2, 0.3, 0)  # 10 .. 11
    circuit.cx(2, 1)  # max(1, 10) .. 20
    assert circuit_seconds(circuit, profile) == 20.0
    assert shot_seconds(circuit, profile) == 1120.0


def test_profiles_validate_their_numbers():
    for profile in PROFILES.values():
        errors = profile.errors
        assert 0 < errors.single < errors.two < 0.05 and 0 < errors.readout < 0.05
        assert 0 < profile.single_gate_s <= profile.two_gate_s < profile.shot_overhead_s + profile.two_gate_s
        assert profile.source and any(str(year) in profile.source for year in range(2020, 2030))
        figures = device_figures(CircuitSpec(3, 2, "ry", "z"), profile)
        assert 0 < figures["fidelity"] < 1 and figures["shot_seconds"] > profile.shot_overhead_s
    with pytest.raises(UsageError, match="two-qubit"):
        GateErrors(1e-3, 0.9, 0.0)
    with pytest.raises(UsageError, match="connectivity"):
        DeviceProfile("bad", "", GateErrors(0, 0, 0), 0, 0, 0, 0, "ring", "")
    with pytest.raises(UsageError, match="times"):
        DeviceProfile("bad", "", GateErrors(0, 0, 0), -1, 0, 0, 0, "all-to-all", "")


def test_gate_errors_parse_and_refuse():
    assert GateErrors.parse("1e-4, 1e-3,1e-2") == GateErrors(1e-4, 1e-3, 1e-2)
    for bad in ("1e-3,1e-2", "a,b,c", "1e-3,1e-3,0.7"):
        with pytest.raises(UsageError):
            GateErrors.parse(bad)

"""The fast simulator against PennyLane, and its two backward paths against each other."""

import itertools

import pytest
import torch

from qpeft.quantum import CircuitSpec, fused_cpu, pennylane_reference, simulate
from qpeft.utils.errors import UsageError


def inputs(spec: CircuitSpec, tokens: int = 3, seed: int = 0, dtype=torch.float64, width: int | None = None):
    """Random inputs of a width that is not a power of two (when n > 1), one of them zero."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, width or max(1, spec.dim - 3), generator=gen, dtype=dtype)
    x[1] = 0
    angles = torch.randn(spec.angle_shape, generator=gen, dtype=dtype) * 2
    return x, angles


def value_and_grads(fn, x, angles):
    """fn's output and the gradients of a fixed random weighting of it wrt x and angles."""
    x, angles = x.clone().requires_grad_(), angles.clone().requires_grad_()
    out = fn(x, angles)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    weights = weights.to(out.dtype)
    grad_x, grad_angles = torch.autograd.grad((out * weights).sum(), (x, angles))
    return out.detach(), grad_x, grad_angles


def assert_close(ours, reference, atol):
    for a, b in zip(ours, reference, strict=True):
        assert torch.isfinite(a).all()
        assert (a.double() - b.double()).abs().max().item() <= atol


def paths(spec: CircuitSpec) -> list[dict]:
    """Every way simulate can run this circuit on CPU: both memory-lean kernels, the accelerators' one-matrix
    kernel, plain autograd."""
    kernels = ["torch", "fused", "unitary"] if spec.ansatz == "ry" else ["torch", "unitary"]
    return [{"kernel": kernel} for kernel in kernels] + [{"memory_lean": False}]


CASES = list(itertools.product(range(1, 11), (1, 3), ("ry", "ry_rz"), ("z", "probs")))


@pytest.mark.parametrize(("n", "layers", "ansatz", "readout"), CASES)
def test_float64_matches_pennylane(n, layers, ansatz, readout):
    spec = CircuitSpec(n, layers, ansatz, readout)
    # Narrow inputs (like 576 of 1024) leave whole blocks of the padded state at zero.
    width = None if layers == 1 else spec.dim * 9 // 16 + 1
    x, angles = inputs(spec, seed=n + layers, width=width)
    reference = value_and_grads(lambda a, b: pennylane_reference(a, b, spec), x, angles)
    for kwargs in paths(spec):
        ours = value_and_grads(lambda a, b, kwargs=kwargs: simulate(a, b, spec, **kwargs), x, angles)
        assert_close(ours, reference, 1e-10)
    # The zero input reads out zero, with zero gradient.
    assert ours[0][1].abs().max() == 0 and ours[1][1].abs().max() == 0


@pytest.mark.parametrize(
    ("n", "ansatz", "readout"),
    [(2, "ry", "z"), (5, "ry_rz", "probs"), (10, "ry", "z"), (10, "ry_rz", "z"), (7, "ry", "probs")],
)
def test_float32_matches_pennylane(n, ansatz, readout):
    spec = CircuitSpec(n, 2, ansatz, readout)
    x, angles = inputs(spec, seed=3)
    reference = value_and_grads(lambda a, b: pennylane_reference(a, b, spec), x, angles)
    for kwargs in paths(spec):
        ours = value_and_grads(
            lambda a, b, kwargs=kwargs: simulate(a, b, spec, **kwargs), x.float(), angles.float()
        )
        assert ours[0].dtype == torch.float32
        assert_close(ours, reference, 1e-5)


@pytest.mark.parametrize("ansatz", ["ry", "ry_rz"])
@pytest.mark.parametrize("readout", ["z", "probs"])
def test_memory_lean_equals_plain_autograd_on_a_large_batch(ansatz, readout):
    spec = CircuitSpec(10, 3, ansatz, readout)
    x, angles = inputs(spec, tokens=150, seed=11, width=576)  # two blocks of tokens on CPU
    plain = value_and_grads(lambda a, b: simulate(a, b, spec, memory_lean=False), x, angles)
    for kwargs in paths(spec)[:-1]:
        lean = value_and_grads(lambda a, b, kwargs=kwargs: simulate(a, b, spec, **kwargs), x, angles)
        assert_close(lean, plain, 1e-12)


def saved_bytes(fn, *inputs) -> int:
    """Bytes autograd keeps for backward, other than the inputs themselves."""
    skip = {t.untyped_storage().data_ptr() for t in inputs}
    saved: dict[int, int] = {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in skip:
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(saved.values())


def test_memory_lean_keeps_nothing_that_grows_with_tokens():
    spec = CircuitSpec(10, 2)
    angles = torch.randn(spec.angle_shape, dtype=torch.float64, requires_grad=True)
    for kwargs in paths(spec):
        sizes = []
        for tokens in (100, 200):
            x = torch.randn(tokens, 576, dtype=torch.float64, requires_grad=True)
            sizes.append(saved_bytes(lambda x=x, kwargs=kwargs: simulate(x, angles, spec, **kwargs), x, angles))
        per_token = (sizes[1] - sizes[0]) / 100
        if kwargs.get("kernel") == "unitary":  # plain autograd around one matmul: the input and output states
            assert 2 * spec.dim * 8 <= per_token <= 2 * spec.dim * 8 + 128  # and a few numbers per token
            continue
        lean = kwargs.get("memory_lean", True)
        assert per_token == 0 if lean else per_token >= 4 * spec.dim * 8  # plain: several 2**n states


@pytest.mark.parametrize("ansatz", ["ry", "ry_rz"])
def test_gradcheck_and_higher_derivatives_of_plain_autograd(ansatz):
    spec = CircuitSpec(3, 2, ansatz)
    x, angles = inputs(spec, tokens=2, seed=5)
    x[1] = torch.randn(x.shape[1], dtype=x.dtype)  # second derivatives of the zero case are not smooth
    args = (x.requires_grad_(), angles.requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: simulate(a, b, spec), args)
    assert torch.autograd.gradgradcheck(lambda a, b: simulate(a, b, spec, memory_lean=False), args)


def test_leading_dims_scale_and_dtypes():
    spec = CircuitSpec(4, 2)
    x, angles = inputs(spec, tokens=6, seed=2)
    flat = simulate(x, angles, spec)
    assert simulate(x.reshape(2, 3, -1), angles, spec).shape == (2, 3, 4)
    assert torch.equal(simulate(x.reshape(2, 3, -1), angles, spec).reshape(6, 4), flat)
    assert simulate(x[0], angles, spec).shape == (4,)
    assert simulate(x[:0], angles, spec).shape == (0, 4)
    # The norm of x is lost: the readout of c * x equals that of x.
    assert torch.allclose(simulate(3.5 * x, angles, spec), flat, atol=1e-13)
    # Half-precision inputs are computed (and returned) in float32.
    assert simulate(x.half(), angles.half(), spec).dtype == torch.float32
    probs = simulate(x, angles, CircuitSpec(4, 2, readout="probs"))
    assert torch.allclose(probs.sum(-1), torch.tensor([1.0, 0, 1, 1, 1, 1], dtype=torch.float64))


def test_bad_shapes_raise_usage_error():
    spec = CircuitSpec(3, 2)
    with pytest.raises(UsageError):
        simulate(torch.randn(2, 9), torch.randn(2, 3), spec)
    with pytest.raises(UsageError):
        simulate(torch.randn(2, 8), torch.randn(3, 2), spec)
    with pytest.raises(UsageError, match="kernel"):
        simulate(torch.randn(2, 8), torch.randn(2, 3), spec, kernel="qulacs")
    with pytest.raises(UsageError, match="real RY"):
        simulate(torch.randn(2, 8), torch.randn(2, 2, 3), CircuitSpec(3, 2, "ry_rz"), kernel="fused")


@pytest.mark.parametrize(("n", "readout"), [(1, "z"), (5, "probs"), (10, "z"), (10, "probs")])
@pytest.mark.parametrize("tokens", [1, 8, 9, 40])
def test_both_fused_builds_match_pennylane(n, readout, tokens):
    # Up to 8 tokens run on the narrow build (8 per row), more on the wide one (32 per row, 40 = two rows).
    spec = CircuitSpec(n, 2, "ry", readout)
    x, angles = inputs(spec, tokens=tokens, seed=tokens) if tokens > 1 else inputs(spec, tokens=2, seed=1)
    x = x[:tokens]
    reference = value_and_grads(lambda a, b: pennylane_reference(a, b, spec), x, angles)
    assert_close(value_and_grads(lambda a, b: simulate(a, b, spec, kernel="fused"), x, angles), reference, 1e-10)


@pytest.mark.parametrize("readout", ["z", "probs"])
def test_the_fused_kernel_stays_exact_on_deep_circuits_whatever_form_each_rotation_takes(readout):
    # The kernel applies each rotation as f T, f = cos or sin of the half angle (the larger), and puts the
    # factors back once per layer: angles near pi make sin the larger, near 0 cos. Twelve layers of both: a
    # factor left out anywhere (a layer's, the readout's, the adjoint's scale) shows in values or gradients.
    spec = CircuitSpec(9, 12, "ry", readout)
    x, _ = inputs(spec, tokens=37, seed=5, width=300)
    gen = torch.Generator().manual_seed(6)
    angles = torch.where(torch.rand(spec.angle_shape, generator=gen) < 0.5, torch.pi, 0.0).double()
    angles = angles + 0.3 * torch.randn(spec.angle_shape, generator=gen, dtype=torch.float64)
    reference = value_and_grads(lambda a, b: simulate(a, b, spec, kernel="torch"), x, angles)
    assert_close(value_and_grads(lambda a, b: simulate(a, b, spec, kernel="fused"), x, angles), reference, 1e-10)
    single = value_and_grads(lambda a, b: simulate(a, b, spec, kernel="fused"), x.float(), angles.float())
    assert_close(single, reference, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("above", [1, 2, 3, 4])
def test_the_fused_backward_undoes_each_ring_whatever_the_wires_above_a_cache_block(dtype, above):
    # The wide build applies the wires of the low index bits block by block (256 rows of 32 floats, 128 of 32
    # doubles) and the `above` others over the whole state; below the last layer, the backward undoes the ring
    # inside the first pair's pass of those (an even count) or by a copy first (an odd one); with exactly two, the
    # rerun stops before the last layer's pair, whose pass then also seeds the adjoint of the z readout. Three
    # layers: two rings undone.
    low_bits = 8 if dtype == torch.float32 else 7
    spec = CircuitSpec(low_bits + above, 3, "ry", "z")
    x, angles = inputs(spec, tokens=40, seed=above, width=spec.dim * 9 // 16 + 1)
    reference = value_and_grads(lambda a, b: simulate(a, b, spec, kernel="torch"), x, angles)
    ours = value_and_grads(lambda a, b: simulate(a, b, spec, kernel="fused"), x.to(dtype), angles.to(dtype))
    assert_close(ours, reference, 1e-10 if dtype == torch.float64 else 1e-5)


def test_the_narrow_build_runs_at_most_eight_tokens():
    assert [fused_cpu.chunk_for(t) for t in (1, 8, 9, 1000)] == [8, 8, 32, 32]


def test_fused_kernel_is_built_here_and_splits_work_over_threads_without_changing_results():
    # The fused kernel needs a C compiler: this machine has one, so "auto" must not fall back.
    assert fused_cpu.available(torch.float32) and fused_cpu.available(torch.float64)
    spec = CircuitSpec(10, 2)
    x, angles = inputs(spec, tokens=150, seed=4, width=576)
    x, angles = x.float(), angles.float()
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(value_and_grads(lambda a, b: simulate(a, b, spec, kernel="fused"), x, angles))
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)  # the same chunks, the same per-chunk sums, whatever the split


def test_without_a_compiler_the_pytorch_kernel_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("QPEFT_CACHE", str(tmp_path))
    fused_cpu._library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="could not compile"):
            assert not fused_cpu.available(torch.float64)  # the inputs below are float64
        spec = CircuitSpec(4, 2)
        x, angles = inputs(spec, seed=6)
        torch.testing.assert_close(simulate(x, angles, spec), simulate(x, angles, spec, kernel="torch"))
        with pytest.raises(UsageError, match="C compiler"):
            simulate(x, angles, spec, kernel="fused")
    finally:
        fused_cpu._library.cache_clear()


def test_the_kernel_rule_takes_the_fused_kernel_for_real_circuits_on_cpu_only():
    from qpeft.quantum.simulator import auto_kernel

    cpu = torch.zeros(3, 8, dtype=torch.float64)
    assert auto_kernel(cpu, CircuitSpec(3, 2)) == ("fused" if fused_cpu.available(torch.float64) else "torch")
    assert auto_kernel(cpu, CircuitSpec(3, 2, "ry_rz")) == "torch"  # complex amplitudes: the PyTorch kernel
    # any other device (meta stands in for CUDA here): the PyTorch kernel, never the one-matrix kernel by itself
    assert auto_kernel(torch.zeros(3, 8, device="meta"), CircuitSpec(3, 2)) == "torch"


@pytest.mark.parametrize("layout", ["broadcast row", "every other column"])
def test_the_fused_kernel_takes_the_incoming_gradient_in_any_layout(layout):
    # the backward reads the incoming gradient in place at its row stride (a broadcast row arrives with stride
    # 0) and copies it only where its columns are not at unit stride: the same gradients as the PyTorch kernel
    spec = CircuitSpec(5, 2)
    x, angles = inputs(spec, tokens=40, seed=6)
    gen = torch.Generator().manual_seed(7)
    if layout == "broadcast row":
        weight = torch.randn(1, spec.output_dim, generator=gen, dtype=torch.float64).expand(40, -1)
    else:
        weight = torch.randn(40, 2 * spec.output_dim, generator=gen, dtype=torch.float64)[:, ::2]
    grads = []
    for kernel in ("fused", "torch"):
        a, b = x.clone().requires_grad_(), angles.clone().requires_grad_()
        grads.append(torch.autograd.grad(simulate(a, b, spec, kernel=kernel), (a, b), grad_outputs=weight))
    assert_close(grads[0], grads[1], 1e-10)


def test_the_fused_kernel_reads_the_angles_as_they_are_at_each_call():
    # the kernel makes its gates from the angles on every call: edits in place, with or without the Parameter's
    # version counter (gradcheck edits through .data), reach the next call, forward and backward
    spec = CircuitSpec(4, 2)
    x, _ = inputs(spec, seed=5)
    angles = torch.nn.Parameter(torch.randn(spec.angle_shape, dtype=torch.float64))
    seen = []
    for change in (None, "in place", "through .data"):
        with torch.no_grad():
            if change == "in place":
                angles.add_(0.5)  # an optimizer step
            elif change == "through .data":
                angles.data.mul_(-1.5)
        got = simulate(x, angles, spec, kernel="fused")
        reference = angles.detach().clone().requires_grad_()
        expected = simulate(x, reference, spec, kernel="torch")
        assert torch.allclose(got, expected, atol=1e-12)
        (grad,) = torch.autograd.grad(got.sum(), angles)
        (expected_grad,) = torch.autograd.grad(expected.sum(), reference)
        assert torch.allclose(grad, expected_grad, atol=1e-10)
        seen.append(got.detach())
    assert not torch.allclose(seen[0], seen[1]) and not torch.allclose(seen[1], seen[2])


@pytest.mark.parametrize(("ansatz", "readout", "tokens"), [("ry", "z", 3), ("ry", "probs", 40), ("ry_rz", "z", 3)])
def test_the_inference_readout_adds_a_presence_column(ansatz, readout, tokens):
    # ry on CPU: the fused kernel writes the column; ry_rz: the PyTorch simulator and a mask of the inputs.
    from qpeft.quantum.simulator import InferenceReadout

    spec = CircuitSpec(5, 2, ansatz, readout)
    x, angles = inputs(spec, tokens=tokens, seed=3)  # row 1 is zero
    readout = InferenceReadout(spec)
    with torch.no_grad():
        for _ in range(2):  # the second call reuses the circuit's description built by the first
            got = readout(x.reshape(1, tokens, -1), angles)[0]
            assert torch.equal(got[:, -1], (torch.arange(tokens) != 1).double())
            torch.testing.assert_close(got[:, :-1], simulate(x, angles, spec), rtol=0, atol=1e-12)
        # float32 inputs get a description of their own, in float32
        got32 = readout(x.float(), angles.float())
        assert got32.dtype == torch.float32
        torch.testing.assert_close(got32[:, :-1].double(), simulate(x, angles, spec), rtol=0, atol=1e-5)


def test_the_frozen_circuit_gives_each_concurrent_caller_its_own_inputs_result():
    # each call sets the inputs on a C struct the kernel reads without the GIL: shared between threads, one
    # caller's kernel could read another's inputs
    from concurrent.futures import ThreadPoolExecutor

    spec = CircuitSpec(6, 2)
    frozen = fused_cpu.FrozenCircuit(torch.randn(spec.angle_shape, dtype=torch.float64), spec, torch.float64)
    batches = [torch.randn(tokens, 40, dtype=torch.float64) for tokens in (1, 7, 33, 64) for _ in range(4)]
    expected = [frozen(x) for x in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(frozen, batches))
            assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    wide = torch.randn(9, 80, dtype=torch.float64)
    assert torch.equal(frozen(wide[:, ::2]), frozen(wide[:, ::2].contiguous()))  # a strided view is copied first


@pytest.mark.parametrize("kernel", ["fused", "torch", "unitary"])
def test_the_presence_column_is_a_constant_beside_the_readout(kernel):
    spec = CircuitSpec(4, 2)
    x, angles = inputs(spec, tokens=5, seed=2)  # row 1 is zero
    weights = torch.randn(5, spec.output_dim + 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = []
    for presence, w in ((True, weights), (False, weights[:, :-1])):
        a, b = x.clone().requires_grad_(), angles.clone().requires_grad_()
        out = simulate(a, b, spec, kernel=kernel, presence=presence)
        if presence:
            assert torch.equal(out[:, -1], (torch.arange(5) != 1).double())
            torch.testing.assert_close(out[:, :-1], simulate(x, angles, spec, kernel=kernel), rtol=0, atol=1e-14)
        grads.append(torch.autograd.grad((out * w).sum(), (a, b)))
    # the column's weight adds nothing to either gradient: it is a constant
    assert_close(grads[0], grads[1], 1e-12)

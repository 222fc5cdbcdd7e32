"""The fused kernel's build cache: keyed by what decides whether a build runs, verified before loading,
written atomically, and never a crash where the cache folder cannot be written."""

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from qpeft.quantum import CircuitSpec, fused_cpu, simulate
from qpeft.utils.atomic import write_json

SPEC = CircuitSpec(5, 2)


def clear() -> None:
    fused_cpu._library.cache_clear()
    fused_cpu._private_folder.cache_clear()


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache folder (not yet created); private temporary folders land in tmp_path/tmp."""
    monkeypatch.setenv("QPEFT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    clear()
    yield tmp_path / "cache"
    clear()


def qpeft_warnings(record: pytest.WarningsRecorder, text: str) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("qpeft:") and text in str(w.message)]


def value_and_grads(x: torch.Tensor, angles: torch.Tensor, kernel: str) -> list[torch.Tensor]:
    x, angles = x.clone().requires_grad_(), angles.clone().requires_grad_()
    out = simulate(x, angles, SPEC, kernel=kernel)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    return [out.detach(), *torch.autograd.grad((out * weights).sum(), (x, angles))]


def assert_matches_the_pytorch_simulator(dtype: torch.dtype = torch.float64) -> None:
    """The fused kernel (two chunks of tokens, one zero token) against the batched PyTorch kernel."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, SPEC.dim - 5, generator=gen, dtype=dtype)
    x[1] = 0
    angles = torch.randn(SPEC.angle_shape, generator=gen, dtype=dtype) * 2
    atol = 1e-10 if dtype == torch.float64 else 1e-4
    for ours, reference in zip(value_and_grads(x, angles, "fused"), value_and_grads(x, angles, "torch"), strict=True):
        assert (ours.double() - reference.double()).abs().max().item() <= atol


def built(cache: Path) -> list[Path]:
    return sorted((cache / "kernels").glob("*.so"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cpu_features_read_the_flags_line_else_the_processor(tmp_path, monkeypatch):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nflags\t\t: sse2 avx2 fma sse2\nbugs\t\t: spectre\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")
    assert fused_cpu.cpu_features(x86) == "avx2 fma sse2"
    assert fused_cpu.cpu_features(arm) == "asimd fp sve"
    monkeypatch.setattr(platform, "processor", lambda: "some-cpu")
    assert fused_cpu.cpu_features(tmp_path / "missing") == "some-cpu"


def test_the_key_follows_the_cpu_features_not_the_host_name(cache, monkeypatch):
    compiler, source = ("/usr/bin/cc", "cc 12.2.0"), b"int x;"
    keys = {features: fused_cpu.build_key(fused_cpu.key_inputs(compiler, "double", features, source))
            for features in ("sse2 avx2", "sse2")}
    assert keys["sse2 avx2"] != keys["sse2"]
    # End to end: another host name finds the same build; other CPU features make another one.
    monkeypatch.setattr(platform, "node", lambda: "host-a")
    assert fused_cpu.available(torch.float64)
    (first,) = built(cache)
    inode = first.stat().st_ino
    clear()
    monkeypatch.setattr(platform, "node", lambda: "host-b")
    assert fused_cpu.available(torch.float64)
    assert built(cache) == [first] and first.stat().st_ino == inode  # not rebuilt: a rebuild moves a new file in
    clear()
    monkeypatch.setattr(fused_cpu, "cpu_features", lambda: "a CPU without this one's vector instructions")
    assert fused_cpu.available(torch.float64)
    assert len(built(cache)) == 2


def test_an_unwritable_cache_builds_into_a_private_folder_with_one_warning(cache):
    cache.write_text("")  # a file, not a folder: mkdir fails there, for root too
    with pytest.warns(UserWarning) as record:
        assert fused_cpu.available(torch.float64) and fused_cpu.available(torch.float32)
    assert len(qpeft_warnings(record, "cannot write the kernel cache")) == 1 == len(qpeft_warnings(record, ""))
    private = list(Path(tempfile.gettempdir()).glob("qpeft-kernels-*/*.so"))
    assert len(private) == 2  # one library per dtype, both in the same private folder
    assert_matches_the_pytorch_simulator(torch.float64)
    assert_matches_the_pytorch_simulator(torch.float32)


def test_with_no_writable_folder_at_all_the_pytorch_kernel_runs(cache, monkeypatch, tmp_path):
    cache.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(cache))  # no temporary folder can be made in a file either
    with pytest.warns(UserWarning) as record:
        assert not fused_cpu.available(torch.float64)
    assert len(qpeft_warnings(record, "could not write the fused QAA kernel anywhere")) == 1
    assert len(qpeft_warnings(record, "")) == 1
    x, angles = torch.randn(4, 20, dtype=torch.float64), torch.randn(SPEC.angle_shape, dtype=torch.float64)
    torch.testing.assert_close(simulate(x, angles, SPEC), simulate(x, angles, SPEC, kernel="torch"))


def replace_bytes(path: Path, data: bytes) -> None:
    # a new file, not a rewrite in place: this process may have the old one mapped
    scratch = path.with_name(path.name + ".new")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def alter_library(library: Path) -> None:
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    replace_bytes(library, bytes(data))


def foreign_record(library: Path) -> None:
    record_path = library.with_suffix(".json")
    record = json.loads(record_path.read_text())
    record["inputs"]["cpu_features"] = hashlib.sha256(b"another CPU").hexdigest()
    write_json(record_path, record)


def record_not_an_object(library: Path) -> None:
    library.with_suffix(".json").write_text(json.dumps([sha256(library)]))


@pytest.mark.parametrize("tamper", [alter_library, foreign_record, record_not_an_object])
def test_a_library_that_does_not_match_its_record_is_rebuilt_not_loaded(cache, monkeypatch, tamper):
    assert fused_cpu.available(torch.float64)
    (library,) = built(cache)
    tamper(library)
    unverified = sha256(library)
    loaded = []
    real_cdll = ctypes.CDLL
    monkeypatch.setattr(ctypes, "CDLL", lambda path, *args, **kwargs: (
        loaded.append(sha256(Path(path))), real_cdll(path, *args, **kwargs))[1])
    clear()
    with pytest.warns(UserWarning, match="not loading"):
        assert fused_cpu.available(torch.float64)
    record = json.loads(library.with_suffix(".json").read_text())
    assert loaded == [sha256(library)] == [record["sha256"]]
    if tamper is alter_library:
        assert unverified not in loaded
    assert built(cache) == [library]
    assert_matches_the_pytorch_simulator()


def test_the_build_moves_whole_files_into_place(cache, monkeypatch):
    moves = []
    real_replace = os.replace

    def replace(src, dst):
        moves.append((Path(src), Path(dst), Path(src).stat().st_size))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert fused_cpu.available(torch.float64)
    (library,) = built(cache)
    record = library.with_suffix(".json")
    assert [dst for _, dst, _ in moves] == [record, library]  # the record first: a library always has one
    for src, dst, size in moves:
        assert src != dst and src.parent.is_relative_to(dst.parent) and size == dst.stat().st_size
    assert sorted(path.name for path in (cache / "kernels").iterdir()) == [record.name, library.name]


def test_a_second_derivative_through_the_fused_kernel_raises():
    assert fused_cpu.available(torch.float64)
    x = torch.randn(5, 20, dtype=torch.float64, requires_grad=True)
    angles = torch.randn(SPEC.angle_shape, dtype=torch.float64, requires_grad=True)
    out = simulate(x, angles, SPEC, kernel="fused")
    grad_x, _ = torch.autograd.grad(out.square().sum(), (x, angles), create_graph=True)
    # Without once_differentiable grad_x is a constant here, and this is silently the wrong (partial) derivative.
    # (backward, not autograd.grad(..., x): that prunes the error node, which hangs off detached copies.)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        (grad_x.square().sum() + x.sum()).backward()


@contextlib.contextmanager
def address_space_headroom(extra: int):
    """Allow this process only ``extra`` more bytes of address space (Linux: the size read from /proc)."""
    size = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the address space size from /proc")
def test_a_failed_allocation_raises_memory_error_and_the_kernel_recovers():
    assert fused_cpu.available(torch.float64)
    # Scratch per thread: 2 (forward) or 4 (backward) states of 2**n amplitudes x 32 tokens (the wide build,
    # for more than 8 tokens), 8 bytes each.
    spec = CircuitSpec(20, 1)
    x = torch.ones(9, 4, dtype=torch.float64, requires_grad=True)
    angles = torch.zeros(spec.angle_shape, dtype=torch.float64, requires_grad=True)
    with address_space_headroom(3 * 2**28):
        out = simulate(x, angles, spec, kernel="fused")  # 512 MiB fits
        with pytest.raises(MemoryError, match="could not allocate its buffers"):
            out.sum().backward()  # 1 GiB does not
        with pytest.raises(MemoryError, match="could not allocate its buffers"):
            simulate(x, torch.zeros(1, 21, dtype=torch.float64), CircuitSpec(21, 1), kernel="fused")
    assert_matches_the_pytorch_simulator()

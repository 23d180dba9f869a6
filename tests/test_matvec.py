"""The batch-1 matrix-vector kernel (nn/matvec.py, matvec.c): built for the host and for plain AVX2,
equal to F.linear on ragged shapes, biases and both dtypes; used by the fast path for one row only;
built once per source/compiler/flags; absent without a compiler or vector unit, where the fast path
keeps its GEMM."""

from __future__ import annotations

import platform
import shutil

import pytest
import torch
import torch.nn.functional as F

from tatlas.nn import matvec as M

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or M._compiler() is None,
                                reason="the kernel is built on x86-64 hosts with a C compiler")

SHAPES = [(7, 37), (4, 16), (5, 48), (3, 23), (1, 1), (9, 2049), (130, 896), (896, 4864)]


def _check(lib, dtype, atol):
    g = torch.Generator().manual_seed(0)
    for n, k in SHAPES:
        w = torch.randn(n, k, generator=g).to(dtype)
        x = torch.randn(1, k, generator=g).to(dtype)
        b = torch.randn(n, generator=g).to(dtype)
        for bias in (None, b):
            want = F.linear(x.double(), w.double(), None if bias is None else bias.double())
            got = M._call(lib, x, w, bias, 2)
            assert got.shape == (1, n) and got.dtype == dtype
            torch.testing.assert_close(got.double(), want, atol=atol * k ** 0.5, rtol=0.01)


@pytest.mark.parametrize("flags", [M.FLAGS, ("-O3", "-mavx2", "-mfma", "-fopenmp", "-fPIC", "-shared")],
                         ids=["native", "avx2"])
def test_equals_linear(flags, tmp_path):
    lib = M.load(M.build(flags, tmp_path))
    if lib is None:
        pytest.skip("this host has no AVX2")
    _check(lib, torch.float32, 1e-5)
    _check(lib, torch.bfloat16, 2e-2)  # inputs rounded to bfloat16 alike; the sum's order differs
    assert M._agrees(lib)  # the check a freshly loaded kernel passes before use (AVX2: without tatlas_matmat)


def test_without_a_vector_unit_the_library_declines(tmp_path):
    lib = M.load(M.build(("-O2", "-march=x86-64", "-fopenmp", "-fPIC", "-shared"), tmp_path))
    assert lib is None


def test_built_once_per_source_compiler_and_flags(tmp_path):
    first = M.build(M.FLAGS, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert M.build(M.FLAGS, tmp_path) == first and first.stat().st_mtime_ns == stamp
    other = M.build((*M.FLAGS, "-DUNUSED=1"), tmp_path)
    assert other != first and sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])


def test_no_compiler_no_kernel_and_the_fast_path_still_right(monkeypatch, tmp_path):
    import tatlas

    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("TATLAS_CACHE", str(tmp_path))
    M.kernel.cache_clear()
    try:
        assert M.kernel() is None
        with pytest.raises(RuntimeError, match="no C compiler"):
            M.build()
        model = tatlas.optimize(torch.nn.Sequential(torch.nn.Linear(512, 512)).eval())
        x = torch.randn(1, 512)
        with torch.inference_mode():
            torch.testing.assert_close(model(x), F.linear(x, model[0].weight, model[0].bias))
    finally:
        M.kernel.cache_clear()


def test_serves_one_plain_row_only(monkeypatch):
    M.kernel.cache_clear()
    if M.kernel() is None:
        pytest.skip("no kernel on this host")
    w, x = torch.randn(64, 32), torch.randn(1, 32)
    with torch.inference_mode():
        assert M.serves(x, w, None) and M.serves(x[None], w, torch.randn(64))
        assert not M.serves(torch.randn(2, 32), w, None)  # two rows: a GEMM's job
        assert not M.serves(x, torch.randn(32, 64).t(), None)  # a transposed view
        assert not M.serves(x.double(), w.double(), None) and not M.serves(x.bfloat16(), w, None)
    wg = w.requires_grad_()
    assert not M.serves(x, wg, None)  # a gradient is wanted
    monkeypatch.setenv("TATLAS_MATVEC", "0")
    M.kernel.cache_clear()
    try:
        assert not M.serves(x, w.detach(), None)
    finally:
        monkeypatch.delenv("TATLAS_MATVEC")
        M.kernel.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_a_few_rows_at_once_equal_linear(dtype):
    """``matmat`` (``tatlas_matmat``: each weight row read once for all rows) equals ``F.linear`` for
    every row count up to and past its register groups (8 rows; two weight rows at a time beyond 8,
    and from 4 rows on for rows of 4 KB or more), ragged row lengths, with and without a bias; and
    it serves 2 to MAX_ROWS plain rows only."""
    M.kernel.cache_clear()
    if M.kernel() is None or M.kernel().tatlas_matvec_isa() < 2:
        pytest.skip("the few-rows kernel needs AVX-512")
    g = torch.Generator().manual_seed(0)
    atol = 1e-5 if dtype == torch.float32 else 2e-2
    for n, k in [(7, 37), (9, 2049), (33, 1100), (5, 4100)]:
        w, b = torch.randn(n, k, generator=g).to(dtype), torch.randn(n, generator=g).to(dtype)
        for rows in (2, 3, 4, 5, 8, 9, 11, 16, 40):
            x = torch.randn(rows, k, generator=g).to(dtype)
            for bias in (None, b):
                want = F.linear(x.double(), w.double(), None if bias is None else bias.double())
                got = M.matmat(x, w, bias)
                assert got.shape == (rows, n) and got.dtype == dtype
                torch.testing.assert_close(got.double(), want, atol=atol * k ** 0.5, rtol=0.01)
    w = torch.randn(64, 32)
    with torch.inference_mode():
        assert M.serves_rows(torch.randn(2, 32), w, None) and M.serves_rows(torch.randn(4, 1, 32), w, torch.randn(64))
        assert not M.serves_rows(torch.randn(1, 32), w, None)  # one row: the matrix-vector kernel's
        assert not M.serves_rows(torch.randn(M.MAX_ROWS + 1, 32), w, None)  # many: a GEMM's
        assert not M.serves_rows(torch.randn(3, 32), torch.randn(32, 64).t(), None)  # a transposed view
        assert not M.serves_rows(torch.randn(3, 32).bfloat16(), w, None)  # mixed dtypes


def test_decode_with_and_without_the_kernel_agrees(monkeypatch):
    """A small Qwen-shaped decoder (q/k/v biases), optimised: greedy tokens and a one-token forward's
    logits equal with the kernel on (one-row projections) and off (oneDNN / BLAS)."""
    import tatlas
    from tatlas.generate import GenerationConfig, generate
    from tatlas.nn import fastpath

    torch.manual_seed(0)
    model = tatlas.optimize(tatlas.create("llm", "tiny", dim=256, mlp_hidden=1024, vocab_size=512, qkv_bias=True).eval())
    prompt = torch.randint(0, 512, (1, 6))
    calls = []
    real = M.matvec
    monkeypatch.setattr(M, "matvec", lambda *a: calls.append(1) or real(*a))
    cfg = GenerationConfig(max_new_tokens=12)
    with torch.inference_mode():
        on = generate(model, prompt, cfg)
        logits_on = model(prompt[:, :1])
        assert calls, "the kernel served no projection"
        monkeypatch.setattr(fastpath.matvec, "serves", lambda *a: False)
        off = generate(model, prompt, cfg)
        logits_off = model(prompt[:, :1])
    assert torch.equal(on.tokens, off.tokens)
    torch.testing.assert_close(logits_on, logits_off, atol=1e-4, rtol=1e-4)

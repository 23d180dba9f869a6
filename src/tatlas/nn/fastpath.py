"""The CPU inference fast path, as modules swapped into a built model: :func:`optimize_`.

The same ``x @ W^T + b``, computed by oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``)
or by the BLAS sgemm behind ``F.linear``, whichever is faster on this host for this product's shape,
found by timing both on the first calls (:func:`_race`; the outcome is kept for later processes on
the same machine, :func:`race_file`). Neither wins everywhere: on an AVX-512 AMD
EPYC MKL's sgemm takes its generic code path and oneDNN is about twice as fast for
transformer-sized matrices (``[1600, 768] x [768, 3072]``: 38 ms vs 17 ms on two threads); on an
AVX2-only EPYC MKL has its own AVX2 path and the ImageBind encoders ran 0.79-0.97x the speed of
plain ``F.linear`` through oneDNN. Both keep float32 precision (no reduced-precision math: max
relative difference to a float64 product ~1e-6). oneDNN can also apply the MLP's GELU in the
matmul's epilogue (one pass over the ``[*, hidden]`` output fewer, bit-identical to the two steps).
``TATLAS_GEMM=onednn`` or ``blas`` fixes the choice.

``optimize_(model)`` swaps, in place, the class of every plain ``nn.Linear`` for
:class:`FastLinear`, every :class:`~tatlas.nn.MLP` for :class:`FastMLP`, every
:class:`~tatlas.nn.TiedLinear` for :class:`FastTiedLinear`, every
:class:`~tatlas.nn.TransformerBlock` for :class:`FastTransformerBlock` (a one-token decode step of a
Llama-style or classic block, one sequence or several, in one C call,
:mod:`~tatlas.nn.decode_layer`) (and, through ``variants``, whatever classes a system adds, e.g.
CLIP's pooled read-out). Parameters, buffers, state-dict keys and hooks stay; the decision is made
once, when the model is optimised (as timm reads ``fused_attn`` at build time), not by a switch
consulted on every call. A swapped module still computes ``F.linear`` when oneDNN cannot serve the
call: a gradient is wanted (oneDNN's op has no backward), the weight is not a plain CPU
float32/bfloat16 tensor (moved to CUDA, sharded as a DTensor), or the code is being compiled, or the
product is too small for oneDNN's call overhead to pay (:data:`MIN_MACS`). ``tatlas.load(...,
fast=True)`` and the CLIs apply it for every system.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
import time
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io.parts import cache_dir
from . import matvec
from .attention import Attention
from .block import TransformerBlock
from .decode_layer import FastTransformerBlock
from .decode_layer import adjacent as _adjacent
from .linear import TiedLinear
from .mlp import MLP, GatedMLP

__all__ = ["FastAttention", "FastGatedMLP", "FastLinear", "FastMLP", "FastTiedLinear", "FastTransformerBlock",
           "onednn_available", "onednn_bf16", "optimize_"]

_DTYPES = (torch.float32, torch.bfloat16)
# oneDNN's call costs ~10 us more than F.linear's and then runs up to 2-2.5x faster. Decoding with
# Whisper tiny.en (2 threads, greedy, 4 clips one by one; 4 alternating runs each) was fastest with
# the threshold at 2^17 multiply-adds (M x K x N): 0.85-0.90 s, vs 0.86-0.93 s with every linear on
# oneDNN and 0.89-0.98 s at 2^20; the tiny LLM (64 wide) decodes at 1,400 tok/s with every linear
# on oneDNN and 2,400 below the threshold, as without the fast path.
MIN_MACS = 1 << 17
# A single row goes to our own matrix-vector kernel (nn/matvec.py) instead, float32 and bfloat16
# (Qwen2.5-0.5B shapes, 2 threads, float32: 896 x 896 28-30 GB/s vs oneDNN's 18-25, 896 x 4864 30-33
# vs 27; bfloat16 against oneDNN's packed layout, Zen 4 EPYC, since the kernel reads AVX-512 rows one
# at a time: the 151936 x 896 LM head 30 vs 24 GB/s, 896 x 4864 and 9728 x 896 faster still. The
# kernel's earlier four-rows-at-once AVX-512 code lost to the packed layout on the short rows, which
# then went to oneDNN).
# our activation name -> oneDNN's post-op (attribute, algorithm), computed in the matmul's epilogue
_FUSED_ACTS = {"gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh")}


@functools.lru_cache(maxsize=1)
def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.lru_cache(maxsize=1)
def onednn_bf16() -> bool:
    """Whether oneDNN computes bfloat16 matmuls on this CPU: it needs AVX-512 (BW, VL, DQ) or
    AVX-NE-CONVERT; on an AVX2-only CPU (AMD Zen 2/3, older Intel) it refuses to build the
    primitive, so bfloat16 products take the matvec kernel (one row) or ``F.linear``."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return probe is not None and bool(probe())


def _serves(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether :func:`_onednn` can compute ``F.linear(x, weight, bias)``: oneDNN's inference
    matmul, or for a bfloat16 row on a CPU without oneDNN bfloat16, the matvec kernel."""
    return (
        x.numel() * weight.shape[0] >= MIN_MACS  # first: the cheapest test, and the one small calls fail
        and weight.device.type == "cpu" and x.dtype == weight.dtype and x.dtype in _DTYPES and x.dim() >= 2
        and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
        and type(weight) in (Tensor, nn.Parameter) and (bias is None or type(bias) in (Tensor, nn.Parameter))
        and not torch.compiler.is_compiling()
        and (x.dtype == torch.float32 or onednn_bf16() or matvec.serves(x, weight, bias))
    )


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None, act: str = "none", algorithm: str = "",
            owner: nn.Module | None = None, sources: tuple[Tensor, ...] = ()) -> Tensor:
    """``F.linear`` (+ ``act``) for a call :func:`_serves` accepted: one row by the matvec kernel,
    everything else by oneDNN or BLAS, whichever :data:`GEMM` (by default: a race on this host, per
    shape, which for 2 to ``matvec.MAX_ROWS`` rows our few-rows kernel joins) says."""
    if matvec.serves(x, weight, bias):
        return _act(matvec.matvec(x, weight, bias), act, algorithm)  # one row: our kernel (nn/matvec.py)

    def onednn() -> Tensor:
        w = _packed(owner, weight, sources or (weight,)) if owner is not None and weight.dtype == torch.bfloat16 \
            else weight
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, act, [], algorithm)

    if GEMM == "onednn":
        return onednn()
    blas = lambda: _act(F.linear(x, weight, bias), act, algorithm)  # noqa: E731
    if GEMM == "blas":
        return blas()
    rows = x.numel() // x.shape[-1]
    if matvec.serves_rows(x, weight, bias):  # a few rows (a step of several sequences): our kernel races too
        ours = lambda: _act(matvec.matmat(x, weight, bias), act, algorithm)  # noqa: E731
        return _race((x.dtype, rows.bit_length(), *weight.shape, act, "rows"), onednn, blas, ours)
    return _race((x.dtype, rows.bit_length(), *weight.shape, act), onednn, blas)


def _act(y: Tensor, act: str, algorithm: str) -> Tensor:
    return y if act == "none" else F.gelu(y, approximate="tanh" if algorithm == "tanh" else "none")


# Which GEMM serves a product: "auto" (timed per host and shape, :func:`_race`), "onednn" or "blas"
GEMM = os.environ.get("TATLAS_GEMM", "auto").strip().lower()
if GEMM not in ("auto", "onednn", "blas"):
    warnings.warn(f"TATLAS_GEMM: expected auto, onednn or blas, got {GEMM!r}; using auto", stacklevel=1)
    GEMM = "auto"
RACE_TRIALS = 3  # timed calls of each GEMM (after one untimed: packing, first touch) before choosing
# product shape (dtype, row-count octave, N, K, activation) -> the chosen GEMM, or the race so far
_CHOSEN: dict[tuple, int] = {}
_RACES: dict[tuple, tuple[list[float], list[float]]] = {}
# The races' outcomes are kept in a file (:func:`race_file`), so that a short process (one
# transcription, one prompt) serves each product by the faster GEMM from its first call instead of
# racing again: a race runs the slower GEMM on about half of its first calls (whole-process
# `tatlas transcribe` of six short clips, AVX-512 EPYC: 3.98-4.05 s racing, 3.85-3.87 s with the
# winner known). ``TATLAS_GEMM_CACHE=0`` races in every process.
RACE_CACHE = os.environ.get("TATLAS_GEMM_CACHE", "1").strip() != "0"
_SAVED: dict[str, dict[str, int]] = {}  # host -> shape -> choice, as read from the file (once per host)


def _race(key: tuple, *runs) -> Tensor:
    """``runs[i]()`` (the same product by different GEMMs) for the choice made for ``key``; until
    it is made, the calls alternate between the runs and are timed, and after :data:`RACE_TRIALS`
    timed calls of each (each run's first call is not counted) the fastest best time wins for
    good, in this process and (:func:`race_file`) in later ones on this host. The race costs
    nothing but its calls' differences: every call computes the real product."""
    chosen = _CHOSEN.get(key)
    if chosen is None and RACE_CACHE:
        chosen = _saved_choice(key, len(runs))
        if chosen is not None:
            _CHOSEN[key] = chosen
    if chosen is not None:
        return runs[chosen]()
    times = _RACES.setdefault(key, tuple([] for _ in runs))
    i = min(range(len(runs)), key=lambda j: len(times[j]))
    start = time.perf_counter()
    y = runs[i]()
    times[i].append(time.perf_counter() - start)
    if all(len(t) > RACE_TRIALS for t in times):
        _CHOSEN[key] = min(range(len(runs)), key=lambda j: min(times[j][1:]))
        _RACES.pop(key, None)  # (two threads may finish one race together)
        if RACE_CACHE:
            _save_choice(key, _CHOSEN[key], [min(t[1:]) for t in times])
    return y


def race_file() -> Path:
    """The races run on this machine: ``$TATLAS_CACHE/gemm-race.json`` (default ``~/.cache/tatlas``),
    ``{host: {shape: {"choice": i, "best_s": [each GEMM's best time]}}}``, a host being the CPU
    (a hash of :func:`~tatlas.nn.matvec.cpu_signature`), torch's version and the thread count. A
    race run on a busy machine is kept like any other; delete the file (or set
    ``TATLAS_GEMM_CACHE=0``) to race again."""
    return cache_dir() / "gemm-race.json"


def _host() -> str:
    cpu = hashlib.sha256(matvec.cpu_signature().encode()).hexdigest()[:16]
    return f"cpu-{cpu} torch-{torch.__version__} threads-{torch.get_num_threads()}"


def _shape(key: tuple) -> str:
    return "|".join(str(v) for v in key)


def _read_races() -> dict:
    try:
        data = json.loads(race_file().read_text())
    except (OSError, ValueError):  # none yet, unreadable, or half-written elsewhere: race again
        return {}
    return data if isinstance(data, dict) else {}


def _saved_choice(key: tuple, runs: int) -> int | None:
    host = _host()
    saved = _SAVED.get(host)
    if saved is None:
        entries = _read_races().get(host)
        saved = _SAVED[host] = {
            shape: entry["choice"] for shape, entry in (entries.items() if isinstance(entries, dict) else ())
            if isinstance(entry, dict) and type(entry.get("choice")) is int
        }
    choice = saved.get(_shape(key))
    return choice if choice is not None and 0 <= choice < runs else None


def _save_choice(key: tuple, choice: int, best: list[float]) -> None:
    """Add one race's outcome to :func:`race_file` (read, update, replace: a process that writes at
    the same time loses at most its own new entries, which it races for again next time)."""
    host = _host()
    _SAVED.setdefault(host, {})[_shape(key)] = choice
    path = race_file()
    data = _read_races()
    entries = data.get(host)
    entries = data[host] = entries if isinstance(entries, dict) else {}
    entries[_shape(key)] = {"choice": choice, "best_s": [float(f"{b:.3g}") for b in best]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # one per writer
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache: this process keeps its choice, the next one races
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


# owner module -> (which weight, oneDNN's blocked copy of it); dropped with the module
_PACKED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], Tensor]] = weakref.WeakKeyDictionary()


def _packed(owner: nn.Module, weight: Tensor, sources: tuple[Tensor, ...]) -> Tensor:
    """oneDNN's own blocked layout of a bfloat16 ``weight``, made on first use and kept for
    ``owner`` until the weight changes (another tensor, or written in place).

    Given a plain bfloat16 matrix, oneDNN re-blocks it on every call; for the few rows of a decode
    step (batch > 1: one row takes the matvec kernel) that re-blocking is most of the work: the
    Qwen2.5-0.5B shape's weights read at ~16 GB/s from the plain layout and at 25-30 GB/s from the
    packed one (bit-identical results, and faster up to prefill-sized calls: 64 rows, 210 vs 167 ms
    over 1 GB of weights).
    The cost is memory: the packed copy sits beside the parameter (a bfloat16 model held for
    inference on the CPU takes twice its size). float32 is not packed: oneDNN reads its plain
    layout as fast. ``sources``: the parameters ``weight`` is made of (itself, or the row blocks of
    a joined weight), whose identity and versions say whether the copy is still current."""
    try:
        key = tuple(v for t in sources for v in (t.data_ptr(), t._version))
    except RuntimeError:  # an inference tensor keeps no version counter: it cannot be written in place
        key = tuple(t.data_ptr() for t in sources)
    cached = _PACKED.get(owner)
    if cached is None or cached[0] != key:
        cached = (key, torch.ops.mkldnn._reorder_linear_weight(weight, 1))
        _PACKED[owner] = cached
    return cached[1]


class FastLinear(nn.Linear):
    """``nn.Linear`` computed by oneDNN where it can be (see the module docstring)."""

    twin_of = nn.Linear  # what it computes, exactly (nn/decode_layer.py reads the weights of either)

    def forward(self, x: Tensor) -> Tensor:
        if x.numel() * self.weight.shape[0] >= MIN_MACS and _serves(x, self.weight, self.bias):  # small: no call
            return _onednn(x, self.weight, self.bias, owner=self)
        return F.linear(x, self.weight, self.bias)


class FastMLP(MLP):
    """:class:`~tatlas.nn.MLP` with its GELU fused into the first projection's oneDNN matmul."""

    twin_of = MLP

    def forward(self, x: Tensor) -> Tensor:
        fused = _FUSED_ACTS.get(self.act_name)
        if fused is not None and type(self.fc1) in (nn.Linear, FastLinear) and _serves(x, self.fc1.weight, self.fc1.bias):
            return self.fc2(_onednn(x, self.fc1.weight, self.fc1.bias, *fused, owner=self.fc1))
        return super().forward(x)


class FastTiedLinear(TiedLinear):
    """:class:`~tatlas.nn.TiedLinear` computed by oneDNN where it can be."""

    twin_of = TiedLinear

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        cast = weight.to(x.dtype)
        if not _serves(x, cast, None):
            return F.linear(x, cast)
        return _onednn(x, cast, None, owner=self if cast is weight else None)  # a per-call cast: not kept


def _block(tensors: list[Tensor]) -> Tensor:
    """The one matrix whose row blocks ``tensors`` are (adjacent; no copy)."""
    first = tensors[0]
    rows = sum(t.shape[0] for t in tensors)
    return first.new_empty(0).set_(first.untyped_storage(), first.storage_offset(), (rows, *first.shape[1:]))


# owner module -> (the data pointers its joined parameters had, the joined weight and bias)
_JOINED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], Tensor, Tensor | None]] = \
    weakref.WeakKeyDictionary()


def _joined(owner: nn.Module, linears: tuple[nn.Linear, ...]) -> tuple[Tensor, Tensor | None] | None:
    """One weight (and bias) that computes all of ``linears`` from the same input in one matmul.

    The linears' parameters become row blocks of one matrix: the first time (or after ``.to()``
    gave them separate storage again) their values are copied into one new block and each
    parameter's ``.data`` is pointed at its rows. The parameters stay the same objects (an
    optimizer or a state dict sees no difference) and no second copy is kept. ``None`` when they
    cannot be joined (a bias on some only, other dtypes, gradients wanted, being compiled). The
    joined views are kept for ``owner`` while the parameters stay where they are (the cached views
    keep that storage alive, so no new tensor can take those addresses)."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return None
    weights = [lin.weight for lin in linears]
    biases = [lin.bias for lin in linears]
    has_bias = biases[0] is not None
    if any((b is not None) != has_bias for b in biases):
        return None
    key = tuple(t.data_ptr() for t in (*weights, *biases) if t is not None)
    cached = _JOINED.get(owner)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    if not (_adjacent(weights) and (not has_bias or _adjacent(biases))):
        if any(w.dtype != weights[0].dtype or w.device != weights[0].device or w.shape[1:] != weights[0].shape[1:]
               for w in weights):
            return None
        with torch.inference_mode(False):  # plain tensors, so they can back parameters outside inference too
            for group in [weights, biases] if has_bias else [weights]:
                block = torch.cat([t.detach() for t in group])
                start = 0
                for t in group:
                    t.data = block[start:start + t.shape[0]]
                    start += t.shape[0]
        key = tuple(t.data_ptr() for t in (*weights, *biases) if t is not None)
    joined = _block(weights), (_block(biases) if has_bias else None)
    _JOINED[owner] = (key, *joined)
    return joined


class FastGatedMLP(GatedMLP):
    """:class:`~tatlas.nn.GatedMLP` with ``gate`` and ``up`` computed by one oneDNN matmul (their
    weights joined into one matrix, see :func:`_joined`): one call and one read of ``x`` fewer."""

    twin_of = GatedMLP

    def forward(self, x: Tensor) -> Tensor:
        # the types first: a quantised gate (Int4Linear ...) has no `weight`
        if type(self.gate) in (nn.Linear, FastLinear) and type(self.up) in (nn.Linear, FastLinear) \
                and _serves(x, self.gate.weight, self.gate.bias):
            joined = _joined(self, (self.gate, self.up))
            if joined is not None:
                sources = (self.gate.weight, self.up.weight)
                gate, up = _onednn(x, *joined, owner=self, sources=sources).chunk(2, dim=-1)
                return self.down(self.act(gate) * up)
        return super().forward(x)


class FastAttention(Attention):
    """:class:`~tatlas.nn.Attention` with separate ``q``, ``k``, ``v`` projections computed by one
    oneDNN matmul (their weights joined into one matrix, see :func:`_joined`)."""

    twin_of = Attention

    def _project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not self.fused and all(type(m) in (nn.Linear, FastLinear) for m in (self.q, self.k, self.v)) \
                and _serves(x, self.q.weight, self.q.bias):
            joined = _joined(self, (self.q, self.k, self.v))
            if joined is not None:
                sizes = [self.q.out_features, self.k.out_features, self.v.out_features]
                sources = (self.q.weight, self.k.weight, self.v.weight)
                return _onednn(x, *joined, owner=self, sources=sources).split(sizes, dim=-1)
        return super()._project_qkv(x)


FAST: Mapping[type, type] = {nn.Linear: FastLinear, MLP: FastMLP, TiedLinear: FastTiedLinear,
                             GatedMLP: FastGatedMLP, Attention: FastAttention, TransformerBlock: FastTransformerBlock}


def optimize_(model: nn.Module, variants: Mapping[type, type] | None = None) -> nn.Module:
    """Swap the class of every module whose exact type has a fast twin (:data:`FAST`, plus
    ``variants``) for that twin, in place; returns ``model``. Without oneDNN only ``variants``
    apply. Subclasses (``Int8Linear``-style replacements, other layers) are left alone, and so are
    linear layers too small for oneDNN to pay below 4 rows a call."""
    table = {**(FAST if onednn_available() else {}), **(variants or {})}
    for module in model.modules():
        twin = table.get(type(module))
        if twin is FastLinear and module.weight.numel() * 4 < MIN_MACS:
            continue  # oneDNN would not pay below 4 rows a call: keep nn.Linear's cheaper call
        if twin is not None:
            module.__class__ = twin
    return model

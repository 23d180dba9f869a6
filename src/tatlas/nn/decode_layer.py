"""A whole decode layer in one C call: the one-token step of a Llama-style or a classic (GPT-2,
Whisper) block, for one sequence or several (``tatlas_decode_layer`` in ``matvec.c``).

A decode step of one sequence reads every weight once, and the matrix-vector kernel
(:mod:`~tatlas.nn.matvec`) reads them near the machine's memory bandwidth; what keeps a step from
that bound is the rest: a pre-RMSNorm block of rotary grouped-query attention and a gated SiLU MLP
is ~60 small torch ops per token (two norms, the rotary of queries and keys, the cache write, the
attention over the cache, residuals, the gate), each a few microseconds of dispatch for a few
hundred floats of arithmetic. On the Qwen2.5-0.5B shape (24 layers) that was 16-17 ms of an 80 ms
float32 step; on Whisper tiny.en's decoder (4 layers with cross-attention over 1,500 audio
positions) 2.9 of a 7.4 ms step. Here one call per layer does all of it, the products by the same
kernel. A step of several sequences (a batch of prompts, Whisper's windows, beams) is one call
too: each weight row is read once for all rows (``tatlas_matmat``'s loop); the rows keep their own
cache rows, positions (left padding), masks and cross-attention sources. Whisper tiny.en at 8
windows: a step of 20.6-21.5 ms as torch ops, 12.6-13.5 in one call (of which ~4 ms read the 8
windows' 147 MB of cross-attention keys/values). A step of several rows with GGUF blocks is not
served (below).

Served (:func:`run`; anything else returns ``None`` and the caller runs the block as torch ops):
a :class:`~tatlas.nn.TransformerBlock` evaluated for one token of each row (``x [B, 1, C]``)
with a static KV cache of those rows (one slot for every row; a mask and rotary angles for all
rows or one per row), float32 or bfloat16, on the CPU, no gradient wanted, whose self-attention is grouped or
not, with q/k/v/output biases or none, rotary positions (either layout) or none, and no QK-norm,
gate or bias token, and which is either

- Llama-style: :class:`~tatlas.nn.RMSNorm` norms and a bias-free gated SiLU MLP; or
- classic (GPT-2, ImageGPT, the Decision Transformer, Whisper's decoder): norms all
  :class:`~tatlas.nn.LayerNorm` (with or without bias) or all RMSNorm, a two-layer
  :class:`~tatlas.nn.MLP` with exact or tanh GELU, quick GELU or ReLU, and optionally a
  cross-attention (the self-attention's heads) over keys/values cached from its source
  (:class:`~tatlas.nn.cache.CrossKVCache`, filled).

In bfloat16 every intermediate is rounded where the torch path rounds it. In a float32 Llama-style
model any projection may instead be a GGUF block layer (:mod:`~tatlas.nn.quant_blocks`:
``Int4Linear``, ``Int4PairLinear``, ``GroupInt8Linear`` over 32-column groups): the C layer reads
its q4 / q8 blocks as stored, for one row (several rows take torch's kernels: the blocks are read
one row at a time; so are all weights on a CPU without AVX-512, where several rows are not served).
``TATLAS_DECODE_LAYER=0`` (or :data:`ENABLED` = False) turns it off;
so does ``TATLAS_MATVEC=0`` (no kernel).
"""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import matvec, memory
from .attention import Attention
from .block import TransformerBlock
from .cache import CrossKVCache, DecoderCache, StaticKVCache
from .mlp import MLP, GatedMLP
from .norms import LayerNorm, RMSNorm
from .positions import Rope

__all__ = ["ENABLED", "FastTransformerBlock", "adjacent", "plan", "run", "run_layers"]

ENABLED = os.environ.get("TATLAS_DECODE_LAYER", "1").strip().lower() not in ("0", "off", "false", "no")
_POINTERS = ("attn_norm", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "mlp_norm", "wg", "wu", "wd")
_CLASSIC = ("attn_norm_b", "mlp_norm_b", "bu", "bd", "cross_norm", "cross_norm_b", "wcq", "bcq", "wco", "bco")


class _Layer(ctypes.Structure):
    """``tatlas_layer`` of ``matvec.c``: sizes, settings and the parameters' addresses."""

    _fields_ = [
        *[(n, ctypes.c_int64) for n in ("dim", "heads", "kv_heads", "head_dim", "hidden")],
        *[(n, ctypes.c_int32) for n in ("bf16", "qkv_joined", "gate_up_joined")],
        *[(n, ctypes.c_float) for n in ("attn_eps", "attn_offset", "mlp_eps", "mlp_offset", "scale")],
        *[(n, ctypes.c_void_p) for n in _POINTERS],
        ("format", ctypes.c_int32 * 7), ("scales", ctypes.c_void_p * 7), ("offsets", ctypes.c_void_p * 7),
        *[(n, ctypes.c_int32) for n in ("classic", "act", "layer_norm", "cross")],
        *[(n, ctypes.c_float) for n in ("cross_eps", "cross_offset", "cross_scale")],
        *[(n, ctypes.c_void_p) for n in _CLASSIC],
    ]


_PRODUCTS = ("q", "k", "v", "o", "g", "u", "d")  # the order of the C struct's format/scales/offsets
_ACTS = ("gelu", "gelu_tanh", "quick_gelu", "relu")  # a classic MLP's activations, by the C struct's act
_Q4, _Q8 = 1, 2


@dataclass
class Plan:
    """One block's :class:`_Layer` (``None``: the block is not one the C layer computes), valid
    while the block's modules and parameters are the ones it was made from, where they were. It
    refers to them weakly: a plan keeps no model alive."""

    layer: _Layer | None
    modules: tuple[tuple[weakref.ref, str, weakref.ref | None], ...]  # (parent, name, child)
    # (owner, "_parameters" or "_buffers", name, the tensor, its address)
    params: tuple[tuple[weakref.ref, str, str, weakref.ref, int], ...]

    def current(self) -> bool:
        for parent, name, child in self.modules:
            owner = parent()
            if owner is None or owner._modules.get(name) is not (None if child is None else child()):
                return False
        for owner_ref, kind, name, ref, ptr in self.params:
            owner, t = owner_ref(), ref()
            if owner is None or t is None or getattr(owner, kind).get(name) is not t or t.data_ptr() != ptr:
                return False
        return True


def _plain(module: nn.Module, base: type) -> bool:
    """``module`` is exactly ``base`` or the fast path's twin of it (same computation, the class
    says ``twin_of = base``)."""
    return type(module) is base or type(module).__dict__.get("twin_of") is base


def adjacent(tensors: list[Tensor]) -> bool:
    """Whether ``tensors`` lie one after the other in one storage (row blocks of one matrix)."""
    first = tensors[0]
    if not all(t.is_contiguous() and t.dtype == first.dtype and t.device == first.device
               and t.shape[1:] == first.shape[1:] for t in tensors):
        return False
    if any(t.untyped_storage().data_ptr() != first.untyped_storage().data_ptr() for t in tensors[1:]):
        return False
    offsets = [t.storage_offset() for t in tensors]
    return all(b == a + t.numel() for a, b, t in zip(offsets, offsets[1:], tensors))


def _product(lin: nn.Module) -> tuple[int, Tensor, Tensor | None, Tensor | None, Tensor | None] | None:
    """``(format, weight or blocks, scales, offsets, bias)`` of one projection the C layer reads: a
    plain linear (format 0, the model's dtype) or a GGUF block layer keeping ``matvec.c``'s q4/q8
    blocks (:mod:`~tatlas.nn.quant_blocks`); ``None`` for anything else."""
    if _plain(lin, nn.Linear):
        return 0, lin.weight, None, None, lin.bias
    from .quant_blocks import GroupInt8Linear, Int4Linear, Int4PairLinear, blocks_of

    blocks = blocks_of(lin) if type(lin) in (Int4Linear, Int4PairLinear, GroupInt8Linear) else None
    if blocks is None:
        return None
    return (_Q4, *blocks, lin.bias) if len(blocks) == 3 else (_Q8, *blocks, None, lin.bias)


def _simple(a: nn.Module) -> bool:
    """An attention the C layer computes: plain, without QK-norm, output gate or bias token."""
    return _plain(a, Attention) and a.q_norm is None and a.gate is None and a.bias_k is None


def _tensors(block: nn.Module) -> tuple[dict[str, Tensor | None], dict[str, tuple], bool] | None:
    """The block's parameters by ``tatlas_layer``'s names, its projections by :data:`_PRODUCTS`
    (:func:`_product`) and whether it is a classic block (a two-layer MLP), or ``None`` if the
    block is not one the C layer computes (the module docstring)."""
    a, m, x = block.attn, block.mlp, block.cross_attn
    norms = [block.attn_norm, block.mlp_norm, *([] if x is None else [block.cross_norm])]
    if (block.attn_scale is not None or block.mlp_scale is not None or not _simple(a)
            or len({type(n) for n in norms}) != 1 or type(norms[0]) not in (RMSNorm, LayerNorm)):
        return None
    if x is None and _plain(m, GatedMLP) and m.act_name == "silu":
        classic = False
    elif _plain(m, MLP) and m.act_name in _ACTS and (x is None or (
            _simple(x) and not x.fused and (x.heads, x.kv_heads, x.head_dim) == (a.heads, a.heads, a.head_dim)
            and _plain(x.q, nn.Linear) and _plain(x.out, nn.Linear))):
        classic = True
    else:
        return None
    if a.fused:
        if not _plain(a.qkv, nn.Linear):
            return None
        qo, kvo = a.heads * a.head_dim, a.kv_heads * a.head_dim
        w, b = a.qkv.weight, a.qkv.bias
        qkv = [(0, w[i:j], None, None, None if b is None else b[i:j]) for i, j in ((0, qo), (qo, qo + kvo), (qo + kvo, None))]
    else:
        qkv = [_product(lin) for lin in (a.q, a.k, a.v)]
    mlp = (None, m.fc1, m.fc2) if classic else (m.gate, m.up, m.down)
    products = dict(zip(_PRODUCTS, [*qkv, _product(a.out), *(None if lin is None else _product(lin) for lin in mlp)]))
    if classic:  # every product a plain linear layer (GGUF's blocks come in Llama-style models); no gate
        if any(products[n] is None or products[n][0] != 0 for n in "qkvoud"):
            return None
    elif any(p is None for p in products.values()) or any(products[n][4] is not None for n in "gud"):
        return None
    tensors = {}
    for n in _PRODUCTS:
        tensors[{"o": "wo"}.get(n, "w" + n)] = None if products[n] is None else products[n][1]
        if n in "qkvo" or (classic and n in "ud"):
            tensors["b" + n] = products[n][4]
    for n in ("attn_norm", "mlp_norm", *([] if x is None else ["cross_norm"])):
        tensors[n] = getattr(block, n).weight
        tensors[n + "_b"] = getattr(getattr(block, n), "bias", None)  # (LayerNorm's, if it has one)
    if x is not None:
        tensors.update(wcq=x.q.weight, bcq=x.q.bias, wco=x.out.weight, bco=x.out.bias)
    return tensors, products, classic


_PLANS: weakref.WeakKeyDictionary[nn.Module, Plan] = weakref.WeakKeyDictionary()


def plan(block: nn.Module) -> _Layer | None:
    """The C layer for ``block``, made on first use and again after its modules or parameters
    changed (``.to()``, a load, a swapped submodule); ``None`` when the block is not served or its
    parameters are not plain contiguous CPU tensors of one dtype (float32 or bfloat16)."""
    cached = _PLANS.get(block)
    if cached is None or not cached.current():
        memory.to_huge_pages_(block)  # what every step reads, in 2 MB pages (read 10-20% faster)
        cached = _PLANS[block] = _plan(block)
    return cached.layer


def _plan(block: nn.Module) -> Plan:
    ref = weakref.ref
    modules = tuple((ref(parent), name, None if child is None else ref(child))
                    for parent in block.modules() for name, child in parent._modules.items())
    params = tuple((ref(owner), kind, name, ref(t), t.data_ptr()) for owner in block.modules()
                   for kind in ("_parameters", "_buffers") for name, t in getattr(owner, kind).items() if t is not None)
    found = _tensors(block)
    if found is None:
        return Plan(None, modules, params)
    tensors, products, classic = found
    products = {n: p for n, p in products.items() if p is not None}  # (a classic MLP has no gate)
    quantised = [n for n, p in products.items() if p[0] != 0]
    blocks = {id(p[1]) for p in products.values() if p[0] != 0}
    plain = [t for t in tensors.values() if t is not None and id(t) not in blocks]
    dtype = plain[0].dtype
    if dtype not in (torch.float32, torch.bfloat16) or (quantised and dtype != torch.float32) or any(
            t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous() or type(t) not in (Tensor, nn.Parameter)
            for t in plain) or not all(
            matvec.blocks_valid(tuple(t for t in products[n][1:4] if t is not None)) for n in quantised):
        return Plan(None, modules, params)
    a, m, t, x = block.attn, block.mlp, tensors, block.cross_attn
    biases = [t["bq"], t["bk"], t["bv"]]
    unquantised = lambda names: all(products[n][0] == 0 for n in names)  # noqa: E731
    qkv_joined = unquantised("qkv") and adjacent([t["wq"], t["wk"], t["wv"]]) and (
        all(b is None for b in biases) or (all(b is not None for b in biases) and adjacent(biases)))
    layer = _Layer(
        dim=block.attn_norm.weight.shape[0], heads=a.heads, kv_heads=a.kv_heads, head_dim=a.head_dim,
        hidden=(m.fc1 if classic else m.gate).out_features, bf16=int(dtype == torch.bfloat16),
        qkv_joined=int(qkv_joined),
        gate_up_joined=int(not classic and unquantised("gu") and adjacent([t["wg"], t["wu"]])),
        attn_eps=block.attn_norm.eps, attn_offset=getattr(block.attn_norm, "offset", 0.0), mlp_eps=block.mlp_norm.eps,
        mlp_offset=getattr(block.mlp_norm, "offset", 0.0), scale=_scale(a),
        classic=int(classic), act=_ACTS.index(m.act_name) if classic else 0,
        layer_norm=int(type(block.attn_norm) is LayerNorm), cross=int(x is not None),
        cross_eps=0.0 if x is None else block.cross_norm.eps,
        cross_offset=getattr(block.cross_norm, "offset", 0.0) if x is not None else 0.0,
        cross_scale=0.0 if x is None else _scale(x),
        **{n: (None if t is None else t.data_ptr()) for n, t in tensors.items()},
    )
    for i, n in enumerate(_PRODUCTS):
        if n not in products:
            continue
        fmt, _, scales, offsets, _ = products[n]
        layer.format[i] = fmt
        layer.scales[i] = None if scales is None else scales.data_ptr()
        layer.offsets[i] = None if offsets is None else offsets.data_ptr()
    return Plan(layer, modules, params)


def _scale(a: Attention) -> float:
    return a.head_dim**-0.5 if a.scale is None else a.scale


def _position(x: Tensor, input_pos: Tensor | None) -> int | None:
    """The cache slot of a one-token step of each of ``x``'s rows (``[B, 1, C]``), or ``None`` if
    the C layers do not serve it (the module docstring)."""
    if (not ENABLED or input_pos is None or x.dim() != 3 or x.shape[1] != 1 or x.device.type != "cpu"
            or x.dtype not in (torch.float32, torch.bfloat16) or not x.is_contiguous() or input_pos.numel() != 1
            or (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_compiling()):
        return None
    return int(input_pos.reshape(()))


def _per_row(t: Tensor, rows: int, width: int) -> bool:
    """``t`` holds one ``width``-wide vector for all ``rows`` rows, or one for each (leading dim ``rows``)."""
    return t.is_contiguous() and t.shape[-1] == width and (
        t.numel() == width or (t.numel() == rows * width and t.shape[0] == rows))


def _fits(layer: _Layer | None, x: Tensor, cache, mask: Tensor | None, rope: Rope | None, pos: int,
          cross: CrossKVCache | None = None) -> bool:
    """Whether ``layer`` computes this step of its block: the cache (static, ``x``'s rows, the
    layer's heads), the rotary angles (one position per row, float32; or none), the mask (bool over
    slots ``0..pos``, one for all rows or one per row) and, for a layer with cross-attention, the
    source's keys/values (filled, ``x``'s rows, the layer's heads)."""
    if layer is None or layer.bf16 != (x.dtype == torch.bfloat16) or type(cache) is not StaticKVCache:
        return False
    rows, k, v = x.shape[0], cache.k, cache.v
    if rows > 1 and (any(layer.format) or not matvec.rows_at_once()):
        # GGUF blocks (and every product without AVX-512) are read one row at a time, so several rows
        # would read the weights once each: a GEMM takes those steps (SmolLM2-135M Q8_0 served, 8
        # streams: 62-65 tok/s in C that way, 89-93 not)
        return False
    if not (k.dtype == x.dtype and k.shape[0] == rows and k.shape[1] == layer.kv_heads
            and k.shape[-1] == layer.head_dim and v.shape == k.shape and k.is_contiguous() and v.is_contiguous()
            and 0 <= pos < k.shape[2]
            and (mask is None or (mask.dtype == torch.bool and _per_row(mask, rows, pos + 1)))):
        return False
    if rope is not None:
        cos, sin = rope.cos, rope.sin
        if not (cos.dtype == torch.float32 and cos.shape == sin.shape and cos.shape[-1] <= layer.head_dim
                and _per_row(cos, rows, cos.shape[-1]) and sin.is_contiguous()):
            return False
    if not layer.cross:
        return cross is None
    return (type(cross) is CrossKVCache and cross.filled and cross.k.dtype == x.dtype
            and cross.k.shape[:2] == (rows, layer.heads) and cross.k.shape[-1] == layer.head_dim
            and cross.v.shape == cross.k.shape and cross.k.is_contiguous() and cross.v.is_contiguous())


def _rotary(rope: Rope | None) -> tuple[int | None, int | None, int, int, int]:
    """``(cos, sin, ldcos, R, interleaved)`` of the C call for ``rope`` (``None``: no rotary;
    ``ldcos`` 0: one position for every row)."""
    if rope is None:
        return None, None, 0, 0, 0
    width = rope.cos.shape[-1]
    return rope.cos.data_ptr(), rope.sin.data_ptr(), 0 if rope.cos.numel() == width else width, width, \
        int(rope.interleaved)


def _valid(mask: Tensor | None) -> tuple[int | None, int]:
    """``(valid, ldvalid)`` of the C call for ``mask`` (``ldvalid`` 0: one mask for every row)."""
    if mask is None:
        return None, 0
    return mask.data_ptr(), 0 if mask.numel() == mask.shape[-1] else mask.shape[-1]


def _cross(cross: CrossKVCache | None) -> tuple[int | None, int | None, int]:
    return (None, None, 0) if cross is None else (cross.k.data_ptr(), cross.v.data_ptr(), cross.k.shape[2])


def run(block: nn.Module, x: Tensor, *, mask: Tensor | None, rope: Rope | None, cache, input_pos: Tensor | None,
        cross_cache: CrossKVCache | None = None) -> Tensor | None:
    """``block(x, mask=mask, rope=rope, cache=cache, input_pos=input_pos, cross_cache=cross_cache)``
    for one token of each row (``x [B, 1, C]``) by one C call, or ``None`` where that call does not
    serve (the module docstring): the caller then runs the block itself."""
    lib = matvec.kernel()
    pos = _position(x, input_pos) if lib is not None and not block.training else None
    layer = plan(block) if pos is not None else None
    if not _fits(layer, x, cache, mask, rope, pos, cross_cache):
        return None
    out = torch.empty_like(x)
    if lib.tatlas_decode_layer(ctypes.byref(layer), x.shape[0], x.data_ptr(), out.data_ptr(), cache.k.data_ptr(),
                               cache.v.data_ptr(), cache.k.shape[2], pos, *_rotary(rope), *_valid(mask),
                               *_cross(cross_cache), torch.get_num_threads()):
        raise MemoryError("decode layer: no memory for its scratch buffers")
    return out


# per decoder cache (one generation): the blocks it was planned for and their layers, as a C array
_STACKS: weakref.WeakKeyDictionary[DecoderCache, tuple[tuple[nn.Module, ...], list[_Layer | None], ctypes.Array]] = \
    weakref.WeakKeyDictionary()


def run_layers(blocks: Sequence[nn.Module], x: Tensor, *, masks: Sequence[Tensor | None],
               ropes: Sequence[Rope | None], cache: DecoderCache, input_pos: Tensor | None,
               also: Sequence[nn.Module] = ()) -> Tensor | None:
    """Every block of a decoder for one token of each row in one C call: ``x [B, 1, C]`` through
    ``blocks[i](x, mask=masks[i], rope=ropes[i], cache=cache.layers[i], input_pos=input_pos,
    cross_cache=cache.cross[i])`` in turn (no cross-attention cache where ``cache.cross`` is empty),
    or ``None`` when one of them is not served (the caller runs the blocks itself). The blocks
    are planned once per cache (one generation), so a step costs one Python call, not one per layer:
    between the layers' weight reads, interpreter work runs with its own data evicted from the caches.
    ``also``: modules every step reads after the blocks (the output head), whose weights go to 2 MB
    pages with the blocks' (:func:`tatlas.nn.memory.to_huge_pages_`)."""
    lib = matvec.kernel()
    pos = _position(x, input_pos) if lib is not None and len(cache.layers) == len(blocks) else None
    if pos is None:
        return None
    memo = _STACKS.get(cache)
    if memo is None or len(memo[0]) != len(blocks) or any(a is not b for a, b in zip(memo[0], blocks)):
        # the fast path's blocks only (a model opts in with optimize_)
        memory.to_huge_pages_(*also)
        layers = [plan(b) if type(b) is FastTransformerBlock and not b.training else None for b in blocks]
        memo = (tuple(blocks), layers, (ctypes.c_void_p * len(layers))(
            *[None if la is None else ctypes.addressof(la) for la in layers]))
        _STACKS[cache] = memo
    n, rotaries, valids = len(blocks), [_rotary(r) for r in ropes], [_valid(m) for m in masks]
    crosses = cache.cross or [None] * n
    strides = {v[1] for v in valids if v[0] is not None}
    for layer, kv, mask, rope, rotary, cross in zip(memo[1], cache.layers, masks, ropes, rotaries, crosses):
        if not _fits(layer, x, kv, mask, rope, pos, cross) or kv.k.shape != cache.layers[0].k.shape \
                or rotary[2:] != rotaries[0][2:] or (cross is not None and cross.k.shape != crosses[0].k.shape):
            return None  # (one call takes one cache length, rotary layout, mask layout, source length for every layer)
    if len(strides) > 1:
        return None
    pointers = ctypes.c_void_p * n
    cross_kv = (None, None) if not cache.cross else (pointers(*[c.k.data_ptr() for c in crosses]),
                                                     pointers(*[c.v.data_ptr() for c in crosses]))
    out = torch.empty_like(x)
    if lib.tatlas_decode_layers(memo[2], n, x.shape[0], x.data_ptr(), out.data_ptr(),
                                pointers(*[kv.k.data_ptr() for kv in cache.layers]),
                                pointers(*[kv.v.data_ptr() for kv in cache.layers]), cache.layers[0].k.shape[2], pos,
                                pointers(*[r[0] for r in rotaries]), pointers(*[r[1] for r in rotaries]),
                                *rotaries[0][2:], pointers(*[v[0] for v in valids]), strides.pop() if strides else 0,
                                *cross_kv, 0 if not cache.cross else crosses[0].k.shape[2],
                                torch.get_num_threads()):
        raise MemoryError("decode layer: no memory for its scratch buffers")
    return out


class FastTransformerBlock(TransformerBlock):
    """:class:`~tatlas.nn.TransformerBlock` whose one-token step (a decode step of one sequence or
    several, with a static cache) runs as one C call (:func:`run`) where the block is one the C
    layer computes; every other call runs the block as before. :func:`~tatlas.nn.fastpath.optimize_` swaps it in."""

    twin_of = TransformerBlock

    def forward(self, x: Tensor, context: Tensor | None = None, **kwargs) -> Tensor:
        if (context is None and x.dim() == 3 and x.shape[1] == 1 and not kwargs.keys() - _DECODE_KWARGS
                and kwargs.get("cross_weights") is None and kwargs.get("context_mask") is None):
            y = run(self, x, mask=kwargs.get("mask"), rope=kwargs.get("rope"), cache=kwargs.get("cache"),
                    input_pos=kwargs.get("input_pos"), cross_cache=kwargs.get("cross_cache"))
            if y is not None:
                return y
        return super().forward(x, context, **kwargs)


# the keywords of a decode step the C layer honours (``routings``: only a mixture of experts records
# any; ``cross_weights`` and ``context_mask``: only when None)
_DECODE_KWARGS = frozenset({"mask", "causal", "rope", "cache", "input_pos", "routings", "cross_cache", "cross_weights",
                            "context_mask"})

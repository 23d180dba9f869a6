"""Multi-head attention: one module for self- and cross-attention, one fast path through
``F.scaled_dot_product_attention``, and an explicit-softmax twin that can return the weights.

Vaswani et al. 2017, §3.2 (scaled dot-product and multi-head attention); grouped-query attention
from Ainslie et al. 2023 (GQA); sigmoid output gating as in AlphaFold2's gated attention
(Jumper et al. 2021, Supplement Algorithm 7); QK-norm as in Dehghani et al. 2023 (ViT-22B).

Masks: a boolean ``mask`` is ``True`` where a query may attend a key; a float ``mask`` or ``bias`` is
added to the scores. Both broadcast to ``[*, H, T, S]``. ``causal=True`` without a mask means query
``i`` sees keys ``j <= i + S - T``: the causal diagonal aligned at the bottom right, as needed when
the queries are the last ``T`` of ``S`` positions (cached decoding).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import CrossKVCache
from .positions import Rope, apply_rotary


def causal_mask(t: int, s: int, *, window: int | None = None, device: torch.device | None = None) -> Tensor:
    """Boolean causal mask aligned at the bottom right: ``[T, S]``, query ``i`` sees keys ``<= i + S - T``
    (and, with a sliding ``window``, only the last ``window`` of them)."""
    q = torch.arange(t, device=device)[:, None] + (s - t)
    k = torch.arange(s, device=device)[None, :]
    allowed = k <= q
    return allowed if window is None else allowed & (k > q - window)


def combine_mask(mask: Tensor | None, bias: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """One ``attn_mask`` for SDPA from a boolean/additive mask and an additive bias."""
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(dtype)
        return mask if bias is None else mask + bias.to(dtype)
    if bias is None:
        return mask
    bias = bias.to(dtype)
    return bias if mask is None else bias.masked_fill(~mask, float("-inf"))


def _expand_kv(k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    g = k.shape[-3]
    if g == heads:
        return k, v
    return k.repeat_interleave(heads // g, dim=-3), v.repeat_interleave(heads // g, dim=-3)


def sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Fast path. ``q [*, H, T, D]``, ``k/v [*, G, S, D]`` (H divisible by G) -> ``[*, H, T, D_v]``."""
    if q.shape[-2] == 1 and q.device.type == "cpu" and not dropout_p and not torch.is_grad_enabled():
        return _one_query(q, k, v, attn_mask, scale)
    gqa = q.shape[-3] != k.shape[-3]
    if q.dim() == 4:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, dropout_p=dropout_p, enable_gqa=gqa
        )
    # other ranks: fold the leading dims into one batch dim (SDPA kernels want [B, H, T, D])
    lead = _broadcast(q.shape[:-3], k.shape[:-3])
    q, k, v = (t.expand(*lead, *t.shape[-3:]).reshape(-1, *t.shape[-3:]) for t in (q, k, v))
    if attn_mask is not None:
        attn_mask = _lead_mask(attn_mask, lead)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, dropout_p=dropout_p, enable_gqa=gqa
    )
    return out.reshape(*lead, *out.shape[-3:])


def _lead_mask(attn_mask: Tensor, lead: tuple[int, ...]) -> Tensor:
    """``attn_mask`` for ``q``'s leading dims ``lead`` folded into one batch dim: a mask broadcast over
    all of them stays one ``[1, H, T, S]`` (SDPA broadcasts it; expanded and folded it would be copied
    once per row: AlphaFold's pair bias, 128 rows x 4 heads x 128 x 128, 33 MB)."""
    shape = (1,) * (len(lead) + 3 - attn_mask.dim()) + tuple(attn_mask.shape)
    if all(d == 1 for d in shape[: len(lead)]):
        return attn_mask.reshape(1, *shape[len(lead):])
    return attn_mask.reshape(shape).expand(*lead, *shape[len(lead):]).reshape(-1, *shape[len(lead):])


def is_key_mask(mask: Tensor | None) -> bool:
    """Whether ``mask`` is an additive per-key mask (float, one value per key, the same for every
    head and query: ``[*, 1, 1, S]``), as AlphaFold's attentions take it."""
    return mask is not None and mask.is_floating_point() and mask.dim() >= 3 and mask.shape[-3:-1] == (1, 1)


# floats of the mask a chunk of rows forms at once in :func:`key_masked_attention` (4 MB in float32:
# it stays in cache between the add that writes it and the attention that reads it)
MASK_CHUNK = 1 << 20


def key_masked_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, bias: Tensor, *,
                         scale: float | None = None, dropout_p: float = 0.0) -> Tensor:
    """``softmax(q k^T * scale + key_mask + bias) v`` where each row (the leading dims) has its own
    mask of keys ``[*, 1, 1, S]`` and the rows share ``bias [*, H, T, S]``: AlphaFold's row attention
    with pair bias and triangle attention (128 rows of one 4 x 128 x 128 pair bias). Their sum for all
    rows at once (33 MB there) cost page faults and two passes over memory, and SDPA copied it once
    more: more time than the attention itself.

    ``key_mask + bias`` is formed a chunk of rows at a time (:data:`MASK_CHUNK` floats) in one buffer
    that stays in cache, and SDPA's flash kernel runs on each chunk: the same sums in the same order
    as forming the whole mask (bit-identical results). With gradients, the backward pass forms each
    chunk's scores again (:class:`_KeyMaskedAttention`), so no ``[*, H, T, S]`` tensor is kept for it
    (the weights of all rows: 33 MB a layer at 128 residues, 268 MB at 256). Dropout, broadcast
    queries/keys/values or a key mask that takes gradients: the scores are formed once and the mask
    and bias added in place, in AlphaFold's order. ``q [*, H, T, D]``, ``k/v [*, G, S, D]`` ->
    ``[*, H, T, D_v]``."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if q.dim() < 4:  # one row
        return key_masked_attention(q[None], k[None], v[None], key_mask[None], bias[None], scale=scale,
                                    dropout_p=dropout_p)[0]
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, key_mask, bias))
    lead = _broadcast(_broadcast(q.shape[:-3], k.shape[:-3]), _broadcast(key_mask.shape[:-3], bias.shape[:-3]))
    if dropout_p or grad and (key_mask.requires_grad or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
                              or tuple(q.shape[:-3]) != lead):
        k, v = _expand_kv(k, v, q.shape[-3])
        scores = (q * scale) @ k.transpose(-1, -2)  # [*, H, T, S]
        for term in (key_mask, bias):
            term = term.to(scores.dtype)
            scores = scores.add_(term) if _broadcast(scores.shape, term.shape) == tuple(scores.shape) else scores + term
        weights = scores.softmax(dim=-1)
        if dropout_p:
            weights = F.dropout(weights, p=dropout_p)
        return weights @ v
    key_mask, bias = key_mask.to(q.dtype), bias.to(q.dtype)
    if grad:
        return _KeyMaskedAttention.apply(q, k, v, key_mask, bias, scale)
    return _key_masked_rows(q, k, v, key_mask, bias, scale, lead)


def _scores_buffer(q: Tensor, k: Tensor, rows: int) -> Tensor:
    """The buffer of one chunk's scores ``[n, H, T, S]``: :data:`MASK_CHUNK` floats' worth of rows."""
    h, t, s = q.shape[-3], q.shape[-2], k.shape[-2]
    return q.new_empty(min(max(1, MASK_CHUNK // (h * t * s)), max(1, rows)), h, t, s)


def _row_chunks(lead: tuple[int, ...], step: int):
    """``(outer index, first row, rows)`` of the chunks :func:`key_masked_attention` takes: the rows
    (last leading dim) ``step`` at a time, for every outer leading index."""
    for outer in itertools.product(*map(range, lead[:-1])):
        for r in range(0, lead[-1], step):
            yield outer, r, min(step, lead[-1] - r)


def _chunk(x: Tensor, lead: tuple[int, ...], outer: tuple[int, ...], r: int, n: int) -> Tensor:
    """Rows ``r .. r+n-1`` of ``x`` at ``outer`` (``[n | 1, ...]``: a size-1 row dim stays one, broadcast)."""
    x = _row_slab(x, outer, len(lead))
    return x.narrow(0, r, n) if x.shape[0] > 1 else x


def _chunk_scores(key_mask, bias, lead, outer, r, n, buf: Tensor, *, every_row: bool = False) -> Tensor:
    """``key_mask + bias`` of a chunk of ``n`` rows, written into ``buf`` -> ``[n | 1, H, T, S]`` (one
    for all ``n`` rows where both are shared by them, unless ``every_row``)."""
    mc, bc = _chunk(key_mask, lead, outer, r, n), _chunk(bias, lead, outer, r, n)
    rows = n if every_row else max(mc.shape[0], bc.shape[0])
    return torch.add(mc.expand(rows, *mc.shape[1:]), bc.expand(rows, *buf.shape[1:]), out=buf[:rows])


def _key_masked_rows(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, bias: Tensor, scale: float,
                     lead: tuple[int, ...]) -> Tensor:
    """The forward of :func:`key_masked_attention`: SDPA's flash kernel on chunks of rows."""
    out = q.new_empty(*lead, q.shape[-3], q.shape[-2], v.shape[-1])  # (no rows: an empty extra MSA)
    buf = _scores_buffer(q, k, lead[-1])
    for outer, r, n in _row_chunks(lead, buf.shape[0]):
        mask = _chunk_scores(key_mask, bias, lead, outer, r, n, buf)
        qc, kc, vc = (_chunk(x, lead, outer, r, n).expand(n, *x.shape[-3:]) for x in (q, k, v))
        out[outer].narrow(0, r, n).copy_(sdpa(qc, kc, vc, attn_mask=mask, scale=scale))
    return out


def _row_slab(x: Tensor, outer: tuple[int, ...], lead: int) -> Tensor:
    """``x``'s rows ``[rows | 1, a, b, c]`` at the outer leading index ``outer`` (of ``lead`` leading
    dims; ``x`` broadcast where it has fewer or size-1 dims)."""
    x = x.reshape((1,) * (lead + 3 - x.dim()) + tuple(x.shape))
    return x[tuple(i if n > 1 else 0 for i, n in zip(outer, x.shape, strict=False))]


class _KeyMaskedAttention(torch.autograd.Function):
    """:func:`key_masked_attention` with gradients for queries, keys, values (one leading shape, one
    head count) and the bias: the forward keeps only its inputs and output; the backward forms each
    chunk's scores and weights again, in cache, and writes the chunk's gradients in place (the
    weights' gradient ``dS = P * (dO v^T - rowsum(dO * O))``, then ``dq = dS k * scale``,
    ``dk = dS^T q * scale``, ``dv = P^T dO`` and the bias' sum of ``dS`` over the rows it is shared by)."""

    @staticmethod
    def forward(ctx, q, k, v, key_mask, bias, scale):
        out = _key_masked_rows(q, k, v, key_mask, bias, scale, tuple(q.shape[:-3]))  # (q: every leading dim)
        ctx.save_for_backward(q, k, v, key_mask, bias, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, key_mask, bias, out = ctx.saved_tensors
        scale = ctx.scale
        h, t, s, d, dv_ = q.shape[-3], q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
        dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))
        db = torch.zeros_like(bias, memory_format=torch.contiguous_format) if ctx.needs_input_grad[4] else None
        lead = tuple(q.shape[:-3])
        buf = _scores_buffer(q, k, lead[-1])
        for outer, r, n in _row_chunks(lead, buf.shape[0]):
            scores = _chunk_scores(key_mask, bias, lead, outer, r, n, buf, every_row=True)
            qc, kc, vc, gc, oc = (_chunk(x, lead, outer, r, n).reshape(n * h, -1, x.shape[-1])
                                  for x in (q, k, v, grad, out))
            scores = scores.view(n * h, t, s).baddbmm_(qc, kc.transpose(1, 2), alpha=scale)
            p = scores.softmax(dim=-1)
            ds = torch.bmm(gc, vc.transpose(1, 2)).sub_((gc * oc).sum(-1, keepdim=True)).mul_(p)  # [nH, T, S]
            torch.bmm(p.transpose(1, 2), gc, out=_chunk(dv, lead, outer, r, n).view(n * h, s, dv_))
            torch.bmm(ds, kc, out=_chunk(dq, lead, outer, r, n).view(n * h, t, d)).mul_(scale)
            torch.bmm(ds.transpose(1, 2), qc, out=_chunk(dk, lead, outer, r, n).view(n * h, s, d)).mul_(scale)
            if db is not None:
                target = _chunk(db, lead, outer, r, n)
                ds = ds.view(n, h, t, s)
                dims = [i for i in range(4) if target.shape[i] == 1 and ds.shape[i] > 1]
                target.add_(ds.sum(dims, keepdim=True) if dims else ds)
        needs = ctx.needs_input_grad
        return (dq if needs[0] else None, dk if needs[1] else None, dv if needs[2] else None, None, db, None)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of two shapes, in Python (``torch.broadcast_shapes`` goes through torch's
    reference implementation, whose first use imports the symbolic-shapes machinery: ~0.3 s of a
    short transcription's start-up)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def _one_query(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, scale: float | None) -> Tensor:
    """One query per head (a decode step) on the CPU: two batched matrix-vector products and a
    softmax beat SDPA's flash kernel there by 2-10x (its tiling costs more than it saves for T = 1).
    Query heads of one key/value group are stacked as rows, so GQA needs no repeated keys.
    ``q [*, H, 1, D]``, ``k/v [*, G, S, D]`` -> ``[*, H, 1, D_v]``."""
    h, g = q.shape[-3], k.shape[-3]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    lead = _broadcast(q.shape[:-3], k.shape[:-3])
    qg = q.expand(*lead, *q.shape[-3:]).reshape(*lead, g, h // g, q.shape[-1])  # [*, G, H/G, D]
    scores = (qg @ k.transpose(-1, -2)) * scale  # [*, G, H/G, S]
    if attn_mask is not None:
        mask = attn_mask.expand(*lead, h, 1, k.shape[-2]) if attn_mask.dim() >= 3 else attn_mask
        mask = mask.reshape(*lead, g, h // g, k.shape[-2]) if mask.dim() > 2 else mask
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.to(scores.dtype)
    out = scores.softmax(dim=-1) @ v  # [*, G, H/G, D_v]
    return out.reshape(*lead, h, 1, v.shape[-1])


def _grouped_rows(q: Tensor, k: Tensor, v: Tensor, scale: float | None, dropout_p: float) -> Tensor:
    """Cross-attention where ``g`` adjacent query rows share one source (the beams or samples of one
    Whisper window): ``q [B*g, H, T, D]``, ``k/v [B, G, S, D]`` -> ``[B*g, H, T, D_v]``. The rows'
    queries are stacked as ``g*T`` queries of their source, so its keys/values are read once per
    step instead of once per row (they dominate the memory traffic of a decode step)."""
    b, g = k.shape[0], q.shape[0] // k.shape[0]
    h, t = q.shape[1], q.shape[2]
    qs = q.unflatten(0, (b, g)).transpose(1, 2).reshape(b, h, g * t, q.shape[-1])  # [B, H, g*T, D]
    out = sdpa(qs, k, v, scale=scale, dropout_p=dropout_p)  # [B, H, g*T, D_v]
    return out.unflatten(2, (g, t)).transpose(1, 2).flatten(0, 1)  # [B*g, H, T, D_v]


def softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Explicit-softmax twin of :func:`sdpa` that also returns the weights ``[*, H, T, S]``."""
    k, v = _expand_kv(k, v, q.shape[-3])
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale  # [*, H, T, S]
    if is_causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], device=q.device), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.float()
    weights = scores.softmax(dim=-1)
    if dropout_p:
        weights = F.dropout(weights, p=dropout_p)
    return (weights @ v.float()).to(q.dtype), weights.to(q.dtype)


class Attention(nn.Module):
    """Multi-head self- or cross-attention.

    ``x [*, T, C]``; ``context [*, S, C_kv]`` for cross-attention (keys/values from ``context``).
    Parameters: ``qkv`` (fused) or ``q``, ``k``, ``v``; ``out``; optionally ``gate``, ``q_norm``, ``k_norm``
    (per head, or with ``qk_norm_per_head=False`` over all heads' width before the split), and with
    ``kv_bias_token`` a learned key ``bias_k`` and value ``bias_v`` (``[G * D]``) appended as one more
    position every query may attend to (``torch.nn.MultiheadAttention(add_bias_kv=True)``; ImageBind's
    audio, depth, thermal and IMU encoders). Self-attention without a cache only.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        kv_dim: int | None = None,
        out_dim: int | None = None,
        qkv_bias: bool = False,
        k_bias: bool | None = None,
        out_bias: bool = False,
        fused_qkv: bool = False,
        gate: bool = False,
        qk_norm: Callable[[int], nn.Module] | None = None,
        qk_norm_per_head: bool = True,
        scale: float | None = None,
        dropout: float = 0.0,
        kv_bias_token: bool = False,
    ) -> None:
        super().__init__()
        kv_heads = kv_heads or heads
        if heads % kv_heads:
            raise ValueError(f"heads ({heads}) must be divisible by kv_heads ({kv_heads})")
        if head_dim is None:
            if dim % heads:
                raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
            head_dim = dim // heads
        kv_dim = kv_dim or dim
        if fused_qkv and kv_dim != dim:
            raise ValueError("fused_qkv needs keys/values from the same width as queries")
        k_bias = qkv_bias if k_bias is None else k_bias
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.scale, self.dropout = scale, dropout
        self.fused = fused_qkv
        q_out, kv_out = heads * head_dim, kv_heads * head_dim
        if fused_qkv:
            if k_bias != qkv_bias:
                raise ValueError("fused_qkv needs the same bias setting for q, k and v")
            self.qkv = nn.Linear(dim, q_out + 2 * kv_out, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, q_out, bias=qkv_bias)
            self.k = nn.Linear(kv_dim, kv_out, bias=k_bias)
            self.v = nn.Linear(kv_dim, kv_out, bias=qkv_bias)
        # QK-norm per head (ViT-22B, Gemma 3) or over all heads' width at once (InternViT)
        self.qk_norm_per_head = qk_norm_per_head
        self.q_norm = qk_norm(head_dim if qk_norm_per_head else q_out) if qk_norm else None
        self.k_norm = qk_norm(head_dim if qk_norm_per_head else kv_out) if qk_norm else None
        self.gate = nn.Linear(dim, q_out, bias=True) if gate else None
        self.out = nn.Linear(q_out, out_dim or dim, bias=out_bias)
        if kv_bias_token:
            self.bias_k = nn.Parameter(torch.empty(kv_out).normal_(std=kv_out**-0.5))
            self.bias_v = nn.Parameter(torch.empty(kv_out).normal_(std=kv_out**-0.5))
        else:
            self.bias_k = self.bias_v = None

    def _heads(self, x: Tensor, n: int) -> Tensor:
        return x.unflatten(-1, (n, self.head_dim)).transpose(-2, -3)  # [*, T, n*D] -> [*, n, T, D]

    def project_kv(self, context: Tensor, rope: Rope | None = None) -> tuple[Tensor, Tensor]:
        """Keys and values from ``context [*, S, C_kv]`` -> ``([*, G, S, D], [*, G, S, D])``."""
        if self.fused:
            kv = F.linear(context, self.qkv.weight[self.heads * self.head_dim :],
                          None if self.qkv.bias is None else self.qkv.bias[self.heads * self.head_dim :])
            k, v = kv.chunk(2, dim=-1)
        else:
            k, v = self.k(context), self.v(context)
        if self.k_norm is not None and not self.qk_norm_per_head:
            k = self.k_norm(k)
        k, v = self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)
        if self.k_norm is not None and self.qk_norm_per_head:
            k = self.k_norm(k)
        if rope is not None:
            k = apply_rotary(k, rope)
        return k, v

    def _project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x [*, T, C]`` -> queries, keys and values ``[*, T, H*D], [*, T, G*D], [*, T, G*D]``."""
        if self.fused:
            q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
            return self.qkv(x).split([q_out, kv_out, kv_out], dim=-1)
        return self.q(x), self.k(x), self.v(x)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self._project_qkv(x)
        if self.k_norm is not None and not self.qk_norm_per_head:  # over the whole width, before the heads
            q, k = self.q_norm(q), self.k_norm(k)
        return self._heads(q, self.heads), self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        causal: bool = False,
        rope: Rope | None = None,
        cache=None,
        input_pos: Tensor | None = None,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x [*, T, C] -> [*, T, C_out]`` (and the weights ``[*, H, T, S]`` if ``return_weights``).

        ``cache``: a self-attention KV cache (``update(k, v, input_pos)`` writes the new keys and
        returns all of them), or a :class:`CrossKVCache` that holds keys/values of ``context``
        computed once. ``rope`` rotates queries and (self-attention) keys.
        """
        width = self.qkv.in_features if self.fused else self.q.in_features
        if x.shape[-1] != width:
            raise ValueError(f"attention input width: expected {width}, got {x.shape[-1]} (shape {tuple(x.shape)})")
        if context is None and not isinstance(cache, CrossKVCache):
            q, k, v = self._qkv(x)  # [*, H, T, D], [*, G, T, D]
            if self.k_norm is not None and self.qk_norm_per_head:
                q, k = self.q_norm(q), self.k_norm(k)
            if rope is not None:
                q, k = apply_rotary(q, rope), apply_rotary(k, rope)
            if cache is not None:
                if self.bias_k is not None:
                    raise ValueError("kv_bias_token attention takes no KV cache")
                k, v = cache.update(k, v, input_pos)  # [*, G, S, D]
            if self.bias_k is not None:
                return self._with_bias_token(q, k, v, x, mask=mask, bias=bias, causal=causal,
                                             return_weights=return_weights)
        else:
            q = self.q(x)
            if self.q_norm is not None and not self.qk_norm_per_head:
                q = self.q_norm(q)
            q = self._heads(q, self.heads)
            if self.q_norm is not None and self.qk_norm_per_head:
                q = self.q_norm(q)
            if rope is not None:
                q = apply_rotary(q, rope)
            if isinstance(cache, CrossKVCache):
                if not cache.filled:
                    if context is None:
                        raise ValueError("cross-attention cache is empty and no context was given")
                    cache.store(*self.project_kv(context))
                k, v = cache.k, cache.v
            else:
                k, v = self.project_kv(context)

        if (q.dim() == 4 and k.shape[0] != q.shape[0] and q.shape[0] % k.shape[0] == 0 and mask is None
                and bias is None and not causal and not return_weights):
            return self._out(_grouped_rows(q, k, v, self.scale, self.dropout if self.training else 0.0), x)
        dropout = self.dropout if self.training else 0.0
        if (is_key_mask(mask) and bias is not None and bias.is_floating_point() and not causal and not return_weights
                and q.dim() >= 4 and q.shape[-3] == k.shape[-3] and q.device.type == "cpu"):
            # CPU only: on a GPU, where a launch costs more than the memory traffic, one SDPA call over the
            # summed mask stays (not measured: no GPU was lent)
            return self._out(key_masked_attention(q, k, v, mask, bias, scale=self.scale, dropout_p=dropout), x)
        t, s = q.shape[-2], k.shape[-2]
        attn_mask = combine_mask(mask, bias, q.dtype)
        is_causal = causal and attn_mask is None and t == s
        if causal and not is_causal:
            cm = causal_mask(t, s, device=q.device)
            if attn_mask is None or attn_mask.dtype == torch.bool:
                attn_mask = cm if attn_mask is None else attn_mask & cm
            else:
                attn_mask = attn_mask.masked_fill(~cm, float("-inf"))
        if return_weights:
            out, weights = softmax_attention(
                q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=self.scale, dropout_p=dropout
            )
        else:
            out = sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=self.scale, dropout_p=dropout)
        out = self._out(out, x)
        return (out, weights) if return_weights else out

    def _with_bias_token(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor, *, mask: Tensor | None,
                         bias: Tensor | None, causal: bool, return_weights: bool) -> Tensor | tuple[Tensor, Tensor]:
        """Attention over ``[k; bias_k]`` and ``[v; bias_v]``: the learned position is visible to every
        query (its mask column allowed, causal or not)."""
        t = k.shape[-2]
        extra = (*k.shape[:-2], 1, self.head_dim)
        k = torch.cat([k, self._heads(self.bias_k.to(k.dtype)[None], self.kv_heads).expand(extra)], dim=-2)
        v = torch.cat([v, self._heads(self.bias_v.to(v.dtype)[None], self.kv_heads).expand(extra)], dim=-2)
        attn_mask = combine_mask(mask, bias, q.dtype)
        if causal:
            cm = causal_mask(q.shape[-2], t, device=q.device)
            attn_mask = cm if attn_mask is None else (
                attn_mask & cm if attn_mask.dtype == torch.bool else attn_mask.masked_fill(~cm, float("-inf")))
        if attn_mask is not None:
            allowed = attn_mask.new_ones(()) if attn_mask.dtype == torch.bool else attn_mask.new_zeros(())
            attn_mask = torch.cat([attn_mask, allowed.expand(*attn_mask.shape[:-1], 1)], dim=-1)
        dropout = self.dropout if self.training else 0.0
        if return_weights:
            out, weights = softmax_attention(q, k, v, attn_mask=attn_mask, is_causal=False, scale=self.scale,
                                             dropout_p=dropout)
            return self._out(out, x), weights
        return self._out(sdpa(q, k, v, attn_mask=attn_mask, is_causal=False, scale=self.scale, dropout_p=dropout), x)

    def _out(self, out: Tensor, x: Tensor) -> Tensor:
        out = out.transpose(-2, -3).flatten(-2)  # [*, H, T, D] -> [*, T, H*D]
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(x))
        return self.out(out)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}"

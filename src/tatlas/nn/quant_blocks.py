"""llama.cpp's quantised blocks run as stored, never de-quantised to float32 (GGUF types, ggml's
``ggml-quants.c``): linear layers that read 4- or 8-bit weights inside the matmul, built straight
from a GGUF tensor's raw blocks.

- ``Q4_0`` (``w = d * (q - 8)``) and ``Q4_1`` (``w = d * q + m``), 32 values per block with one
  float16 ``d`` (and ``m``), ``q`` in 0..15, map exactly onto torch's int4 group-wise layout (the
  tinygemm convention ``w = (q - 8) * scale + zero`` with groups of 32 along the input): ``scale = d``,
  ``zero = 0`` (Q4_0) or ``zero = m + 8 d`` (Q4_1). :class:`Int4Linear` packs ``q`` once with
  ``torch._convert_weight_to_int4pack_for_cpu`` and multiplies with ``torch._weight_int4pack_mm_for_cpu``.
- ``Q8_0`` (``w = d * q``, ``q`` int8, 32 per block) and ``Q5_0`` (``w = d * (q - 16)``, ``q`` in
  0..31, its fifth bits packed apart) keep their per-block scales, three ways: torch's int8 kernel
  (``torch._weight_int8pack_mm``) takes one scale per output row, so :class:`GroupInt8Linear` calls it
  once per 32-wide column group and sums the partial products in float32 (exact; one call per 32
  columns); :class:`Int4PairLinear` splits each int8 value into two nibbles and runs both int4
  matrices side by side in one int4 call (exact; the fastest: SmolLM2's and Gemma 3's output
  projections 1.6 and 9.7 ms vs 1.8 and 12.6 ms for the per-row int8 kernel, 2 threads);
  ``int8="rows"`` re-quantises to one scale per row for the int8 kernel (not exact).

The speed comes from the kernels' vectorised code, which (torch 2.13, x86 CPU) exists for bfloat16
activations only: with float32 activations both ops take a scalar reference loop about 40x slower
than float32 ``F.linear`` (a ``[1, 576] x [576, 576]`` product: 1.1 ms vs 28 us; bfloat16: 19 us).
So each module computes in ``compute_dtype`` (bfloat16 by default, read once at build time): the
activations and the block scales are rounded to it, the product comes back in the input's dtype.
``compute_dtype=torch.float32`` runs the same layout through the exact (slow) float32 path — what the
tests use to prove the layout equal to ggml's de-quantiser. Rounding ``d`` (float16) to bfloat16 and
the activations to bfloat16 costs ~2^-9 relative per term; llama.cpp itself rounds activations to
8 bits (``Q8_0``/``Q8_1``) for these dot products.

A decode step multiplies one row, and there the speed is the weights' read: for that row each
module (groups of 32) runs ``matvec.c``'s own q4 / q8 kernels on a second copy of its blocks kept in
ggml's order with float32 scales (``q4_bytes``/``q8`` and their scales, half to one byte and a
quarter byte per weight more, not in the state dict), in float32 throughout — the de-quantised
file's products to float32 rounding — and :mod:`~tatlas.nn.decode_layer` reads the same blocks
inside its one-call layers. SmolLM2-135M Q4_1 decodes at ~50 tokens/s that way on a 2-vCPU Zen 1
machine, against 17 with torch's kernels and 33 de-quantised to float32 (``benchmarks/bench_gguf.py``).
The copies are made once, from the file's values: edit a module's blocks, and build it again.

Other types (``Q4_K``, ``Q5_1``, ``Q6_K``, ``F16``, ``F32`` ...) are not handled here: a caller keeps
their de-quantised float32 layer (:func:`gguf_linear` returns ``None``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import matvec

__all__ = ["GROUP", "GroupInt8Linear", "Int4Linear", "Int4PairLinear", "blocks_of", "gguf_linear", "q4_blocks", "q8_blocks", "requantize_per_row",
           "swap_modules_"]

GROUP = 32  # values per ggml block (QK4_0, QK4_1, QK8_0)
_BLOCK_BYTES = {"Q4_0": 2 + 16, "Q4_1": 2 + 2 + 16, "Q5_0": 2 + 4 + 16, "Q8_0": 2 + 32}
INT4_TYPES = ("Q4_0", "Q4_1")
INT8_TYPES = ("Q5_0", "Q8_0")


def _blocks(raw: Any, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """A GGUF tensor's raw bytes as ``[N, K/32, block_bytes]`` uint8."""
    n, k = shape
    if k % GROUP:
        raise ValueError(f"{kind} rows of {k} values are not whole {GROUP}-value blocks")
    data = np.asarray(raw, dtype=np.uint8).reshape(n, k // GROUP, _BLOCK_BYTES[kind])
    return data


def _f16(b: np.ndarray) -> np.ndarray:
    """Two bytes per entry (little-endian float16) -> float32, ``[N, K/32]``."""
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def q4_blocks(raw: Any, kind: str, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """``Q4_0``/``Q4_1`` blocks -> ``(q [N, K] uint8 in 0..15, scale [N, K/32], zero [N, K/32])``
    (float32) with ``w = (q - 8) * scale + zero`` group-wise — torch's int4 convention."""
    if kind not in INT4_TYPES:
        raise ValueError(f"not a 4-bit block type: {kind}")
    b = _blocks(raw, kind, shape)  # [N, K/32, bytes]
    d = _f16(b[..., 0:2])
    if kind == "Q4_1":
        m = _f16(b[..., 2:4])
        qs, zero = b[..., 4:], m + 8.0 * d  # d*q + m == d*(q - 8) + (m + 8d)
    else:
        qs, zero = b[..., 2:], np.zeros_like(d)  # d*(q - 8)
    # ggml packs value j in the low nibble of byte j and value j + 16 in its high nibble
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(shape)  # [N, K/32, 32] -> [N, K]
    return torch.from_numpy(q), torch.from_numpy(d), torch.from_numpy(zero)


def q8_blocks(raw: Any, kind: str, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``Q8_0`` (``w = d * q``, ``q`` int8) or ``Q5_0`` (``w = d * (q - 16)``, ``q`` in 0..31) blocks ->
    ``(q [N, K] int8, scale [N, K/32] float32)`` with ``w = q * scale``."""
    if kind not in INT8_TYPES:
        raise ValueError(f"not an 8-bit block type: {kind}")
    b = _blocks(raw, kind, shape)
    if kind == "Q8_0":
        q = np.ascontiguousarray(b[..., 2:]).view(np.int8).reshape(shape)
    else:  # Q5_0: low nibbles as Q4_0, the fifth bits of values j and j + 16 in bits j and j + 16 of qh
        qh = np.ascontiguousarray(b[..., 2:6]).view("<u4")  # [N, K/32, 1]
        high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8) << 4  # [N, K/32, 32]
        qs = b[..., 6:]
        q = (np.concatenate([qs & 0x0F, qs >> 4], axis=-1) | high).astype(np.int8) - np.int8(16)
        q = q.reshape(shape)
    return torch.from_numpy(q), torch.from_numpy(_f16(b[..., 0:2]))


def _keep_blocks(module: nn.Module, **tensors: Tensor) -> None:
    """Register the blocks ``matvec.c`` reads (not part of the state dict: rebuilt from the file)."""
    module._block_names = tuple(tensors)
    for name, t in tensors.items():
        module.register_buffer(name, t.contiguous(), persistent=False)


def blocks_of(module: nn.Module) -> tuple[Tensor, ...] | None:
    """The blocks ``matvec.c`` reads of a module that keeps them (``matvec.matvec_blocks``'s
    ``blocks``), or ``None``."""
    names = getattr(module, "_block_names", ())
    return tuple(getattr(module, n) for n in names) if names else None


def _one_row(module: nn.Module, x: Tensor) -> Tensor | None:
    """``module(x)`` by the C kernel for one float32 row (``matvec.c``'s q4/q8 products, float32
    throughout), or ``None`` where it does not serve."""
    blocks = blocks_of(module)
    if blocks is None or not matvec.serves_blocks(x, blocks):
        return None
    return matvec.matvec_blocks(x, blocks, module.bias)


class Int4Linear(nn.Module):
    """``y = x @ W^T (+ b)`` with ``W[n, k] = (q[n, k] - 8) * scale[n, k // g] + zero[n, k // g]``,
    ``q`` packed 4-bit for torch's CPU kernel. ``x [*, K] -> [*, N]``.

    For groups of 32 it also keeps ``q`` in ggml's own nibble order with float32 scales and offsets
    (``q4_bytes``, ``q4_scales``, ``q4_offsets``: another half byte and a quarter byte per weight):
    one float32 row (a decode step) runs on ``matvec.c``'s q4 kernel, in float32 throughout — the
    same products as the de-quantised file's, where torch's kernel rounds the row and the scales to
    ``compute_dtype`` — and :mod:`~tatlas.nn.decode_layer` reads them inside its one-call layers."""

    keeps_q4 = True  # (a subclass whose packed matrix is not its weight keeps blocks of its own)

    def __init__(self, q: Tensor, scale: Tensor, zero: Tensor, *, bias: Tensor | None = None, group: int = GROUP,
                 compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.packed_in = self.in_features  # columns of the packed matrix
        self.group, self.compute_dtype = group, compute_dtype
        if self.keeps_q4 and group == GROUP and self.in_features % GROUP == 0:
            n, k = q.shape
            nib = q.to(torch.uint8).reshape(n, k // GROUP, 2, GROUP // 2)  # value j and j + 16 of each group
            _keep_blocks(self, q4_bytes=(nib[:, :, 0] | (nib[:, :, 1] << 4)).reshape(n, k // 2),
                         q4_scales=scale.float(), q4_offsets=zero.float() - 8.0 * scale.float())
        pad = -self.out_features % 16  # the kernel packs rows in 16s: zero rows, sliced off the output
        if pad:
            q, scale, zero = (torch.cat([t, t.new_zeros(pad, t.shape[1])]) for t in (q, scale, zero))
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)
        self.register_buffer("packed", packed)  # [N, K/2] uint8 (the kernel's own order)
        sz = torch.stack([scale.t(), zero.t()], dim=-1)  # [K/g, N, 2]
        self.register_buffer("scales_and_zeros", sz.to(compute_dtype).contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        y = _one_row(self, x)
        if y is not None:
            return y
        flat = x.reshape(-1, self.packed_in).to(self.compute_dtype)  # [M, K]
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group, self.scales_and_zeros)
        y = y[:, : self.out_features].to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    @torch.no_grad()
    def dequantize(self) -> Tensor:
        """The weight ``[N, K]`` as ``compute_dtype`` values (the kernel applied to the identity)."""
        eye = torch.eye(self.packed_in, dtype=self.compute_dtype)
        w = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, self.group, self.scales_and_zeros)
        return w[:, : self.out_features].t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 groups of {self.group}, " \
               f"compute {str(self.compute_dtype).removeprefix('torch.')}"


class Int4PairLinear(Int4Linear):
    """8-bit group-wise weights ``W = q * scale`` (``q`` int8) on the int4 kernel, exactly: with
    ``u = q + 128 = 16 hi + lo`` (``hi, lo`` in 0..15), ``W = (hi - 8) * 16 scale + (lo - 8) * scale +
    8 scale`` — two int4 matrices with their own group scales and zeros, laid side by side along the
    input (``[N, 2K]``) and applied to the input twice (``[x, x]``): one kernel call, the same bytes
    as int8, and (torch 2.13) faster than the int8 kernel for large ``N``. One float32 row runs on
    ``matvec.c``'s q8 kernel over ``q`` itself (``q8``, ``q8_scales``)."""

    keeps_q4 = False  # the packed pair is not the weight: q itself is kept, as q8

    def __init__(self, q: Tensor, scale: Tensor, *, bias: Tensor | None = None, group: int = GROUP,
                 compute_dtype: torch.dtype = torch.bfloat16) -> None:
        u = q.to(torch.int32) + 128  # [N, K] in 0..255
        pair = torch.cat([u >> 4, u & 15], dim=1)  # [N, 2K]
        scales = torch.cat([16.0 * scale, scale], dim=1)  # [N, 2K/g]
        zeros = torch.cat([torch.zeros_like(scale), 8.0 * scale], dim=1)
        super().__init__(pair, scales, zeros, bias=bias, group=group, compute_dtype=compute_dtype)
        self.in_features = q.shape[1]
        if group == GROUP and self.in_features % GROUP == 0:  # one float32 row: matvec.c's q8 kernel
            _keep_blocks(self, q8=q.to(torch.int8), q8_scales=scale.float())

    def forward(self, x: Tensor) -> Tensor:
        y = _one_row(self, x)
        if y is not None:
            return y
        return super().forward(torch.cat([x, x], dim=-1))

    @torch.no_grad()
    def dequantize(self) -> Tensor:
        w = super().dequantize()  # [N, 2K]
        return w[:, : self.in_features] + w[:, self.in_features :]


class GroupInt8Linear(nn.Module):
    """``y = x @ W^T (+ b)`` with ``W[n, k] = q[n, k] * scale[n, k // g]``, ``q`` int8: one int8 kernel
    call per ``g``-wide column group, partial products summed in float32. ``x [*, K] -> [*, N]``."""

    def __init__(self, q: Tensor, scale: Tensor, *, bias: Tensor | None = None, group: int = GROUP,
                 compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.group, self.compute_dtype = group, compute_dtype
        groups = self.in_features // group
        self.register_buffer("weight_groups", q.reshape(-1, groups, group).transpose(0, 1).contiguous())  # [K/g, N, g]
        self.register_buffer("scales", scale.t().to(compute_dtype).contiguous())  # [K/g, N]
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        if group == GROUP:  # one float32 row: matvec.c's q8 kernel, float32 scales
            _keep_blocks(self, q8=q.to(torch.int8), q8_scales=scale.float())

    def forward(self, x: Tensor) -> Tensor:
        y = _one_row(self, x)
        if y is not None:
            return y
        flat = x.reshape(-1, self.in_features).to(self.compute_dtype)  # [M, K]
        parts = flat.unflatten(-1, (-1, self.group)).transpose(0, 1).contiguous()  # [K/g, M, g]
        y = torch.zeros(flat.shape[0], self.out_features, dtype=torch.float32)
        for part, w, s in zip(parts, self.weight_groups, self.scales):
            y += torch._weight_int8pack_mm(part, w, s)  # [M, N], summed in float32
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    @torch.no_grad()
    def dequantize(self) -> Tensor:
        """The weight ``[N, K]`` in float32."""
        w = self.weight_groups.float() * self.scales.float()[..., None]  # [K/g, N, g]
        return w.transpose(0, 1).reshape(self.out_features, self.in_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 groups of {self.group}, " \
               f"compute {str(self.compute_dtype).removeprefix('torch.')}"


def requantize_per_row(q: Tensor, scale: Tensor, group: int = GROUP) -> tuple[Tensor, Tensor]:
    """Group-wise int8 ``(q [N, K], scale [N, K/g])`` -> one scale per row ``(q' [N, K], s [N, 1])``
    (symmetric, ``s = max |w| / 127``): not exact — each weight moves by at most ``s / 2``."""
    w = q.float() * scale.repeat_interleave(group, dim=1)
    s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
    return torch.round(w / s).clamp(-127, 127).to(torch.int8), s


def gguf_linear(tensor: Any, *, rows: Tensor | None = None, bias: Tensor | None = None,
                compute_dtype: torch.dtype = torch.bfloat16, int8: str = "pair") -> nn.Module | None:
    """A linear layer over a GGUF matrix's own blocks (a :class:`~tatlas.io.gguf.GGUFTensor` of shape
    ``[out, in]``): :class:`Int4Linear` for ``Q4_0``/``Q4_1``, :class:`GroupInt8Linear` for ``Q8_0``/``Q5_0``,
    ``None`` for other types. ``rows``: an output-row order applied to the blocks (e.g. undoing
    llama.cpp's query/key permutation) — rows are independent, so this stays exact.
    ``int8``: how 8-bit types run — ``"pair"`` (:class:`Int4PairLinear`: exact, the fastest measured),
    ``"groups"`` (:class:`GroupInt8Linear`, one int8 call per 32 columns: exact, slow for wide inputs),
    ``"rows"`` (re-quantised to one scale per row, :func:`requantize_per_row`: one int8 call, not exact)."""
    kind, shape = tensor.type, tuple(tensor.shape)
    if kind in INT4_TYPES:
        q, scale, zero = q4_blocks(tensor.raw, kind, shape)
        if rows is not None:
            q, scale, zero = q[rows], scale[rows], zero[rows]
        return Int4Linear(q, scale, zero, bias=bias, compute_dtype=compute_dtype)
    if kind in INT8_TYPES:
        q, scale = q8_blocks(tensor.raw, kind, shape)
        if rows is not None:
            q, scale = q[rows], scale[rows]
        if int8 == "pair":
            return Int4PairLinear(q, scale, bias=bias, compute_dtype=compute_dtype)
        if int8 == "rows":
            q, scale = requantize_per_row(q, scale)
            return GroupInt8Linear(q, scale, bias=bias, group=q.shape[1], compute_dtype=compute_dtype)
        if int8 == "groups":
            return GroupInt8Linear(q, scale, bias=bias, compute_dtype=compute_dtype)
        raise ValueError(f"int8={int8!r}: expected 'pair', 'groups' or 'rows'")
    return None


def swap_modules_(model: nn.Module, new: dict[str, nn.Module]) -> nn.Module:
    """Replace, in place, each submodule named in ``new`` (dotted path) by its module there."""
    for path, module in new.items():
        parent_name, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
    return model

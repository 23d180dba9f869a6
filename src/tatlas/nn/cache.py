"""Key/value caches for autoregressive decoding.

Per attention layer:
- :class:`DynamicKVCache` grows by concatenation (eager decoding, unknown lengths);
- :class:`StaticKVCache` is preallocated ``[B, G, S_max, D]`` and written by position with
  ``update(k, v, input_pos)`` (fixed shapes: the path ``torch.compile`` likes, as in gpt-fast);
- :class:`CrossKVCache` holds cross-attention keys/values computed once per source (Whisper's audio).

Per model, :class:`DecoderCache` holds the layers' caches plus the bookkeeping shared by every layer:
which key slots hold real tokens (left-padded prompts leave padding slots) and the per-row
padding offset that turns slots into positions. Slot ``s`` of row ``b`` holds position
``s - pad[b]``. A query in slot ``q`` sees the keys in slots ``<= q`` that hold real tokens
(and always itself, so padding rows never see an empty set).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .memory import check_fits


class DynamicKVCache:
    """Concatenating cache: ``update(k [*, G, T, D], v, input_pos)`` -> all keys/values so far."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def update(self, k: Tensor, v: Tensor, input_pos: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        return self.k, self.v

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def reorder(self, index: Tensor, slots: int | None = None) -> None:
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)

    def repeat_rows(self, group: int, slots: int | None = None) -> DynamicKVCache:
        out = DynamicKVCache()
        if self.k is not None:
            out.k, out.v = self.k.repeat_interleave(group, dim=0), self.v.repeat_interleave(group, dim=0)
        return out


class StaticKVCache(torch.nn.Module):
    """Preallocated cache ``k [B, G, S_max, D]``, ``v [B, G, S_max, D_v]``; ``update`` writes slots
    ``input_pos [T]`` in place. (Multi-head latent attention caches its latent and rotary key here.)"""

    def __init__(
        self,
        *,
        batch: int,
        kv_heads: int,
        max_len: int,
        head_dim: int,
        v_dim: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (batch, kv_heads, max_len)
        self.register_buffer("k", torch.zeros(*shape, head_dim, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(*shape, v_dim or head_dim, dtype=dtype, device=device), persistent=False)

    def update(self, k: Tensor, v: Tensor, input_pos: Tensor) -> tuple[Tensor, Tensor]:
        if input_pos is None:
            raise ValueError("a static KV cache needs input_pos (the slots to write)")
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        if torch.compiler.is_compiling():  # fixed shapes: attend over every slot (masked)
            return self.k, self.v
        s = int(input_pos[-1]) + 1  # eager: only the slots up to the newest can be attended
        return self.k[:, :, :s], self.v[:, :, :s]

    def reorder(self, index: Tensor, slots: int | None = None) -> None:
        """Rows ``index [B]`` (beam search), of the first ``slots`` slots only if given (the rest hold
        nothing yet)."""
        if slots is None:
            self.k.copy_(self.k.index_select(0, index))
            self.v.copy_(self.v.index_select(0, index))
        else:
            self.k[:, :, :slots] = self.k[index, :, :slots]
            self.v[:, :, :slots] = self.v[index, :, :slots]

    def first_rows(self, rows: int) -> StaticKVCache:
        """A view of rows ``0..rows-1`` (same memory: ``update`` writes through)."""
        out = StaticKVCache.__new__(StaticKVCache)
        torch.nn.Module.__init__(out)
        out.register_buffer("k", self.k[:rows], persistent=False)
        out.register_buffer("v", self.v[:rows], persistent=False)
        return out

    def repeat_rows(self, group: int, slots: int | None = None) -> StaticKVCache:
        """A cache of ``group`` rows per row of this one, holding a copy of its first ``slots`` slots."""
        b, g, s, d = self.k.shape
        out = StaticKVCache(batch=b * group, kv_heads=g, max_len=s, head_dim=d, v_dim=self.v.shape[-1],
                            dtype=self.k.dtype, device=self.k.device)
        slots = s if slots is None else slots
        out.k[:, :, :slots] = self.k[:, :, :slots].repeat_interleave(group, dim=0)
        out.v[:, :, :slots] = self.v[:, :, :slots].repeat_interleave(group, dim=0)
        return out


class CrossKVCache:
    """Cross-attention keys/values ``[*, G, S, D]`` computed once from the source and reused. The
    keys may have fewer rows than the queries, ``B`` for ``B * g`` query rows whose ``g`` adjacent
    rows share a source (beams of one window): each source's keys/values are then stored once."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def filled(self) -> bool:
        return self.k is not None

    def store(self, k: Tensor, v: Tensor) -> None:
        # contiguous once, so that every decode step's batched matmuls over them need no copy
        self.k, self.v = k.contiguous(), v.contiguous()

    def reorder(self, index: Tensor, slots: int | None = None) -> None:
        """Rows ``index [B]``; keys shared by groups of rows (fewer rows than ``index``) stay: the
        rows of a group are reordered among themselves."""
        if self.k is not None and self.k.shape[0] == index.shape[0]:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)

    def shared(self) -> CrossKVCache:
        """A cache holding the same keys/values (no copy), e.g. for the rows of a repeated batch."""
        out = CrossKVCache()
        out.k, out.v = self.k, self.v
        return out


class DecoderCache:
    """The caches of every layer of one decoder, and the slot bookkeeping they share.

    ``layers[i]`` is layer ``i``'s self-attention cache; ``cross[i]`` its cross-attention cache
    (empty list for decoder-only models). ``key_valid [B, S_max]`` marks slots that hold real tokens,
    ``pad [B]`` the left padding of each row.
    """

    def __init__(
        self,
        *,
        batch: int,
        max_len: int,
        layers: int,
        kv_heads: int,
        head_dim: int,
        v_dim: int | None = None,
        static: bool = True,
        cross: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.batch, self.max_len, self.static = batch, max_len, static
        per_slot = kv_heads * (head_dim + (v_dim or head_dim)) * dtype.itemsize  # keys + values of one token
        check_fits(layers * batch * max_len * per_slot,
                   f"the key/value cache of {batch} rows x {max_len} tokens x {layers} layers", device)
        if static:
            self.layers = [
                StaticKVCache(batch=batch, kv_heads=kv_heads, max_len=max_len, head_dim=head_dim, v_dim=v_dim,
                              dtype=dtype, device=device)
                for _ in range(layers)
            ]
        else:
            self.layers = [DynamicKVCache() for _ in range(layers)]
        self.cross = [CrossKVCache() for _ in range(layers)] if cross else []
        self.key_valid = torch.ones(batch, max_len, dtype=torch.bool, device=device)
        self.pad = torch.zeros(batch, dtype=torch.long, device=device)

    def set_padding(self, attention_mask: Tensor) -> None:
        """Record a left-padded prompt: ``attention_mask [B, T0]`` is ``True`` on real tokens."""
        if attention_mask.shape[0] != self.batch or attention_mask.shape[1] > self.max_len:
            raise ValueError(
                f"attention_mask: expected [{self.batch}, <= {self.max_len}], got {list(attention_mask.shape)}"
            )
        mask = attention_mask.to(torch.bool)
        self.key_valid[:, : mask.shape[1]] = mask
        self.pad = (~mask).long().sum(dim=1)

    def positions(self, input_pos: Tensor) -> Tensor:
        """Token positions of slots ``input_pos [T]`` for every row: ``[B, T]``."""
        return (input_pos[None, :] - self.pad[:, None]).clamp(min=0)

    def plain_causal(self, input_pos: Tensor) -> bool:
        """Whether the queries in slots ``input_pos [T]`` see exactly the keys of a plain causal mask
        over the same ``T`` slots (:meth:`mask` without padding: a prompt from slot 0, no row left-padded),
        so that attention can take SDPA's ``is_causal`` path, which skips the masked half of the scores
        instead of reading a ``T x T`` mask (a 1,312-token prefill: 209 -> ~131 ms of attention). Not under
        ``torch.compile`` (fixed shapes there)."""
        t = input_pos.shape[0]
        if t < 2 or torch.compiler.is_compiling() or int(input_pos[0]) != 0 or int(input_pos[-1]) != t - 1:
            return False
        return bool(self.key_valid[:, :t].all())

    def mask_or_causal(self, input_pos: Tensor) -> tuple[Tensor | None, bool]:
        """Self-attention's ``(mask, causal)`` for queries in slots ``input_pos``: ``(None, True)``
        where :meth:`plain_causal` holds (SDPA's causal path), else ``(``:meth:`mask```, False)``."""
        return (None, True) if self.plain_causal(input_pos) else (self.mask(input_pos), False)

    def mask(self, input_pos: Tensor, *, window: int | None = None) -> Tensor:
        """Boolean attention mask ``[B, 1, T, S]`` for queries in slots ``input_pos [T]``.

        ``S`` is ``S_max`` for a static cache under ``torch.compile`` (fixed shapes), else the slots up
        to the newest query (keys beyond it can never be attended).
        ``window``: sliding-window attention (a query sees at most the last ``window`` keys).
        """
        s = self.max_len if self.static and torch.compiler.is_compiling() else int(input_pos[-1]) + 1
        k_slot = torch.arange(s, device=input_pos.device)
        q_slot = input_pos[:, None]
        allowed = k_slot[None, :] <= q_slot  # [T, S]
        if window is not None:
            allowed = allowed & (k_slot[None, :] > q_slot - window)
        allowed = allowed[None] & self.key_valid[:, None, :s]  # [B, T, S]
        allowed = allowed | (k_slot[None, :] == q_slot)[None]
        return allowed[:, None]

    def reorder(self, index: Tensor, slots: int | None = None) -> None:
        """Keep rows ``index [B]`` (beam search); the batch size stays the same. ``slots``: only the
        first ``slots`` self-attention slots hold anything yet."""
        for layer in [*self.layers, *self.cross]:
            layer.reorder(index, slots)
        self.key_valid = self.key_valid.index_select(0, index)
        self.pad = self.pad.index_select(0, index)

    # Continuous batching (``tatlas.generate.batching``): rows join and leave a running static cache.
    # Every row writes the same slot each step; a row's own left padding places its tokens.

    def _check_rows(self) -> None:
        if not self.static or self.cross:
            raise ValueError("joining and leaving rows needs a static self-attention cache without cross-attention")

    def put_row(self, row: int, source: DecoderCache, length: int, end: int) -> None:
        """Copy slots ``0..length-1`` of ``source`` (a one-row cache, prompt at slot 0, no padding)
        into slots ``end-length..end-1`` of ``row``, whose padding becomes ``end - length`` (so its
        tokens keep their positions ``0..length-1``)."""
        self._check_rows()
        if source.batch != 1 or not 0 < length <= end <= self.max_len:
            raise ValueError(f"put_row: expected a one-row source and 0 < length <= end <= {self.max_len}, got "
                             f"{source.batch} rows, length {length}, end {end}")
        start = end - length
        for mine, theirs in zip(self.layers, source.layers, strict=True):
            mine.k[row, :, start:end] = theirs.k[0, :, :length]
            mine.v[row, :, start:end] = theirs.v[0, :, :length]
        self.key_valid[row] = False
        self.key_valid[row, start:] = True
        self.pad[row] = start

    def move_row(self, src: int, dst: int) -> None:
        """Row ``src``'s slots, valid keys and padding copied to row ``dst`` (compacting the batch)."""
        self._check_rows()
        for layer in self.layers:
            layer.k[dst], layer.v[dst] = layer.k[src], layer.v[src]
        self.key_valid[dst], self.pad[dst] = self.key_valid[src], self.pad[src]

    def shift(self, offset: int, rows: int) -> None:
        """Move the slots of the first ``rows`` rows by ``offset`` (``< 0``: to the left, dropping
        the first ``-offset`` slots, which must be padding; ``> 0``: to the right, the freed slots
        becoming padding). Positions are unchanged (padding moves with the slots): cached keys are
        rotated by position, so moving slots needs no recomputation."""
        self._check_rows()
        if offset == 0:
            return
        if abs(offset) >= self.max_len:
            raise ValueError(f"shift: expected |offset| < {self.max_len}, got {offset}")
        cut = slice(None, rows)
        for layer in self.layers:
            for t in (layer.k, layer.v):
                t[cut] = torch.roll(t[cut], offset, dims=2)
        self.key_valid[cut] = torch.roll(self.key_valid[cut], offset, dims=1)
        if offset > 0:
            self.key_valid[cut, :offset] = False
        self.pad[cut] += offset

    def first_rows(self, rows: int) -> DecoderCache:
        """A cache over rows ``0..rows-1`` of this one, sharing its memory (decode only the rows in use)."""
        self._check_rows()
        out = object.__new__(DecoderCache)
        out.batch, out.max_len, out.static, out.cross = rows, self.max_len, True, []
        out.layers = [layer.first_rows(rows) for layer in self.layers]
        out.key_valid, out.pad = self.key_valid[:rows], self.pad[:rows]
        return out

    def repeat_rows(self, group: int, slots: int | None = None) -> DecoderCache:
        """A cache of ``group`` adjacent rows per row of this one (the beams or samples of an input
        whose prompt was run once), with a copy of the first ``slots`` self-attention slots and the
        same cross-attention keys/values, shared by the group's rows rather than copied."""
        out = object.__new__(DecoderCache)
        out.batch, out.max_len, out.static = self.batch * group, self.max_len, self.static
        out.layers = [layer.repeat_rows(group, slots) for layer in self.layers]
        out.cross = [c.shared() for c in self.cross]
        out.key_valid = self.key_valid.repeat_interleave(group, dim=0)
        out.pad = self.pad.repeat_interleave(group, dim=0)
        return out

"""Continuous batching (Yu et al. 2022, "Orca: A Distributed Serving System for Transformer-Based
Generative Models", §3.1 iteration-level scheduling): sequences join and leave a running batch
between decode steps instead of waiting for the whole batch to finish.

One preallocated static cache (:class:`~tatlas.nn.cache.DecoderCache`) holds ``rows`` sequences.
Every step writes the same slot of every row; a row's own left padding places its tokens, so a
newcomer's prompt, prefilled alone in a one-row cache, is copied to end at the current slot
(:meth:`~tatlas.nn.cache.DecoderCache.put_row`) and keeps positions ``0..L-1``. Rows in use are kept
first (a row that leaves is replaced by the last one), and each step decodes only those rows. When
the slots run out, every row moves left by the padding they all share
(:meth:`~tatlas.nn.cache.DecoderCache.shift`); a prompt longer than the current slot moves them right.

This is the model side only: which token each row takes next is the caller's choice (sampling,
stop rules), so that each sequence can have its own.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .loop import model_device


class ContinuousBatch:
    """Up to ``rows`` sequences decoded together in one static cache of ``max_len`` slots.

    ``join(key, prompt, max_new_tokens)`` prefills a newcomer and returns its next-token logits;
    ``step({key: token})`` writes each row's newest token and returns every row's next-token
    logits; ``leave(key)`` frees the row at once. A sequence needs ``len(prompt) + max_new_tokens - 1``
    slots (its last token is never written)."""

    def __init__(self, model: nn.Module, *, rows: int, max_len: int) -> None:
        if rows < 1 or max_len < 2:
            raise ValueError(f"ContinuousBatch: expected rows >= 1 and max_len >= 2, got {rows} and {max_len}")
        self.model, self.rows, self.max_len = model, rows, max_len
        self.device = model_device(model)
        self.cache = model.new_cache(rows, max_len, static=True)
        if self.cache.cross:
            raise ValueError("continuous batching takes decoder-only models (this one has cross-attention)")
        self.cur = 0  # the slot the next step writes
        self.keys: list[Hashable] = []  # row i holds sequence keys[i]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def free(self) -> int:
        return self.rows - len(self.keys)

    def fits(self, prompt_len: int, max_new_tokens: int) -> bool:
        return prompt_len + max_new_tokens - 1 <= self.max_len

    @torch.inference_mode()
    def join(self, key: Hashable, prompt: Sequence[int], max_new_tokens: int, **model_kwargs) -> Tensor:
        """Prefill ``prompt`` (``model_kwargs``: images …, prefill only) into a free row -> its
        next-token logits ``[V]``."""
        n = len(prompt)
        if not self.free:
            raise ValueError(f"ContinuousBatch.join: all {self.rows} rows are in use")
        if key in self.keys:
            raise ValueError(f"ContinuousBatch.join: {key!r} has already joined")
        if n == 0 or max_new_tokens < 1 or not self.fits(n, max_new_tokens):
            raise ValueError(f"prompt of {n} tokens + {max_new_tokens} new tokens: expected a non-empty prompt "
                             f"and at most {self.max_len + 1} tokens in all")
        alone = self.model.new_cache(1, n, static=True)
        tokens = torch.tensor([list(prompt)], dtype=torch.long, device=self.device)
        logits = self.model.prefill(tokens, alone, last_only=True, **model_kwargs)[0, -1]
        if not self.keys:
            self.cur = 0
        if self.cur < n:  # room to the left for the prompt: the running rows move right
            self.cache.shift(n - self.cur, len(self.keys))
            self.cur = n
        self.cache.put_row(len(self.keys), alone, n, self.cur)
        self.keys.append(key)
        return logits

    @torch.inference_mode()
    def step(self, tokens: Mapping[Hashable, int]) -> dict[Hashable, Tensor]:
        """Write each row's newest token (``tokens[key]``) at the current slot -> next-token logits
        ``[V]`` per key."""
        if not self.keys:
            return {}
        if set(tokens) != set(self.keys):
            raise ValueError(f"ContinuousBatch.step: expected a token for each of {len(self.keys)} rows, got "
                             f"{len(tokens)}")
        rows = len(self.keys)
        if self.cur == self.max_len:  # out of slots: drop the padding every row has
            common = int(self.cache.pad[:rows].min())
            if common == 0:
                raise ValueError("ContinuousBatch.step: a sequence outgrew the cache (more tokens than it joined with)")
            self.cache.shift(-common, rows)
            self.cur -= common
        column = torch.tensor([[tokens[k]] for k in self.keys], dtype=torch.long, device=self.device)  # [B, 1]
        logits = self.model.decode_step(column, self.cache.first_rows(rows),
                                        torch.tensor([self.cur], device=self.device))  # [B, V]
        self.cur += 1
        return dict(zip(self.keys, logits, strict=True))

    def leave(self, key: Hashable) -> None:
        """Free ``key``'s row now (its slot is reused by the next newcomer)."""
        row, last = self.keys.index(key), len(self.keys) - 1
        if row != last:
            self.cache.move_row(last, row)
            self.keys[row] = self.keys[last]
        self.keys.pop()

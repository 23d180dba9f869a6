"""Step-wise search strategies for decoding loops that own their model calls (Whisper's window
decoder, :mod:`tatlas.generate.whisper`): the loop computes next-token logits for every row,
a strategy writes the next token of each row into a preallocated token buffer and says which rows
the model's cache must be reordered to. (Here, beside the KV caches and the cached-decoder mixin,
so that decoders under ``models/`` can use them; ``generate/`` sits above ``models/``.)

- :class:`GreedySearch`: argmax, or one sample per row at a temperature (independent rows; with
  several rows per input, "best of n" samples);
- :class:`PatienceBeamSearch`: beam search that keeps ``round(beam_size * patience)`` finished
  hypotheses per input before stopping (Kasai et al. 2022, "Beam Decoding with Controlled
  Patience", arXiv:2204.05424; patience 1 is ordinary beam search). Each beam proposes its
  ``beam_size + 1`` most likely tokens; the best ``beam_size`` unfinished candidates go on, and
  candidates ending in ``eot`` that rank above the last kept one become finished hypotheses.
  The candidate selection is vectorised over every input; only newly finished hypotheses are
  handled one by one.

:func:`rank` picks the best of a group of finished sequences by summed log-probability divided
by the length, or by GNMT's length penalty ``((5 + length) / 6) ** alpha`` (Wu et al. 2016, §7).
Rows are ``groups * group_size`` (``[B * K]``), the rows of one input adjacent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Candidates = list[tuple[list[int], float]]  # (generated tokens without the end token, sum of log-probabilities)


def rank(candidates: Sequence[Candidates], length_penalty: float | None = None) -> list[int]:
    """Index of the best sequence in each group: the highest ``sum_logprob / penalty``, with
    ``penalty = length`` (``length_penalty=None``) or ``((5 + length) / 6) ** length_penalty``.
    A group of one needs no ranking (and an empty sequence no division)."""
    best = []
    for group in candidates:
        if len(group) == 1:
            best.append(0)
            continue
        scores = []
        for tokens, logprob in group:
            n = len(tokens)
            penalty = n if length_penalty is None else ((5 + n) / 6) ** length_penalty
            scores.append(logprob / penalty if penalty else float("-inf"))
        best.append(max(range(len(scores)), key=lambda i: (scores[i], -i)))  # first of equal scores
    return best


def _generated(row: list[int], begin: int, eot: int) -> list[int]:
    """``row[begin:]`` up to (not including) the first ``eot``."""
    out = row[begin:]
    return out[: out.index(eot)] if eot in out else out


class GreedySearch:
    """Greedy (``temperature == 0``) or sampled next tokens; a row that produced ``eot`` keeps
    producing it and stops adding log-probability."""

    def __init__(self, *, eot: int, temperature: float = 0.0, generator: torch.Generator | None = None,
                 generators: Sequence[torch.Generator] | None = None) -> None:
        """``generator``: one draw for all rows per step (None: torch's global generator);
        ``generators``: one per group of rows instead, so a group's samples do not depend on
        what else is in the batch."""
        self.eot, self.temperature, self.generator = eot, temperature, generator
        self.generators = list(generators) if generators is not None else None

    def reset(self, groups: int) -> None:
        pass

    def step(self, tokens: Tensor, cur: int, logits: Tensor, sum_logprobs: Tensor) -> tuple[Tensor | None, bool]:
        """Write ``tokens[:, cur]`` from ``logits [N, V]``; add the chosen tokens' log-probabilities
        to ``sum_logprobs [N]`` in place. Returns ``(None, every row ended)`` (rows never move)."""
        if self.temperature == 0:
            nxt = logits.argmax(dim=-1)
        else:
            probs = F.softmax(logits.float() / self.temperature, dim=-1)
            if self.generators is None:
                nxt = torch.multinomial(probs, 1, replacement=True, generator=self.generator).squeeze(-1)
            else:
                size = probs.shape[0] // len(self.generators)
                nxt = torch.cat([torch.multinomial(p, 1, replacement=True, generator=g).squeeze(-1)
                                 for p, g in zip(probs.split(size), self.generators, strict=True)])
        logprobs = F.log_softmax(logits.float(), dim=-1)
        running = tokens[:, cur - 1] != self.eot
        sum_logprobs += logprobs.gather(1, nxt[:, None])[:, 0] * running
        nxt = torch.where(running, nxt, self.eot)
        tokens[:, cur] = nxt
        return None, bool((nxt == self.eot).all())

    def finalize(self, tokens: Tensor, cur: int, sum_logprobs: Tensor, *, begin: int, groups: int) -> list[Candidates]:
        """Per group, its rows' generated tokens (from ``begin`` to the first ``eot``) and scores."""
        rows = tokens[:, :cur].tolist()
        scores = sum_logprobs.tolist()
        size = len(rows) // groups
        return [[(_generated(rows[g * size + j], begin, self.eot), scores[g * size + j]) for j in range(size)]
                for g in range(groups)]


class PatienceBeamSearch:
    """Beam search over ``groups * beam_size`` rows; see the module docstring."""

    def __init__(self, *, beam_size: int, eot: int, patience: float | None = None) -> None:
        self.beam_size, self.eot = beam_size, eot
        self.max_candidates = round(beam_size * (patience or 1.0))
        if self.max_candidates <= 0:
            raise ValueError(f"beam search: beam_size ({beam_size}) * patience ({patience}) must round to >= 1")
        self.finished: list[dict[tuple[int, ...], float]] = []
        self._first = True

    def reset(self, groups: int) -> None:
        """Start a search over ``groups`` inputs whose ``beam_size`` rows each hold the same prompt."""
        self.finished = [{} for _ in range(groups)]
        self._first = True

    def step(self, tokens: Tensor, cur: int, logits: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, bool]:
        """Extend the beams into ``tokens[:, cur]`` (rows reordered in place), update
        ``sum_logprobs`` in place; returns ``(source rows [N], every group has enough finished)``."""
        k, n = self.beam_size, tokens.shape[0]
        groups = n // k
        logprobs = F.log_softmax(logits.float(), dim=-1)
        top_lp, top_tok = logprobs.topk(k + 1, dim=-1)  # [N, K+1]
        scores = sum_logprobs[:, None] + top_lp
        if self._first:  # the beams of a group are still identical: candidates from the first only
            scores.view(groups, k, k + 1)[:, 1:] = float("-inf")
            self._first = False
        scores = scores.view(groups, k * (k + 1))
        order = scores.argsort(dim=-1, descending=True, stable=True)  # [G, K(K+1)]
        sorted_scores = scores.gather(1, order)
        sorted_tok = top_tok.view(groups, -1).gather(1, order)
        ended = sorted_tok == self.eot
        kept_before = (~ended).long().cumsum(dim=-1)  # unfinished candidates up to each position
        keep = ~ended & (kept_before <= k)  # exactly k per group (each beam offers >= k non-eot tokens)
        newly_finished = ended & (kept_before < k)  # ends ranked above the k-th kept candidate

        pick = order[keep].view(groups, k)  # candidate indices, best first
        source = (torch.arange(groups, device=tokens.device)[:, None] * k + pick // (k + 1)).reshape(-1)
        if bool(newly_finished.any()):
            self._add_finished(tokens, cur, order, newly_finished, sorted_scores, k)
        tokens[:] = tokens[source]
        tokens[:, cur] = sorted_tok[keep]
        sum_logprobs.copy_(sorted_scores[keep])
        done = all(len(f) >= self.max_candidates for f in self.finished)
        return source, done

    def _add_finished(self, tokens: Tensor, cur: int, order: Tensor, mask: Tensor, scores: Tensor, k: int) -> None:
        g_idx, pos = mask.nonzero(as_tuple=True)
        rows = (g_idx * k + order[g_idx, pos] // (k + 1)).tolist()
        values = scores[g_idx, pos].tolist()
        prefixes = tokens[rows, :cur].tolist()
        for g, prefix, value in zip(g_idx.tolist(), prefixes, values, strict=True):
            if len(self.finished[g]) < self.max_candidates:
                self.finished[g][(*prefix, self.eot)] = value

    def finalize(self, tokens: Tensor, cur: int, sum_logprobs: Tensor, *, begin: int, groups: int) -> list[Candidates]:
        """Per group: its finished hypotheses, topped up with the best unfinished beams when fewer
        than ``beam_size`` finished."""
        k = self.beam_size
        rows = tokens[:, :cur].tolist()
        scores = sum_logprobs.view(groups, k).cpu().numpy()
        out = []
        for g, finished in enumerate(self.finished):
            if len(finished) < k:
                for j in np.argsort(scores[g])[::-1].tolist():  # best first (as openai-whisper orders them)
                    finished[(*rows[g * k + j], self.eot)] = float(scores[g, j])
                    if len(finished) >= k:
                        break
            out.append([(_generated(list(seq), begin, self.eot), value) for seq, value in finished.items()])
        return out

"""Search strategies: how each decoding step turns next-token logits into tokens. One loop
(:func:`tatlas.generate.loop.search`) drives them all; a strategy writes the next token of every row
into the preallocated token buffer and says which rows the cache must be reordered to.

- :class:`Sampler`: argmax, or a sample at a temperature after top-k / top-p / min-p filtering
  (Holtzman et al. 2019; Nguyen et al. 2024); rows are independent, a row that produced a stop
  token is padded from then on. With several rows per input and a temperature, the rows are
  "best of n" samples.
- :class:`BeamSearch`: beam search with transformers' rules (``BeamSearchScorer``; the hypothesis
  bookkeeping of Wu et al. 2016, GNMT §7): the ``2K`` best candidates over the ``K`` beams, a
  candidate ending in a stop token among the first ``K`` becomes a finished hypothesis; an input is
  done once it holds ``K`` hypotheses that no running beam can beat.
- :class:`PatienceBeamSearch`: openai-whisper's beam search, which keeps ``round(K * patience)``
  finished hypotheses per input before stopping (Kasai et al. 2022, "Beam Decoding with
  Controlled Patience", arXiv:2204.05424; patience 1 is ordinary beam search). Each beam proposes
  its ``K + 1`` most likely tokens; the best ``K`` unfinished candidates go on, and candidates
  ending in ``eot`` that rank above the last kept one become finished hypotheses. Vectorised over
  every input; only newly finished hypotheses are handled one by one.

Every strategy offers ``reset(groups)``, ``step(tokens, cur, logits, sum_logprobs) -> (source rows
or None, done)`` and ``finalize(tokens, cur, sum_logprobs, begin=, groups=)``, which returns each
input's finished sequences as :data:`Candidates`. One ranking, :func:`rank`, picks the best of them:
the summed log-probability divided by a length penalty (:func:`power_penalty` for transformers'
rule, :func:`whisper_penalty` for openai-whisper's). Rows are ``groups * group_size`` (``[N]``),
the rows of one input adjacent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Candidates = list[tuple[list[int], float]]  # (generated tokens, sum of their log-probabilities)
Penalty = Callable[[int], float]  # sequence length -> the divisor of its summed log-probability


def power_penalty(alpha: float) -> Penalty:
    """transformers' ``length ** alpha`` (the length counts the stop token)."""
    return lambda n: n ** alpha


def whisper_penalty(alpha: float | None) -> Penalty:
    """openai-whisper's ``MaximumLikelihoodRanker``: the length itself (``alpha=None``), or GNMT's
    ``((5 + length) / 6) ** alpha`` (Wu et al. 2016, §7)."""
    return (lambda n: n) if alpha is None else (lambda n: ((5 + n) / 6) ** alpha)


def score(tokens: Sequence[int], logprob: float, penalty: Penalty) -> float:
    divisor = penalty(len(tokens))
    return logprob / divisor if divisor else float("-inf")


def rank(candidates: Sequence[Candidates], length_penalty: float | None | Penalty = None) -> list[int]:
    """Index of the best sequence of each group by :func:`score` (the first of equal scores);
    ``length_penalty`` is a :data:`Penalty`, or openai-whisper's ``alpha`` (:func:`whisper_penalty`).
    A group of one needs no ranking (and an empty sequence no division)."""
    penalty = length_penalty if callable(length_penalty) else whisper_penalty(length_penalty)
    best = []
    for group in candidates:
        scores = [score(t, lp, penalty) for t, lp in group] if len(group) > 1 else [0.0]
        best.append(max(range(len(scores)), key=lambda i: (scores[i], -i)))
    return best


def _generated(row: list[int], begin: int, eot: int) -> list[int]:
    """``row[begin:]`` up to (not including) the first ``eot``."""
    out = row[begin:]
    return out[: out.index(eot)] if eot in out else out


# Below this temperature, ``logits / T`` may overflow float32 (|logit| > 3.4e34 at 1e-4, far beyond any
# real logit above it): such a tiny temperature is decided once, not checked (with a sync) every step.
_SHIFT_BELOW = 1e-4


class Sampler:
    """Greedy (``temperature == 0``) or sampled next tokens, each row on its own.

    ``stop_tokens`` end a row; from then on it gets ``pad_token``. ``generator``: one draw for all
    rows per step (None: torch's global generator); ``generators``: one per group of rows instead,
    so that a group's samples do not depend on what else is in the batch. ``track_logprobs``: add
    each chosen token's log-probability (of the unscaled logits) to ``sum_logprobs``."""

    def __init__(self, *, stop_tokens: Sequence[int] = (), pad_token: int = 0, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                 generator: torch.Generator | None = None, generators: Sequence[torch.Generator] | None = None,
                 track_logprobs: bool = False) -> None:
        self.stop_tokens, self.pad_token = tuple(stop_tokens), pad_token
        self.temperature, self.top_k, self.top_p, self.min_p = temperature, top_k, top_p, min_p
        self.generator = generator
        self.generators = list(generators) if generators is not None else None
        self.track_logprobs = track_logprobs
        self.done: Tensor | None = None
        self.lengths: Tensor | None = None

    def reset(self, groups: int) -> None:
        self.done = self.lengths = None

    def _filtered(self, logits: Tensor) -> Tensor:
        """Temperature, then top-k, top-p and min-p: ``[N, V]`` float32, removed tokens ``-inf``."""
        from .sampling import min_p_filter, top_k_filter, top_p_filter

        scores = logits.float()
        if self.temperature < _SHIFT_BELOW:  # logits / T could overflow: shift first (the softmax is unchanged;
            # the best token keeps 0, the rest go towards -inf: greedy, as the limit is)
            scores = (scores - scores.amax(dim=-1, keepdim=True)) / max(self.temperature, 1e-30)  # float32 > 0
        else:
            scores = scores / self.temperature
        if self.top_k is not None:
            scores = top_k_filter(scores, self.top_k)
        if self.top_p is not None:
            scores = top_p_filter(scores, self.top_p)
        if self.min_p is not None:
            scores = min_p_filter(scores, self.min_p)
        return scores

    def choose(self, logits: Tensor) -> Tensor:
        """``logits [N, V]`` -> the next token of every row ``[N]``."""
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        probs = self._filtered(logits).softmax(dim=-1)
        if self.generators is None:
            return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
        size = probs.shape[0] // len(self.generators)
        return torch.cat([torch.multinomial(p, 1, generator=g).squeeze(-1)
                          for p, g in zip(probs.split(size), self.generators, strict=True)])

    def step(self, tokens: Tensor, cur: int, logits: Tensor, sum_logprobs: Tensor) -> tuple[None, bool]:
        """Write ``tokens[:, cur]`` from ``logits [N, V]``. Returns ``(None, every row stopped)``
        (rows never move)."""
        if self.done is None:
            self.done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
            self.lengths = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        nxt = self.choose(logits)
        running = ~self.done
        if self.track_logprobs:
            sum_logprobs += F.log_softmax(logits.float(), dim=-1).gather(1, nxt[:, None])[:, 0] * running
        nxt = torch.where(running, nxt, self.pad_token)
        tokens[:, cur] = nxt
        self.lengths += running.long()
        if self.stop_tokens:
            self.done = self.done | torch.isin(nxt, torch.tensor(self.stop_tokens, device=nxt.device))
        return None, bool(self.done.all())

    def finalize(self, tokens: Tensor, cur: int, sum_logprobs: Tensor, *, begin: int, groups: int) -> list[Candidates]:
        """Per group, its rows' generated tokens (from ``begin``, up to a stop token) and log-probabilities."""
        rows, scores = tokens[:, begin:cur].tolist(), sum_logprobs.tolist()
        size = len(rows) // groups
        stops = set(self.stop_tokens)
        out = []
        for g in range(groups):
            group = []
            for j in range(g * size, (g + 1) * size):
                row = rows[j][: int(self.lengths[j])] if self.lengths is not None else rows[j]
                group.append((row[:-1] if row and row[-1] in stops else row, scores[j]))
            out.append(group)
        return out


class _Hypotheses:
    """The ``k`` best finished hypotheses of one input, best first: ``(score, tokens, logprob)``."""

    def __init__(self, k: int, penalty: Penalty) -> None:
        self.k, self.penalty = k, penalty
        self.items: list[tuple[float, list[int], float]] = []

    def add(self, tokens: list[int], logprob: float) -> None:
        self.items.append((score(tokens, logprob, self.penalty), tokens, logprob))
        self.items.sort(key=lambda x: -x[0])
        del self.items[self.k:]

    def done(self, best_running: float, cur_len: int) -> bool:
        return len(self.items) >= self.k and self.items[-1][0] >= best_running / self.penalty(cur_len)


class BeamSearch:
    """Beam search with transformers' rules over ``groups * beam_size`` rows; see the module
    docstring. Hypotheses keep their stop token; scores are ``logprob / length ** length_penalty``."""

    def __init__(self, *, beam_size: int, stop_tokens: Sequence[int] = (), pad_token: int = 0,
                 length_penalty: float = 1.0) -> None:
        self.beam_size, self.stops, self.pad_token = beam_size, set(stop_tokens), pad_token
        self.penalty = power_penalty(length_penalty)
        self.hyps: list[_Hypotheses] = []
        self.finished: list[bool] = []
        self.begin = 0

    def reset(self, groups: int, begin: int = 0) -> None:
        """Start a search over ``groups`` inputs whose generated tokens start at column ``begin``."""
        self.hyps = [_Hypotheses(self.beam_size, self.penalty) for _ in range(groups)]
        self.finished = [False] * groups
        self.begin = begin

    def step(self, tokens: Tensor, cur: int, logits: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, bool]:
        k, device = self.beam_size, tokens.device
        b = len(self.hyps)
        beam_scores = sum_logprobs.view(b, k)
        if cur == self.begin:  # all beams start identical: expand only the first
            beam_scores[:, 1:] = float("-inf")
        logprobs = logits.float().log_softmax(dim=-1)  # [B*K, V]
        v = logprobs.shape[-1]
        top_scores, top_ids = (beam_scores.reshape(-1, 1) + logprobs).reshape(b, k * v).topk(2 * k, dim=-1)
        next_beam = torch.zeros(b, k, dtype=torch.long, device=device)
        next_token = torch.full((b, k), self.pad_token, dtype=torch.long, device=device)
        next_scores = torch.full((b, k), float("-inf"), device=device)
        for i in range(b):
            if self.finished[i]:
                next_beam[i] = torch.arange(k, device=device)
                continue
            n = 0
            for position, (value, idx) in enumerate(zip(top_scores[i].tolist(), top_ids[i].tolist(), strict=True)):
                beam, token = divmod(idx, v)
                if token in self.stops:
                    if position < k:
                        self.hyps[i].add(tokens[i * k + beam, self.begin:cur].tolist() + [token], value)
                    continue
                next_beam[i, n], next_token[i, n], next_scores[i, n] = beam, token, value
                n += 1
                if n == k:
                    break
            self.finished[i] = self.hyps[i].done(next_scores[i].max().item(), cur - self.begin + 1)
        source = (torch.arange(b, device=device)[:, None] * k + next_beam).reshape(-1)
        tokens[:] = tokens[source]
        tokens[:, cur] = next_token.reshape(-1)
        sum_logprobs.copy_(next_scores.reshape(-1))
        return source, all(self.finished)

    def finalize(self, tokens: Tensor, cur: int, sum_logprobs: Tensor, *, begin: int, groups: int) -> list[Candidates]:
        """Per input, its hypotheses best first (an unfinished input adds its running beams)."""
        k = self.beam_size
        scores = sum_logprobs.view(groups, k)
        for i in range(groups):
            if not self.finished[i]:
                for j in range(k):
                    if scores[i, j] > float("-inf"):
                        self.hyps[i].add(tokens[i * k + j, begin:cur].tolist(), scores[i, j].item())
        return [[(t, logprob) for _, t, logprob in h.items] for h in self.hyps]


class PatienceBeamSearch:
    """Beam search over ``groups * beam_size`` rows with openai-whisper's rules; see the module
    docstring."""

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

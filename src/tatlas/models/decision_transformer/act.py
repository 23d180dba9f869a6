"""Acting with a Decision Transformer (Chen et al. 2021, §3, "Evaluation" in Algorithm 1): given the
target return ``R̂_1`` the agent is asked for, predict ``a_t`` from the context ending at ``s_t``,
then decrease the return-to-go by the reward received: ``R̂_{t+1} = R̂_t - r_t``.

Two ways to compute the same action, for ``B`` environments stepped in lockstep:

- **recompute** (the paper's ``get_action``): every step re-encodes the last ``K`` timesteps
  (``3K - 1`` tokens: the current action is unknown, and causality makes a placeholder useless).
- **cached**: each step appends its new tokens ``(a_{t-1}, R̂_t, s_t)`` to a KV cache of ``3K``
  slots: three tokens per step instead of ``3K``. Within the first ``K`` steps the context is exactly
  the recompute one. When the window is full, the cache is refilled from the last ``keep``
  timesteps (default ``K // 2``), so the context then spans ``keep..K`` timesteps rather than
  always ``K``; amortised, a step still costs O(1) new tokens. A context that starts mid-episode
  is what every training window's prefix looks like, so this stays in the training distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import DecisionTransformer


@dataclass(frozen=True, kw_only=True)
class ActOptions:
    """``cached``: append tokens to a KV cache (else recompute the window every step); ``context``:
    act from this many timesteps K (default: the model's own; Hugging Face configs do not record the
    K a model was trained with); ``keep``: timesteps kept when a full cache is refilled (1..K;
    default K // 2); ``sample``: discrete
    actions drawn from the softmax with ``seed``, as in the paper's Atari evaluation (``False``:
    argmax). Sampling is what lets a low target be followed: under epsilon-noisy data the argmax is
    the expert's action at every noise level, so only the distribution carries the quality asked for."""

    cached: bool = True
    context: int | None = None
    keep: int | None = None
    sample: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.context is not None and self.context < 1:
            raise ValueError(f"ActOptions.context: expected at least 1 timestep, got {self.context}")
        if self.keep is not None and self.keep < 1:
            raise ValueError(f"ActOptions.keep: expected a positive number of timesteps, got {self.keep}")


class ReturnConditionedPolicy:
    """The agent of Algorithm 1 over ``B`` environments in lockstep.

    ``target_returns``: a number or ``[B]``, in environment units. Per step: :meth:`act` with the
    states ``[B, S]`` -> actions (``[B, A]`` in [-1, 1] for ``tanh``; indices ``[B]`` for discrete),
    then :meth:`observe` with the rewards ``[B]``. At most ``max_ep_len`` steps."""

    def __init__(self, model: DecisionTransformer, target_returns: float | Tensor, *, batch: int = 1,
                 options: ActOptions | None = None) -> None:
        self.model, self.options = model, options or ActOptions()
        c = model.config
        self.context = k = self.options.context or c.context
        keep = self.options.keep if self.options.keep is not None else max(1, k // 2)
        if keep > k:
            raise ValueError(f"ActOptions.keep: expected at most the context ({k} timesteps), got {keep}")
        self.keep = keep
        param = model.embed_state.weight
        self.device, self.dtype = param.device, param.dtype
        targets = torch.as_tensor(target_returns, dtype=torch.float32).flatten()
        if targets.numel() == 1:
            targets = targets.expand(batch)
        if targets.numel() != batch:
            raise ValueError(f"target_returns: expected a number or {batch} values (batch {batch}), got {targets.numel()}")
        self.batch, length = batch, c.max_ep_len
        self.returns = torch.zeros(batch, length, 1, dtype=self.dtype, device=self.device)
        self.states = torch.zeros(batch, length, c.state_dim, dtype=self.dtype, device=self.device)
        self.actions = torch.zeros(batch, length, c.act_dim, dtype=self.dtype, device=self.device)
        self.rtg = targets.to(self.device, self.dtype).clone()  # [B]
        self.t = 0  # the step whose action comes next
        self.start = 0  # first timestep of the cached context
        self.cache = model.new_cache(batch, 3 * k) if self.options.cached else None
        self.gen = None
        if self.options.sample:
            self.gen = torch.Generator(self.device)
            self.gen.manual_seed(self.options.seed)

    @property
    def context_start(self) -> int:
        """The first timestep the next action attends to (cached: where the cache was last refilled)."""
        k = self.context
        if self.cache is None:
            return max(0, self.t - k + 1)
        return self.start if self.t - self.start + 1 <= k else self.t - self.keep + 1

    def _tokens(self, lo: int, hi: int) -> Tensor:
        """Tokens of timesteps ``lo..hi-1`` without the last action: ``[B, 3 (hi - lo) - 1, C]``."""
        time = torch.arange(lo, hi, device=self.device).expand(self.batch, -1)  # [B, T]
        tokens = self.model.interleave(self.returns[:, lo:hi], self.states[:, lo:hi], self.actions[:, lo:hi], time)
        return tokens[:, :-1]  # [B, 3T - 1, C]

    @torch.inference_mode()
    def act(self, states: Tensor) -> Tensor:
        """``states [B, S]`` (environment units) at step ``t`` -> the actions to take."""
        m, c, t = self.model, self.model.config, self.t
        states = torch.as_tensor(states)
        if tuple(states.shape) != (self.batch, c.state_dim):
            raise ValueError(f"states: expected [{self.batch}, {c.state_dim}] (batch, state_dim), got "
                             f"{list(states.shape)}")
        if t >= c.max_ep_len:
            raise ValueError(f"step {t} is beyond the model's timestep embedding (max_ep_len {c.max_ep_len})")
        self.states[:, t] = states.to(self.device, self.dtype)
        self.returns[:, t, 0] = self.rtg
        lo = self.context_start
        if self.cache is None:
            h = m.decode(self._tokens(lo, t + 1))[:, -1]
        elif t == 0 or lo != self.start:  # (re)fill: the context's tokens from slot 0
            self.start = lo
            tokens = self._tokens(lo, t + 1)
            h = m.decode(tokens, cache=self.cache, input_pos=torch.arange(tokens.shape[1], device=self.device))[:, -1]
        else:  # append a_{t-1}, R̂_t, s_t
            tokens = self._tokens(t - 1, t + 1)[:, 2:]  # [B, 3, C]
            first = 3 * (t - self.start) - 1
            h = m.decode(tokens, cache=self.cache, input_pos=torch.arange(first, first + 3, device=self.device))[:, -1]
        out = m.predict_actions(h)  # [B, A]
        if c.discrete:
            if self.gen is not None:
                index = torch.multinomial(out.float().softmax(-1), 1, generator=self.gen)[:, 0]
            else:
                index = out.argmax(-1)
            self.actions[:, t] = F.one_hot(index, c.act_dim).to(self.dtype)
            return index
        self.actions[:, t] = out
        return out

    def observe(self, rewards: Tensor | float) -> None:
        """The rewards ``[B]`` of the actions just taken: ``R̂_{t+1} = R̂_t - r_t``; moves to step ``t + 1``."""
        self.rtg = self.rtg - torch.as_tensor(rewards, dtype=self.dtype, device=self.device)
        self.t += 1

"""Decision Transformer (Chen et al. 2021, "Decision Transformer: Reinforcement Learning via Sequence
Modeling"): offline RL as sequence modelling with a GPT over returns-to-go, states and actions.

§3 of the paper (Figure 1, Algorithm 1), top to bottom:

1. A trajectory is the sequence ``(R̂_1, s_1, a_1, R̂_2, s_2, a_2, ...)`` where ``R̂_t = Σ_{t'≥t} r_t'``
   is the return-to-go: the return the agent is *asked* to collect from step ``t`` on.
2. Each modality has its own linear embedding; a learned embedding of the episode timestep (not of
   the token's place in the sequence) is added to all three tokens of a step, and the interleaved
   ``3K`` tokens are layer-normalised.
3. A GPT-2 decoder (pre-norm blocks of causal attention and a ReLU MLP, final LayerNorm).
4. The action ``a_t`` is predicted from the output at the state token ``s_t`` (tanh for continuous
   actions in [-1, 1], logits for discrete ones); the outputs at action tokens give Hugging Face's
   auxiliary next-state and next-return heads (the paper trains on actions only).

Inputs are in environment units: the model normalises states with its ``state_mean``/``state_std``
buffers and divides returns-to-go by ``return_scale`` (the paper's Appendix A: states normalised by
dataset statistics, returns scaled by 1000 for MuJoCo), so a checkpoint carries what it needs to act.
Hugging Face's model does neither (identity buffers after conversion), and adds its GPT-2 position
embedding at position 0 to every token: one constant vector, folded into ``embed_norm.bias``.

Acting (:mod:`.act`) appends each step's new tokens to a KV cache instead of recomputing the
context: :meth:`DecisionTransformer.new_cache`, the per-kind token embeddings and :meth:`decode`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import DecoderCache, LayerNorm, classic_block
from ..gpt2 import init_gpt2_
from .config import DecisionTransformerConfig

_INT = (torch.long, torch.int32, torch.int64, torch.int16, torch.uint8)


class DecisionOutput(NamedTuple):
    """Predictions for each of the ``T`` timesteps: ``action_preds [B, T, A]`` (from the state
    tokens: actions in [-1, 1] for ``tanh``, logits for ``discrete``), ``state_preds [B, T, S]`` and
    ``return_preds [B, T, 1]`` (from the action tokens: the next state and return-to-go, both in the
    model's normalised units)."""

    action_preds: Tensor
    state_preds: Tensor
    return_preds: Tensor


class DecisionTransformer(nn.Module):
    def __init__(self, config: DecisionTransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed_timestep = nn.Embedding(c.max_ep_len, c.dim)
        self.embed_return = nn.Linear(1, c.dim)
        self.embed_state = nn.Linear(c.state_dim, c.dim)
        self.embed_action = nn.Linear(c.act_dim, c.dim)
        self.embed_norm = LayerNorm(c.dim, eps=1e-5)
        self.layers = nn.ModuleList(
            classic_block(dim=c.dim, heads=c.heads, mlp_hidden=c.mlp_width, act=c.act, fused_qkv=True,
                          norm=partial(LayerNorm, eps=c.norm_eps))
            for _ in range(c.layers)
        )
        self.norm = LayerNorm(c.dim, eps=c.norm_eps)
        self.predict_action = nn.Linear(c.dim, c.act_dim)
        self.predict_state = nn.Linear(c.dim, c.state_dim)
        self.predict_return = nn.Linear(c.dim, 1)
        # input normalisation, set from the training data (identity for a converted HF model)
        self.register_buffer("state_mean", torch.zeros(c.state_dim))
        self.register_buffer("state_std", torch.ones(c.state_dim))
        self.register_buffer("return_scale", torch.ones(1))
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2: N(0, 0.02), the residual-branch outputs scaled by 1/sqrt(2 * layers)."""
        init_gpt2_(self, self.layers, self.config.layers)

    @torch.no_grad()
    def set_normalisation(self, state_mean: Tensor, state_std: Tensor, return_scale: float | Tensor) -> None:
        """Install the data's statistics: ``state_mean [S]``, ``state_std [S]`` (> 0), ``return_scale`` (> 0)."""
        s = self.config.state_dim
        mean, std = torch.as_tensor(state_mean).float(), torch.as_tensor(state_std).float()
        if mean.shape != (s,) or std.shape != (s,):
            raise ValueError(f"normalisation: expected state_mean and state_std of shape [{s}], got "
                             f"{list(mean.shape)} and {list(std.shape)}")
        scale = torch.as_tensor(return_scale, dtype=torch.float32).reshape(1)
        if not (std > 0).all() or not (scale > 0).all():
            raise ValueError("normalisation: state_std and return_scale must be positive")
        self.state_mean.copy_(mean)
        self.state_std.copy_(std)
        self.return_scale.copy_(scale)

    # ------------------------------------------------------------------ checks

    def _check_time(self, timesteps: Tensor, lead: tuple[int, ...]) -> None:
        if timesteps.dtype not in _INT or tuple(timesteps.shape) != lead:
            raise ValueError(f"timesteps: expected integers of shape {list(lead)}, got {timesteps.dtype} "
                             f"{list(timesteps.shape)}")
        if not torch.compiler.is_compiling() and timesteps.numel():
            lo, hi = int(timesteps.min()), int(timesteps.max())
            if lo < 0 or hi >= self.config.max_ep_len:
                raise ValueError(f"timesteps: expected values in [0, {self.config.max_ep_len - 1}] (max_ep_len "
                                 f"{self.config.max_ep_len}), got values in [{lo}, {hi}]")

    def _check_states(self, states: Tensor) -> None:
        s = self.config.state_dim
        if states.dim() != 3 or states.shape[-1] != s or not states.is_floating_point():
            raise ValueError(f"states: expected a float tensor [B, T, {s}] (state_dim {s}), got {states.dtype} "
                             f"{list(states.shape)}")

    def _actions(self, actions: Tensor, lead: tuple[int, ...]) -> Tensor:
        """Actions ``[B, T, A]`` as the embedding takes them; discrete actions may be given as
        indices ``[B, T]`` (one-hot encoded here)."""
        c = self.config
        if c.discrete and actions.dtype in _INT:
            if tuple(actions.shape) != lead:
                raise ValueError(f"actions: expected action indices {list(lead)} or one-hot [B, T, {c.act_dim}], "
                                 f"got {list(actions.shape)}")
            if not torch.compiler.is_compiling() and actions.numel():
                lo, hi = int(actions.min()), int(actions.max())
                if lo < 0 or hi >= c.act_dim:
                    raise ValueError(f"actions: expected indices in [0, {c.act_dim - 1}] ({c.act_dim} discrete "
                                     f"actions), got values in [{lo}, {hi}]")
            return F.one_hot(actions.long(), c.act_dim).to(self.embed_action.weight.dtype)
        if tuple(actions.shape) != (*lead, c.act_dim) or not actions.is_floating_point():
            kind = f"one-hot [B, T, {c.act_dim}] or indices [B, T]" if c.discrete else f"[B, T, {c.act_dim}]"
            raise ValueError(f"actions: expected {kind} (act_dim {c.act_dim}) for T = {lead[1]}, got "
                             f"{actions.dtype} {list(actions.shape)}")
        return actions

    def _returns(self, returns_to_go: Tensor, lead: tuple[int, ...]) -> Tensor:
        if tuple(returns_to_go.shape) == lead:
            returns_to_go = returns_to_go[..., None]
        if tuple(returns_to_go.shape) != (*lead, 1) or not returns_to_go.is_floating_point():
            raise ValueError(f"returns_to_go: expected a float tensor [B, T, 1] or [B, T] with [B, T] = "
                             f"{list(lead)}, got {returns_to_go.dtype} {list(returns_to_go.shape)}")
        return returns_to_go

    # ------------------------------------------------------------------ tokens (§3, Figure 1)

    def return_tokens(self, returns_to_go: Tensor, timesteps: Tensor, time: Tensor | None = None) -> Tensor:
        """``returns_to_go [B, T, 1]`` (environment units), ``timesteps [B, T]`` -> tokens ``[B, T, C]``.
        ``time``: the timestep embeddings ``[B, T, C]``, when already computed."""
        time = self.embed_timestep(timesteps) if time is None else time
        return self.embed_norm(self.embed_return(returns_to_go / self.return_scale) + time)

    def state_tokens(self, states: Tensor, timesteps: Tensor, time: Tensor | None = None) -> Tensor:
        """``states [B, T, S]`` (environment units), ``timesteps [B, T]`` -> tokens ``[B, T, C]``."""
        time = self.embed_timestep(timesteps) if time is None else time
        return self.embed_norm(self.embed_state((states - self.state_mean) / self.state_std) + time)

    def action_tokens(self, actions: Tensor, timesteps: Tensor, time: Tensor | None = None) -> Tensor:
        """``actions [B, T, A]`` (in [-1, 1], or one-hot), ``timesteps [B, T]`` -> tokens ``[B, T, C]``."""
        time = self.embed_timestep(timesteps) if time is None else time
        return self.embed_norm(self.embed_action(actions) + time)

    def interleave(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor) -> Tensor:
        """The token sequence ``R̂_1, s_1, a_1, R̂_2, ...`` ``[B, 3T, C]`` of model-ready inputs
        (``returns_to_go [B, T, 1]``, ``states [B, T, S]``, ``actions [B, T, A]``, ``timesteps [B, T]``)."""
        time = self.embed_timestep(timesteps)  # [B, T, C]: the only position information
        r = self.return_tokens(returns_to_go, timesteps, time)
        s = self.state_tokens(states, timesteps, time)
        a = self.action_tokens(actions, timesteps, time)
        return torch.stack((r, s, a), dim=2).flatten(1, 2)  # [B, T, 3, C] -> [B, 3T, C]

    def predict_actions(self, hidden: Tensor) -> Tensor:
        """Outputs at state tokens ``[*, C]`` -> actions ``[*, A]`` (tanh / linear) or logits (discrete)."""
        a = self.predict_action(hidden)
        return torch.tanh(a) if self.config.action_head == "tanh" else a

    # ------------------------------------------------------------------ decoder

    def new_cache(
        self, batch: int, max_len: int | None = None, *, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> DecoderCache:
        """A static KV cache of ``max_len`` token slots (default ``3 * context``: a full window)."""
        c = self.config
        w = self.embed_state.weight
        return DecoderCache(batch=batch, max_len=max_len or c.max_tokens, layers=c.layers, kv_heads=c.heads,
                            head_dim=c.head_dim, static=True, dtype=dtype or w.dtype, device=device or w.device)

    def decode(
        self, tokens: Tensor, *, mask: Tensor | None = None, cache: DecoderCache | None = None,
        input_pos: Tensor | None = None,
    ) -> Tensor:
        """Embedded tokens ``[B, N, C]`` -> final-norm outputs ``[B, N, C]``, attending causally.

        Without a cache: ``mask [B, 1, N, N]`` (boolean, ``True`` = may attend) replaces the causal
        mask when given. With a cache: the tokens go to slots ``input_pos [N]`` and attend to every
        cached slot before them."""
        if cache is None:
            causal, cache_layers = mask is None, [None] * len(self.layers)
        else:
            if input_pos is None:
                raise ValueError("decoding with a cache needs input_pos (the slots of these tokens)")
            (mask, causal), cache_layers = cache.mask_or_causal(input_pos), cache.layers
        x = tokens
        for layer, layer_cache in zip(self.layers, cache_layers, strict=True):
            x = layer(x, mask=mask, causal=causal, cache=layer_cache, input_pos=input_pos)
        return self.norm(x)

    def forward(
        self, states: Tensor, actions: Tensor, returns_to_go: Tensor, timesteps: Tensor, *,
        attention_mask: Tensor | None = None,
    ) -> DecisionOutput:
        """The training-time pass over whole windows (§3, Algorithm 1).

        ``states [B, T, S]``, ``actions [B, T, A]`` (discrete: ``[B, T]`` indices or one-hot),
        ``returns_to_go [B, T, 1]`` (or ``[B, T]``), ``timesteps [B, T]`` in ``[0, max_ep_len)``;
        ``attention_mask [B, T]``: ``True``/1 on real timesteps (padding is never attended).
        Returns :class:`DecisionOutput`. The action at ``t`` is predicted before ``a_t`` is seen, so
        the last action may be a placeholder."""
        self._check_states(states)
        lead = tuple(states.shape[:2])
        actions = self._actions(actions, lead)
        returns_to_go = self._returns(returns_to_go, lead)
        self._check_time(timesteps, lead)
        t = lead[1]
        x = self.interleave(returns_to_go, states, actions, timesteps)  # [B, 3T, C]
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != lead:
                raise ValueError(f"attention_mask: expected [B, T] = {list(lead)}, got {list(attention_mask.shape)}")
            valid = attention_mask.bool().repeat_interleave(3, dim=1)  # [B, 3T]
            n = torch.arange(3 * t, device=x.device)
            allowed = (n[None, :] <= n[:, None])[None] & valid[:, None, :]  # [B, 3T, 3T]
            mask = (allowed | torch.eye(3 * t, dtype=torch.bool, device=x.device))[:, None]  # padding sees itself
        h = self.decode(x, mask=mask).unflatten(1, (t, 3))  # [B, T, 3, C]
        return DecisionOutput(
            action_preds=self.predict_actions(h[:, :, 1]),  # a_t from s_t
            state_preds=self.predict_state(h[:, :, 2]),  # s_{t+1} from a_t
            return_preds=self.predict_return(h[:, :, 2]),  # R̂_{t+1} from a_t
        )

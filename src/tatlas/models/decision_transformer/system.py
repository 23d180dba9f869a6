"""The ``decision_transformer`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import torch

from ..spec import System
from .config import PRESETS, DecisionTransformerConfig
from .convert import from_hf
from .model import DecisionTransformer
from .task import train_task


def _sample(model: DecisionTransformer, gen: torch.Generator) -> dict:
    c = model.config
    b, t = 2, 5
    device = model.embed_state.weight.device
    if c.discrete:
        actions = torch.randint(0, c.act_dim, (b, t), generator=gen)
    else:
        actions = torch.rand(b, t, c.act_dim, generator=gen) * 2 - 1
    return {
        "states": torch.randn(b, t, c.state_dim, generator=gen).to(device),
        "actions": actions.to(device),
        "returns_to_go": (torch.rand(b, t, 1, generator=gen) * 10).to(device),
        "timesteps": (torch.arange(t) + torch.randint(0, 10, (b, 1), generator=gen)).to(device),
    }


SYSTEM = System(
    name="decision_transformer",
    summary="Decision Transformer: offline RL as return-conditioned sequence modelling (GPT over R, s, a)",
    config_cls=DecisionTransformerConfig,
    model_cls=DecisionTransformer,
    presets=PRESETS,
    sample_input=_sample,
    hf_model_types={"decision_transformer": from_hf},
    train_task=train_task,
    diagram=(
        "returns-to-go R[T,1], states s[T,S], actions a[T,A], timesteps t[T]\n"
        "  -> linear embeddings per modality + timestep embedding -> interleave R1 s1 a1 R2 s2 a2 ... [3T, C]\n"
        "  -> LayerNorm -> [ LayerNorm -> causal MHA (fused qkv, KV cache) -> + -> LayerNorm -> MLP (ReLU) -> + ] x layers\n"
        "  -> LayerNorm -> at s_t: action head (tanh | logits) -> a_t; at a_t: next state, next return\n"
        "  acting: target return R1, then R(t+1) = R(t) - r(t); 3 new tokens per step into the cache"
    ),
    idea=(
        'Offline reinforcement learning as sequence modelling: lay a trajectory out as (return-to-go, state, '
        'action) tokens and train a causal transformer to predict each action from what came before. No value '
        'function, no policy gradient: at test time you ask for a return by writing it in the first token, and '
        'the model acts like the trajectories in the data that reached about that return.'
    ),
    paper='Chen et al. 2021, Decision Transformer: Reinforcement Learning via Sequence Modeling (NeurIPS 2021)',
    question='Where does the desired return enter the model, and how is it updated as the episode goes on?',
    highlight=('embed_return', 'embed_state', 'embed_action', 'predict_action'),
)

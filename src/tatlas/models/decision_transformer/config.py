"""Configuration of the Decision Transformer (Chen et al. 2021, "Decision Transformer:
Reinforcement Learning via Sequence Modeling", §3 "Method" and Appendix A "Experimental Details",
Table 8 for the OpenAI Gym hyperparameters)."""

from __future__ import annotations

from dataclasses import dataclass

ACTION_HEADS = ("tanh", "linear", "discrete")


@dataclass(frozen=True, kw_only=True)
class DecisionTransformerConfig:
    """A GPT over ``(R̂_t, s_t, a_t)`` triples of ``context`` timesteps (K, 3K tokens).

    - ``state_dim`` (S) and ``act_dim`` (A): the sizes of a state vector and of an action vector
      (for ``action_head="discrete"``, A is the number of actions; actions enter one-hot).
    - ``action_head``: ``"tanh"``, continuous actions in [-1, 1] (the paper's Gym setting);
      ``"linear"``, unbounded continuous actions; ``"discrete"``, logits over A actions (Atari).
    - ``context``: K, the timesteps the model is trained on and acts from (20 for Gym).
    - ``max_ep_len``: the rows of the timestep embedding; timesteps must be below it.
    - ``dim``, ``layers``, ``heads``, ``mlp_hidden`` (default 4 * dim), ``act``: the GPT-2 decoder.
    """

    state_dim: int
    act_dim: int
    action_head: str = "tanh"
    context: int = 20
    max_ep_len: int = 1000
    dim: int = 128
    layers: int = 3
    heads: int = 1
    mlp_hidden: int | None = None
    act: str = "relu"
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("state_dim", "act_dim", "context", "max_ep_len", "dim", "layers", "heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DecisionTransformerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"DecisionTransformerConfig: dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.action_head not in ACTION_HEADS:
            raise ValueError(f"DecisionTransformerConfig.action_head: expected one of {ACTION_HEADS}, "
                             f"got {self.action_head!r}")
        if self.action_head == "discrete" and self.act_dim < 2:
            raise ValueError(f"DecisionTransformerConfig.act_dim: a discrete action space needs >= 2 actions, "
                             f"got {self.act_dim}")
        if self.mlp_hidden is not None and self.mlp_hidden <= 0:
            raise ValueError(f"DecisionTransformerConfig.mlp_hidden must be positive or None, got {self.mlp_hidden}")

    @property
    def discrete(self) -> bool:
        return self.action_head == "discrete"

    def misfits(self, *, state_dim: int, discrete: bool, act_dim: int, steps: int, states: str = "states") -> list[str]:
        """What keeps a model of this config from acting on data or in an environment of these sizes
        (``act_dim``: action dims, or the number of actions when ``discrete``; ``steps``: the
        longest episode; ``states``: what the data calls them); empty when it fits."""
        problems = []
        if state_dim != self.state_dim:
            problems.append(f"{states} have {state_dim} dims, the model's state_dim is {self.state_dim}")
        if discrete != self.discrete:
            problems.append(f"actions are {'discrete' if discrete else 'continuous'}, the model's action_head "
                            f"is {self.action_head!r}")
        elif act_dim != self.act_dim:
            problems.append(f"actions have {act_dim} {'choices' if discrete else 'dims'}, the model's act_dim "
                            f"is {self.act_dim}")
        if steps > self.max_ep_len:
            problems.append(f"episodes last up to {steps} steps, the model's max_ep_len is {self.max_ep_len}")
        return problems

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def mlp_width(self) -> int:
        return self.mlp_hidden or 4 * self.dim

    @property
    def max_tokens(self) -> int:
        """Tokens of a full context: ``3 * context`` (return, state, action per timestep)."""
        return 3 * self.context


_GYM = dict(dim=128, layers=3, heads=1, act="relu", max_ep_len=1000, action_head="tanh")

# Table 8 of the paper (OpenAI Gym): 3 layers, 1 head, width 128, ReLU, K = 20 (5 for Reacher), with
# the D4RL MuJoCo state and action sizes; the Hugging Face hub checkpoints
# (edbeeching/decision-transformer-gym-<env>-<quality>) have these shapes. ``tiny`` is shaped like
# gymnasium's Pendulum-v1 and ``tiny-discrete`` like CartPole-v1 (what the demo and `tatlas train` use).
PRESETS: dict[str, DecisionTransformerConfig] = {
    "tiny": DecisionTransformerConfig(state_dim=3, act_dim=1, action_head="tanh", context=20, max_ep_len=1000,
                                      dim=64, layers=2, heads=4),
    "tiny-discrete": DecisionTransformerConfig(state_dim=4, act_dim=2, action_head="discrete", context=20,
                                               max_ep_len=1000, dim=64, layers=2, heads=4),
    "gym-hopper": DecisionTransformerConfig(state_dim=11, act_dim=3, context=20, **_GYM),
    "gym-halfcheetah": DecisionTransformerConfig(state_dim=17, act_dim=6, context=20, **_GYM),
    "gym-walker2d": DecisionTransformerConfig(state_dim=17, act_dim=6, context=20, **_GYM),
    "gym-reacher": DecisionTransformerConfig(state_dim=11, act_dim=2, context=5, **_GYM),
}

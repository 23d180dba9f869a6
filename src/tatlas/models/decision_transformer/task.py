"""Training a Decision Transformer (Chen et al. 2021, §3, Algorithm 1 "Training"): windows of K
timesteps from offline episodes, the action at every real timestep predicted from the tokens up to
its state, cross-entropy for discrete actions and mean-squared error for continuous ones (the paper
trains on actions only; the state and return heads are Hugging Face's extras).

The model normalises its inputs by buffers (:meth:`.model.DecisionTransformer.set_normalisation`);
the loss installs the data's statistics before every step (a few numbers: stateless, and right
after a resume too), so the saved model acts in environment units.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.offline_rl import OfflineDataset, TrajectoryWindows, collect, make_env, max_episode_steps
from ..spec import TrainTask
from .config import DecisionTransformerConfig

# embedded environments by the model's shape: (discrete, state_dim, act_dim) -> environment id
ENV_BY_SHAPE: dict[tuple[bool, int, int], str] = {
    (True, 4, 2): "CartPole-v1",
    (False, 3, 1): "Pendulum-v1",
    (True, 2, 3): "MountainCar-v0",
}


def action_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean action loss over the real (unpadded) timesteps of ``batch`` (a collated
    :class:`~tatlas.data.offline_rl.TrajectoryWindows` batch): cross-entropy (discrete) or MSE."""
    out = model(batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"])
    mask = batch["mask"]  # [B, K]
    pred, target = out.action_preds[mask], batch["target"][mask]  # [N, A], [N] or [N, A]
    if model.config.discrete:
        return F.cross_entropy(pred.float(), target)
    return F.mse_loss(pred.float(), target.float())


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """The data's state mean and std ``[S]`` and the return scale (the largest |episode return|)."""

    state_mean: Tensor
    state_std: Tensor
    return_scale: float

    @classmethod
    def of(cls, data: OfflineDataset) -> Normalisation:
        mean, std = data.state_stats()
        scale = float(max(1.0, np.abs(data.returns()).max()))
        return cls(torch.from_numpy(mean), torch.from_numpy(std), scale)


class NormalisingLoss:
    """:func:`action_loss`, after installing the data's :class:`Normalisation` into the model."""

    def __init__(self, norm: Normalisation) -> None:
        self.norm = norm

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        model.set_normalisation(self.norm.state_mean, self.norm.state_std, self.norm.return_scale)
        return action_loss(model, batch)


def config_for(data: OfflineDataset, base: DecisionTransformerConfig) -> DecisionTransformerConfig:
    """``base`` with the dataset's state and action sizes, and a timestep embedding long enough for
    its longest episode (and the environment's time limit, when known)."""
    space = data.action_space
    longest = max(len(e) for e in data.episodes)
    if data.env_id is not None:
        try:
            env = make_env(data.env_id)
            longest = max(longest, max_episode_steps(env))
            env.close()
        except ValueError:
            pass
    head = "discrete" if space.discrete else ("tanh" if base.action_head == "discrete" else base.action_head)
    return dataclasses.replace(base, state_dim=data.state_dim, act_dim=space.dim, action_head=head,
                               max_ep_len=max(base.max_ep_len, longest + 1))


def check_fits(config: DecisionTransformerConfig, data: OfflineDataset) -> None:
    """The dataset's states and actions must have the model's sizes: a clear error otherwise."""
    space = data.action_space
    problems = config.misfits(state_dim=data.state_dim, discrete=space.discrete, act_dim=space.dim,
                              steps=max(len(e) for e in data.episodes))
    if problems:
        raise ValueError("the dataset does not fit the model: " + "; ".join(problems))


class RolloutEval:
    """Evaluation during training: the mean return of ``episodes`` rollouts in ``env_id`` asked
    for ``target`` (the data's best return)."""

    def __init__(self, env_id: str, target: float, episodes: int, seed: int) -> None:
        self.env_id, self.target, self.episodes, self.seed = env_id, target, episodes, seed

    def __call__(self, model: nn.Module) -> dict[str, float]:
        from .rollout import rollout

        result = rollout(model, self.env_id, self.target, episodes=self.episodes, seed=self.seed)
        return {"target_return": self.target, "achieved_return": result.mean}


def dataset_task(data: OfflineDataset, config: DecisionTransformerConfig, *, eval_episodes: int = 5,
                 seed: int = 0) -> TrainTask:
    """The training task on ``data``; when the dataset names its environment, the evaluation rolls
    the model out asked for the best return in the data (:class:`RolloutEval`)."""
    check_fits(config, data)
    eval_fn = None
    if data.env_id is not None and eval_episodes > 0:
        eval_fn = RolloutEval(data.env_id, float(data.returns().max()), eval_episodes, 10_000 + seed)
    return TrainTask(train_data=TrajectoryWindows(data, config.context), loss_fn=NormalisingLoss(Normalisation.of(data)),
                     eval_fn=eval_fn)


def embedded_env(config: DecisionTransformerConfig) -> str:
    key = (config.discrete, config.state_dim, config.act_dim)
    if key not in ENV_BY_SHAPE:
        shapes = ", ".join(f"{env} (state_dim {s}, act_dim {a}, {'discrete' if d else 'continuous'})"
                           for (d, s, a), env in ENV_BY_SHAPE.items())
        raise ValueError(f"no embedded environment has state_dim {config.state_dim}, act_dim {config.act_dim} "
                         f"({config.action_head}); embedded: {shapes}; train on a dataset file with `tatlas dt train`")
    return ENV_BY_SHAPE[key]


def train_task(config: DecisionTransformerConfig, seed: int = 0) -> TrainTask:
    """``tatlas train decision_transformer``: mixed-quality episodes of the gymnasium environment of
    the model's shape (``tiny``: Pendulum-v1, ``tiny-discrete``: CartPole-v1), collected on the spot."""
    data = collect(embedded_env(config), episodes=120, seed=seed)
    return dataset_task(data, config, seed=seed)


__all__ = ["Normalisation", "NormalisingLoss", "RolloutEval", "action_loss", "check_fits", "config_for",
           "dataset_task", "embedded_env", "train_task"]

"""Evaluation by rollouts (Chen et al. 2021, §4-5: "we condition on a desired target return" and
report the return the agent achieves): ``B`` episodes of a gymnasium environment run in lockstep,
one batched model call per step, the agent conditioned on a target return."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ...data.offline_rl import ActionSpace, make_env, max_episode_steps
from .act import ActOptions, ReturnConditionedPolicy
from .model import DecisionTransformer


@dataclass(frozen=True)
class RolloutResult:
    """The returns ``[episodes]`` and lengths achieved when asked for ``target``."""

    target: float
    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())


def check_model_fits(model: DecisionTransformer, env_id: str, space: ActionSpace, state_dim: int, steps: int) -> None:
    """A model that cannot act in the environment is a clear error before any rollout."""
    problems = model.config.misfits(state_dim=state_dim, discrete=space.discrete, act_dim=space.dim, steps=steps,
                                    states="observations")
    if problems:
        raise ValueError(f"the model does not fit {env_id}: " + "; ".join(problems))


class _Envs:
    def __init__(self, envs: list) -> None:
        self.envs = envs

    def close(self) -> None:
        for env in self.envs:
            env.close()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread while stepping: a step's model call is a few tokens, too small to share
    out, and threads that wait for busy cores made it 10-30x slower on shared 2-core machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.inference_mode()
def rollout(model: DecisionTransformer, env_id: str, target: float, *, episodes: int = 10, seed: int = 0,
            options: ActOptions | None = None) -> RolloutResult:
    """Run ``episodes`` episodes of ``env_id`` (reset seeds ``seed + i``) with the model asked for
    ``target`` (environment units) and return what they achieved. ``options`` default to cached
    acting, discrete actions sampled with ``seed``."""
    if episodes < 1:
        raise ValueError(f"episodes: expected at least 1, got {episodes}")
    envs = [make_env(env_id) for _ in range(episodes)]
    with one_thread(), contextlib.closing(_Envs(envs)):
        space = ActionSpace.of_env(envs[0])
        limit = max_episode_steps(envs[0])
        obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
        check_model_fits(model, env_id, space, obs.shape[1], limit)
        model.eval()
        agent = ReturnConditionedPolicy(model, target, batch=episodes, options=options or ActOptions(seed=seed))
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        done = np.zeros(episodes, dtype=bool)
        for _ in range(limit):
            actions = agent.act(torch.from_numpy(obs)).float().cpu().numpy()
            rewards = np.zeros(episodes, np.float32)
            for i, env in enumerate(envs):
                if done[i]:
                    continue  # a finished row keeps its last state; its outputs are ignored
                a = int(actions[i]) if space.discrete else space.from_unit(actions[i])
                o, r, term, trunc, _ = env.step(a)
                obs[i], rewards[i] = o, r
                returns[i] += r
                lengths[i] += 1
                done[i] = term or trunc
            if done.all():
                break
            agent.observe(torch.from_numpy(rewards))
    return RolloutResult(float(target), returns, lengths)


def evaluate_targets(model: DecisionTransformer, env_id: str, targets: list[float], *, episodes: int = 10,
                     seed: int = 0, options: ActOptions | None = None) -> list[RolloutResult]:
    """:func:`rollout` for every target return, on the same episode seeds."""
    return [rollout(model, env_id, float(t), episodes=episodes, seed=seed, options=options) for t in targets]

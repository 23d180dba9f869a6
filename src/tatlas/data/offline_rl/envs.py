"""Real gymnasium environments and the scripted policies that roll out offline datasets.

- Environments (:data:`ENVIRONMENTS`): gymnasium's classic control ``CartPole-v1`` (discrete, dense
  reward), ``Pendulum-v1`` (continuous, dense), ``MountainCar-v0`` (discrete: nothing but a -1 time
  penalty until the car reaches the flag) and our ``MountainCarSparse-v0`` (the same car, sparse
  reward: 1 on the step that reaches the flag, 0 on every other; registered with gymnasium by
  :func:`make_env` when first made).
- Policies of mixed quality (:data:`POLICIES`): ``random``; ``scripted``, a simple hand-written rule
  of middling quality; ``expert``, a good controller; ``noisy``, the expert taking a random action
  with a probability drawn per episode from U(0, 1), which spreads the returns between the two.
- :func:`collect` rolls episodes with a weighted mix of them (:func:`parse_mix`), seeded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .dataset import ActionSpace, Episode, OfflineDataset

ENVIRONMENTS: tuple[str, ...] = ("CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarSparse-v0")
POLICIES: tuple[str, ...] = ("random", "scripted", "expert", "noisy")


@functools.cache
def _mountain_car_sparse() -> type:
    """``MountainCarSparseEnv``, made on first use (gymnasium is imported lazily): gymnasium's
    ``MountainCarEnv`` paying 1 on the step that reaches the flag (its only termination) and 0 on
    every other step. A subclass, not a wrapper, so that the environment's ``EnvSpec`` (saved in
    Minari's metadata) makes the same environment again."""
    from gymnasium.envs.classic_control.mountain_car import MountainCarEnv

    class MountainCarSparseEnv(MountainCarEnv):
        def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
            obs, _, terminated, truncated, info = super().step(action)
            return obs, 1.0 if terminated else 0.0, terminated, truncated, info

    return MountainCarSparseEnv


def sparse_mountain_car(**kwargs: Any) -> Any:
    """The entry point of ``MountainCarSparse-v0``: the dynamics, observations and 200-step limit of
    ``MountainCar-v0``, rewarded 1 on reaching the flag and 0 on every other step instead of -1 per step."""
    return _mountain_car_sparse()(**kwargs)


# our environments, registered with gymnasium by :func:`make_env` when first made (no import-time side effects)
# (the entry point names the package, which re-exports it: the path saved in Minari's EnvSpecs stays valid)
_OWN_ENVS: dict[str, dict[str, Any]] = {
    "MountainCarSparse-v0": {"entry_point": "tatlas.data.offline_rl:sparse_mountain_car", "max_episode_steps": 200,
                             "reward_threshold": 1.0},
}


def make_env(env_id: str, **kwargs: Any) -> Any:
    """``gymnasium.make(env_id)`` for any registered environment and ours (``MountainCarSparse-v0``),
    with a clear error for unknown ids."""
    import gymnasium as gym

    if env_id in _OWN_ENVS and env_id not in gym.registry:
        gym.register(env_id, **_OWN_ENVS[env_id])
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        raise ValueError(f"environment {env_id!r} cannot be made ({e}); the built-in policies know "
                         f"{', '.join(ENVIRONMENTS)}") from None


def max_episode_steps(env: Any) -> int:
    steps = getattr(env.spec, "max_episode_steps", None) if env.spec is not None else None
    if steps is None:
        raise ValueError(f"environment {env.spec.id if env.spec else env!r} has no time limit (max_episode_steps)")
    return int(steps)


Policy = Callable[[np.ndarray], Any]


def _cartpole(kind: str) -> Policy:
    if kind == "expert":  # linear state feedback: balances for the whole 500 steps
        return lambda o: int(0.5 * o[0] + 1.0 * o[1] + 10.0 * o[2] + 2.0 * o[3] > 0)
    return lambda o: int(o[2] > 0)  # push the way the pole leans: falls after ~40 steps


def _pendulum(kind: str) -> Policy:
    # theta'' = 15 sin(theta) + 3 u (theta = 0 upright); energy E = w^2 / 2 + 15 cos(theta), E = 15 at the top
    def expert(o: np.ndarray) -> np.ndarray:
        c, s, w = (float(v) for v in o)
        if c > 0.85:  # near the top: PD stabilisation
            u = -(12.0 * math.atan2(s, c) + 2.5 * w)
        else:  # pump energy with the swing, brake when there is too much
            u = 2.0 * math.copysign(1.0, w) if 0.5 * w * w + 15 * c < 15 else -0.5 * math.copysign(1.0, w)
        return np.array([min(2.0, max(-2.0, u))], dtype=np.float32)

    def scripted(o: np.ndarray) -> np.ndarray:  # pumps energy but never stabilises: swings through the top
        c, s, w = (float(v) for v in o)
        return np.array([2.0 * math.copysign(1.0, w) if 0.5 * w * w + 15 * c < 15 else 0.0], dtype=np.float32)

    return expert if kind == "expert" else scripted


def _mountaincar(kind: str) -> Policy:
    if kind == "expert":  # push with the velocity: reaches the flag in ~120 steps
        return lambda o: 2 if o[1] >= 0 else 0
    return lambda o: 2 if o[1] > 0.01 else (0 if o[1] < -0.01 else 1)  # coasts at low speed: slower


_CONTROLLERS: dict[str, Callable[[str], Policy]] = {
    "CartPole-v1": _cartpole, "Pendulum-v1": _pendulum, "MountainCar-v0": _mountaincar,
    "MountainCarSparse-v0": _mountaincar,
}


def parse_mix(mix: str | Mapping[str, float]) -> dict[str, float]:
    """``"random=1,scripted=1,noisy=2"`` (or a mapping) -> weights per policy, validated."""
    if isinstance(mix, str):
        out: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in mix.split(","))):
            name, sep, value = part.partition("=")
            try:
                out[name.strip()] = float(value) if sep else 1.0
            except ValueError:
                raise ValueError(f"policy mix: expected NAME=WEIGHT, got {part!r}") from None
    else:
        out = {k: float(v) for k, v in mix.items()}
    unknown = sorted(set(out) - set(POLICIES))
    if unknown:
        raise ValueError(f"policy mix: unknown policies {unknown}; expected some of {list(POLICIES)}")
    if not out or any(w < 0 for w in out.values()) or sum(out.values()) <= 0:
        raise ValueError(f"policy mix: expected non-negative weights with a positive sum, got {out}")
    return out


def _counts(mix: Mapping[str, float], episodes: int) -> dict[str, int]:
    """Episodes per policy, proportional to the weights (largest remainders)."""
    total = sum(mix.values())
    exact = {k: episodes * w / total for k, w in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: episodes - sum(counts.values())]:
        counts[k] += 1
    return counts


def collect(env_id: str, *, episodes: int, mix: str | Mapping[str, float] = "random=1,scripted=1,expert=1,noisy=3",
            seed: int = 0, progress: Callable[[int], None] | None = None) -> OfflineDataset:
    """Roll ``episodes`` episodes of ``env_id`` with the policies of ``mix`` (weights), seeded
    (environment resets ``seed * 100_003 + i``, policy noise from ``seed``). ``progress(i)`` after each."""
    if env_id not in _CONTROLLERS:
        raise ValueError(f"no scripted policies for {env_id!r}; environments with policies: {', '.join(ENVIRONMENTS)}")
    if episodes < 1:
        raise ValueError(f"episodes: expected at least 1, got {episodes}")
    weights = parse_mix(mix)
    counts = _counts(weights, episodes)
    rng = np.random.default_rng(seed)
    plan = [name for name in POLICIES for _ in range(counts.get(name, 0))]
    rng.shuffle(plan)
    env = make_env(env_id)
    env.action_space.seed(seed)
    space = ActionSpace.of_env(env)
    out = []
    for i, name in enumerate(plan):
        eps = {"random": 1.0, "noisy": float(rng.uniform(0.0, 1.0))}.get(name, 0.0)
        act = _CONTROLLERS[env_id]("scripted" if name == "scripted" else "expert")
        obs, _ = env.reset(seed=seed * 100_003 + i)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        done = False
        while not done:
            a = env.action_space.sample() if eps and rng.random() < eps else act(obs)
            obs, r, term, trunc, _ = env.step(a)
            observations.append(obs)
            actions.append(a)
            rewards.append(r)
            terms.append(term)
            truncs.append(trunc)
            done = term or trunc
        acts = np.asarray(actions, dtype=np.int64) if space.discrete else np.asarray(actions, np.float32).reshape(len(actions), -1)
        label = f"noisy({eps:.2f})" if name == "noisy" else name
        out.append(Episode(np.asarray(observations, np.float32), acts, np.asarray(rewards, np.float32),
                           np.asarray(terms, bool), np.asarray(truncs, bool), label))
        if progress is not None:
            progress(i + 1)
    env.close()
    return OfflineDataset(out, space, env_id, {"policy_mix": weights, "seed": seed})

"""The records of an offline reinforcement-learning dataset (Decision Transformer, Chen et al.
2021, §4-5) and the checks every reader shares.

- :class:`ActionSpace`: discrete actions, or a 1-D box the model sees scaled to [-1, 1].
- :class:`Episode`: Minari's per-episode fields, ``observations [T + 1, S]``, ``actions [T]``
  (discrete) or ``[T, A]``, ``rewards [T]``, ``terminations [T]``, ``truncations [T]``.
- :class:`OfflineDataset`: the episodes of one environment (:func:`~.load.save_dataset` writes one
  ``.npz`` or a Minari dataset folder, as :func:`dataset_layout` decides from the name).
- :func:`describe`: a one-line summary of the returns.
- The readers' shared checks (:func:`_check_episode`, :func:`_infer_space`, :func:`_assemble`, ...):
  each names the file, the episode and the field of whatever is malformed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FIELDS: tuple[str, ...] = ("observations", "actions", "rewards", "terminations", "truncations")
FORMAT = "tatlas.offline_rl"
FORMAT_VERSION = 1
# Minari's dataset ids: ``(namespace/)name-v<version>``; a folder saved as Minari is named ``name-v<version>``
_MINARI_ID = re.compile(r"(?:[-\w][-\w/]*[-\w]/)?[-\w]+?-v\d+\Z")
_MINARI_NAME = re.compile(r"[-\w]+?-v\d+\Z")


class DatasetError(ValueError):
    """An offline dataset that cannot be read; the message names the file and the field."""


# ---------------------------------------------------------------------- action spaces


@dataclass(frozen=True, kw_only=True)
class ActionSpace:
    """``discrete``: ``n`` actions (indices); else a box of ``len(low)`` dims in ``[low, high]``.
    The model sees box actions scaled to [-1, 1] (:meth:`to_unit`, :meth:`from_unit`)."""

    discrete: bool
    n: int = 0
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.discrete and self.n < 2:
            raise ValueError(f"ActionSpace.n: a discrete space needs >= 2 actions, got {self.n}")
        if not self.discrete:
            if not self.low or len(self.low) != len(self.high):
                raise ValueError(f"ActionSpace: expected low and high of one non-zero length, got {self.low}, {self.high}")
            if any(not (lo < hi) for lo, hi in zip(self.low, self.high, strict=True)):
                raise ValueError(f"ActionSpace: expected low < high in every dim, got {self.low}, {self.high}")

    @property
    def dim(self) -> int:
        """The model's ``act_dim``: the number of actions (discrete) or the box's dims."""
        return self.n if self.discrete else len(self.low)

    def to_unit(self, actions: np.ndarray) -> np.ndarray:
        """Box actions ``[*, A]`` -> [-1, 1] (clipped)."""
        lo, hi = np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)
        return np.clip(2 * (actions - lo) / (hi - lo) - 1, -1, 1).astype(np.float32)

    def from_unit(self, actions: np.ndarray) -> np.ndarray:
        """[-1, 1] -> box actions ``[*, A]`` (clipped to the box)."""
        lo, hi = np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)
        return np.clip(lo + (np.clip(actions, -1, 1) + 1) * (hi - lo) / 2, lo, hi).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        if self.discrete:
            return {"type": "discrete", "n": self.n}
        return {"type": "box", "low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionSpace:
        kind = d.get("type")
        if kind == "discrete":
            return cls(discrete=True, n=int(d["n"]))
        if kind == "box":
            return cls(discrete=False, low=tuple(float(v) for v in d["low"]), high=tuple(float(v) for v in d["high"]))
        raise ValueError(f"action_space.type: expected 'discrete' or 'box', got {kind!r}")

    @classmethod
    def of_env(cls, env: Any) -> ActionSpace:
        import gymnasium as gym

        space = env.action_space
        if isinstance(space, gym.spaces.Discrete):
            return cls(discrete=True, n=int(space.n))
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            return cls(discrete=False, low=tuple(map(float, space.low)), high=tuple(map(float, space.high)))
        raise ValueError(f"action space {space} is not supported (Discrete or a 1-D Box)")


# ---------------------------------------------------------------------- episodes and datasets


@dataclass(frozen=True)
class Episode:
    """One episode in Minari's fields: ``observations [T + 1, S]`` (the last is the final
    observation), ``actions [T]`` int (discrete) or ``[T, A]`` float, ``rewards [T]``,
    ``terminations [T]`` and ``truncations [T]`` (bool); ``policy`` names who acted."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    policy: str = ""

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def total_return(self) -> float:
        return float(self.rewards.sum())


@dataclass(frozen=True)
class OfflineDataset:
    """Episodes of one environment. ``env_id`` may be ``None`` for data of unknown origin."""

    episodes: list[Episode]
    action_space: ActionSpace
    env_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.episodes:
            raise DatasetError("dataset has no episodes")

    @property
    def state_dim(self) -> int:
        return int(self.episodes[0].observations.shape[1])

    @property
    def total_steps(self) -> int:
        return sum(len(e) for e in self.episodes)

    def returns(self) -> np.ndarray:
        """Each episode's undiscounted return ``[N]``."""
        return np.array([e.total_return for e in self.episodes], dtype=np.float64)

    def returns_by_policy(self) -> dict[str, np.ndarray]:
        out: dict[str, list[float]] = {}
        for e in self.episodes:
            out.setdefault(e.policy or "unknown", []).append(e.total_return)
        return {k: np.array(v) for k, v in out.items()}

    def state_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (floored at 1e-6) of every observation ``[S]``, ``[S]``."""
        obs = np.concatenate([e.observations[:-1] for e in self.episodes]).astype(np.float64)
        return obs.mean(0).astype(np.float32), np.maximum(obs.std(0), 1e-6).astype(np.float32)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "env_id": self.env_id,
            "observation_dim": self.state_dim, "action_space": self.action_space.to_dict(),
            "total_episodes": len(self.episodes), "total_steps": self.total_steps,
            "episode_policies": [e.policy for e in self.episodes], **self.info,
        }


def dataset_layout(path: str | Path, dataset_id: str | None = None) -> str:
    """How :func:`~.load.save_dataset` writes ``path``: ``"npz"`` for a name ending in ``.npz``,
    ``"minari"`` for a folder named like a Minari dataset (``NAME-v<VERSION>``, e.g.
    ``cartpole-mixed-v0``) or when a ``dataset_id`` (``(namespace/)NAME-v<VERSION>``) is given.
    Anything else is a ``ValueError``: a bad path fails before any episode is rolled out."""
    path = Path(path)
    if path.suffix == ".npz":
        if dataset_id is not None:
            raise ValueError(f"dataset_id: only a Minari dataset folder has one, {path} is an .npz file")
        return "npz"
    if dataset_id is not None:
        if not _MINARI_ID.match(dataset_id):
            raise ValueError(f"dataset_id: expected Minari's (NAMESPACE/)NAME-v<VERSION>, e.g. "
                             f"'tatlas/cartpole-mixed-v0', got {dataset_id!r}")
        return "minari"
    if _MINARI_NAME.match(path.name):
        return "minari"
    raise ValueError(f"{path}: expected a file name ending in .npz or a Minari dataset folder named "
                     f"NAME-v<VERSION> (e.g. cartpole-mixed-v0)")


def describe(data: OfflineDataset) -> str:
    """One line: episodes, steps, and the return's mean / best / worst, per policy kind too."""
    r = data.returns()
    kinds: dict[str, list[float]] = {}
    for e in data.episodes:
        kinds.setdefault((e.policy or "unknown").split("(")[0], []).append(e.total_return)
    per = ", ".join(f"{k} {len(v)} (mean {np.mean(v):.1f})" for k, v in sorted(kinds.items()))
    return (f"{data.env_id or 'dataset'}: {len(data.episodes)} episodes, {data.total_steps} steps, return mean "
            f"{r.mean():.1f}, best {r.max():.1f}, worst {r.min():.1f}; {per}")


# ---------------------------------------------------------------------- checks shared by every reader


def _check_episode(where: str, arrays: Mapping[str, np.ndarray], space: ActionSpace | None,
                   state_dim: int | None, policy: str) -> Episode:
    """Validate one episode's fields; every error names ``where`` and the field."""
    missing = [f for f in FIELDS if f not in arrays]
    if missing:
        raise DatasetError(f"{where}: missing field {missing[0]!r} (an episode has {', '.join(FIELDS)})")
    obs, act, rew = (np.asarray(arrays[k]) for k in ("observations", "actions", "rewards"))
    term, trunc = np.asarray(arrays["terminations"]), np.asarray(arrays["truncations"])
    if rew.ndim != 1 or not np.issubdtype(rew.dtype, np.number):
        raise DatasetError(f"{where}: field 'rewards' must be a 1-D numeric array [T], got {rew.dtype} {list(rew.shape)}")
    t = len(rew)
    if t == 0:
        raise DatasetError(f"{where}: field 'rewards' is empty (an episode needs at least one step)")
    if obs.ndim != 2 or obs.shape[0] != t + 1 or not np.issubdtype(obs.dtype, np.number):
        raise DatasetError(f"{where}: field 'observations' must be numeric [T + 1, S] = [{t + 1}, S] "
                           f"(one more than the {t} rewards), got {obs.dtype} {list(obs.shape)}")
    if state_dim is not None and obs.shape[1] != state_dim:
        raise DatasetError(f"{where}: field 'observations' has {obs.shape[1]} dims, the dataset {state_dim}")
    for name, flag in (("terminations", term), ("truncations", trunc)):
        if flag.shape != (t,):
            raise DatasetError(f"{where}: field {name!r} must be [T] = [{t}], got {list(flag.shape)}")
    for name, values in (("observations", obs), ("rewards", rew)):
        if not np.isfinite(values).all():
            raise DatasetError(f"{where}: field {name!r} holds NaN or infinite values")
    if space is not None and space.discrete:
        if act.shape != (t,) or not np.issubdtype(act.dtype, np.integer):
            raise DatasetError(f"{where}: field 'actions' must be integer action indices [T] = [{t}] "
                               f"(discrete space of {space.n}), got {act.dtype} {list(act.shape)}")
        if act.min() < 0 or act.max() >= space.n:
            raise DatasetError(f"{where}: field 'actions' holds indices in [{act.min()}, {act.max()}], "
                               f"outside the {space.n} actions")
    elif space is not None:
        if act.shape == (t,) and space.dim == 1:
            act = act[:, None]  # a 1-D box stored without its action axis
        if act.shape != (t, space.dim) or not np.issubdtype(act.dtype, np.floating):
            raise DatasetError(f"{where}: field 'actions' must be float [T, A] = [{t}, {space.dim}], got "
                               f"{act.dtype} {list(act.shape)}")
        if not np.isfinite(act).all():
            raise DatasetError(f"{where}: field 'actions' holds NaN or infinite values")
    return Episode(observations=obs.astype(np.float32), actions=act.astype(np.int64 if act.dtype.kind in "iu" else np.float32),
                   rewards=rew.astype(np.float32), terminations=term.astype(bool), truncations=trunc.astype(bool),
                   policy=policy)


def _infer_space(actions: Sequence[np.ndarray], where: str) -> ActionSpace:
    """The action space of data without metadata: integer actions ``[T]`` are discrete (``n = max
    + 1``), float ``[T, A]`` a box: [-1, 1] when the data lies within, else the data's range."""
    first = np.asarray(actions[0])
    if not any(np.size(a) for a in actions):  # nothing to take a range or a count from
        raise DatasetError(f"{where}: field 'actions' holds no values in any episode")
    if first.ndim == 1 and np.issubdtype(first.dtype, np.floating):
        actions, first = [np.asarray(a)[:, None] for a in actions], first[:, None]
    if np.issubdtype(first.dtype, np.integer):
        n = max(int(np.max(a)) for a in actions) + 1
        return ActionSpace(discrete=True, n=max(2, n))
    if first.ndim != 2 or not np.issubdtype(first.dtype, np.floating):
        raise DatasetError(f"{where}: field 'actions' must be integer indices [T] or float [T, A], got "
                           f"{first.dtype} {list(first.shape)}")
    allv = np.concatenate([np.asarray(a, np.float64).reshape(-1, first.shape[1]) for a in actions])
    lo, hi = allv.min(0), allv.max(0)
    if (lo >= -1).all() and (hi <= 1).all():
        lo, hi = -np.ones_like(lo), np.ones_like(hi)
    hi = np.where(hi > lo, hi, lo + 1)
    return ActionSpace(discrete=False, low=tuple(map(float, lo)), high=tuple(map(float, hi)))


def _space_from_meta(path: Path, meta: Mapping[str, Any]) -> ActionSpace | None:
    if "action_space" not in meta:
        return None
    try:
        return ActionSpace.from_dict(meta["action_space"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: field 'metadata.action_space' is malformed ({e})") from None


def _check_numbering(path: Path, indices: list[int]) -> None:
    if indices != list(range(len(indices))):
        gap = next(i for i, j in enumerate(indices) if i != j)
        raise DatasetError(f"{path}: episodes are not numbered 0..{len(indices) - 1}: 'episode_{gap}' is missing")


def _assemble(entries: list[tuple[str, dict[str, np.ndarray], str]], space: ActionSpace | None,
              env_id: str | None, info: dict[str, Any]) -> OfflineDataset:
    """Episodes from ``(where, fields, policy)``: every field present, the action space inferred
    from the actions when not known, each episode validated (:func:`_check_episode`)."""
    for where, arrays, _ in entries:
        missing = [f for f in FIELDS if f not in arrays]
        if missing:
            raise DatasetError(f"{where}: missing field {missing[0]!r} (an episode has {', '.join(FIELDS)})")
    if space is None:
        space = _infer_space([arrays["actions"] for _, arrays, _ in entries], entries[0][0])
    state_dim = None
    episodes = []
    for where, arrays, policy in entries:
        ep = _check_episode(where, arrays, space, state_dim, policy)
        state_dim = ep.observations.shape[1]
        episodes.append(ep)
    return OfflineDataset(episodes, space, env_id, info)

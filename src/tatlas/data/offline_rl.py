"""Offline reinforcement-learning data from real gymnasium environments (the data of Decision
Transformer, Chen et al. 2021, §4-5, made here instead of downloaded from D4RL).

- Environments: gymnasium's classic control ``CartPole-v1`` (discrete, dense reward),
  ``Pendulum-v1`` (continuous, dense) and ``MountainCar-v0`` (discrete, sparse: nothing but a
  -1 time penalty until the car reaches the flag).
- Policies of mixed quality (:data:`POLICIES`): ``random``; ``scripted``, a simple hand-written rule
  of middling quality; ``expert``, a good controller; ``noisy``, the expert taking a random action
  with a probability drawn per episode from U(0, 1), which spreads the returns between the two.
- Layout (:class:`OfflineDataset`): Minari's per-episode fields, ``observations [T + 1, S]``,
  ``actions [T]`` (discrete) or ``[T, A]``, ``rewards [T]``, ``terminations [T]``, ``truncations [T]``,
  saved as one ``.npz`` whose members are ``episode_<i>/<field>`` plus a ``metadata`` JSON string (the
  environment, the action space, and each episode's policy). :func:`load_dataset` also reads a
  folder of ``episode_<i>/<field>.npy`` files and D4RL's flat arrays (``observations``, ``actions``,
  ``rewards``, ``terminals``/``terminations``, ``timeouts``/``truncations``, optionally
  ``next_observations``), and names the field of any malformed one.
- Training windows (:class:`TrajectoryWindows`): ``K`` consecutive steps starting anywhere in the
  data (episodes weighted by length, as in the paper's code), with the undiscounted returns-to-go
  ``R̂_t = Σ_{t'≥t} r_t'`` (:func:`returns_to_go`), padded on the right (so causal attention never
  sees the padding) and masked.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

ENVIRONMENTS: tuple[str, ...] = ("CartPole-v1", "Pendulum-v1", "MountainCar-v0")
POLICIES: tuple[str, ...] = ("random", "scripted", "expert", "noisy")
FIELDS: tuple[str, ...] = ("observations", "actions", "rewards", "terminations", "truncations")
FORMAT = "tatlas.offline_rl"
FORMAT_VERSION = 1


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

    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` (``episode_<i>/<field>`` members and a ``metadata`` JSON string)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: expected a file name ending in .npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"metadata": np.array(json.dumps(self.metadata()))}
        for i, e in enumerate(self.episodes):
            for name in FIELDS:
                arrays[f"episode_{i}/{name}"] = getattr(e, name)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        tmp.replace(path)
        return path


# ---------------------------------------------------------------------- loading and validation


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


class _Members:
    """The arrays of an ``.npz`` file or of a folder of ``.npy`` files, by name (``a/b`` for ``a/b.npy``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            self.names = sorted(str(p.relative_to(path).with_suffix("")) for p in path.rglob("*.npy"))
            self._npz = None
        else:
            try:
                self._npz = np.load(path, allow_pickle=False)
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
                raise DatasetError(f"{path}: not a readable .npz file ({e})") from None
            if not isinstance(self._npz, np.lib.npyio.NpzFile):
                raise DatasetError(f"{path}: holds one bare array, not the named fields of a dataset")
            self.names = list(self._npz.files)

    def get(self, name: str) -> np.ndarray:
        try:
            if self._npz is not None:
                return self._npz[name]
            return np.load(self.path / f"{name}.npy", allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{self.path}: field {name!r} is unreadable ({e})") from None

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()


_EPISODE = re.compile(r"episode_(\d+)/(\w+)\Z")


def load_dataset(path: str | Path) -> OfflineDataset:
    """Read a dataset saved by :meth:`OfflineDataset.save`, a folder of ``episode_<i>/<field>.npy``
    (with an optional ``metadata.json``), or D4RL's flat arrays in an ``.npz``. Errors name the field."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty")
    members = _Members(path)
    try:
        meta: dict[str, Any] = {}
        if "metadata" in members.names:
            try:
                meta = json.loads(str(members.get("metadata")))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}: field 'metadata' is not JSON ({e})") from None
        elif path.is_dir() and (path / "metadata.json").is_file():
            try:
                meta = json.loads((path / "metadata.json").read_text())
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path / 'metadata.json'}: not JSON ({e})") from None
        if not isinstance(meta, dict):
            raise DatasetError(f"{path}: field 'metadata' must be a JSON object")
        episodes: dict[int, dict[str, str]] = {}
        for name in members.names:
            m = _EPISODE.match(name)
            if m:
                episodes.setdefault(int(m.group(1)), {})[m.group(2)] = name
        if episodes:
            return _load_episodes(path, members, episodes, meta)
        if "observations" in members.names or "rewards" in members.names:
            return _load_flat(path, members, meta)
        if not members.names:
            raise DatasetError(f"{path}: the dataset is empty (no fields)")
        raise DatasetError(f"{path}: no episodes: expected fields 'episode_<i>/observations', ... (Minari) or "
                           f"'observations', 'actions', 'rewards', 'terminals', 'timeouts' (D4RL); found "
                           f"{', '.join(members.names[:8])}")
    finally:
        members.close()


def _space_from_meta(path: Path, meta: Mapping[str, Any]) -> ActionSpace | None:
    if "action_space" not in meta:
        return None
    try:
        return ActionSpace.from_dict(meta["action_space"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: field 'metadata.action_space' is malformed ({e})") from None


def _load_episodes(path: Path, members: _Members, found: dict[int, dict[str, str]], meta: Mapping[str, Any]) -> OfflineDataset:
    indices = sorted(found)
    if indices != list(range(len(indices))):
        gap = next(i for i, j in enumerate(indices) if i != j)
        raise DatasetError(f"{path}: episodes are not numbered 0..{len(indices) - 1}: 'episode_{gap}' is missing")
    space = _space_from_meta(path, meta)
    policies = list(meta.get("episode_policies") or [])
    raw = []
    for i in indices:
        names = found[i]
        raw.append({k: members.get(names[k]) for k in FIELDS if k in names})
        missing = [f for f in FIELDS if f not in names]
        if missing:
            raise DatasetError(f"{path}: episode_{i}: missing field {missing[0]!r} (an episode has {', '.join(FIELDS)})")
    if space is None:
        space = _infer_space([r["actions"] for r in raw], f"{path}: episode_0")
    state_dim = None
    episodes = []
    for i, arrays in zip(indices, raw, strict=True):
        policy = str(policies[i]) if i < len(policies) else ""
        ep = _check_episode(f"{path}: episode_{i}", arrays, space, state_dim, policy)
        state_dim = ep.observations.shape[1]
        episodes.append(ep)
    info = {k: v for k, v in meta.items() if k in ("policy_mix", "seed", "noise")}
    return OfflineDataset(episodes, space, meta.get("env_id"), info)


def _load_flat(path: Path, members: _Members, meta: Mapping[str, Any]) -> OfflineDataset:
    """D4RL's flat arrays: one row per step; an episode ends where ``terminals``/``terminations``
    or ``timeouts``/``truncations`` is set (and at the end of the arrays, as a truncation). The final
    observation comes from ``next_observations`` when present, else the last one is repeated."""
    def need(*names: str) -> np.ndarray:
        for n in names:
            if n in members.names:
                return members.get(n)
        raise DatasetError(f"{path}: missing field {names[0]!r} (D4RL layout: observations, actions, rewards, "
                           f"terminals, timeouts)")

    obs, act, rew = need("observations"), need("actions"), need("rewards")
    term = need("terminals", "terminations")
    trunc = need("timeouts", "truncations") if {"timeouts", "truncations"} & set(members.names) else np.zeros(len(rew), bool)
    n = len(rew)
    if n == 0:
        raise DatasetError(f"{path}: field 'rewards' is empty (the dataset has no steps)")
    for name, arr in (("observations", obs), ("actions", act), ("terminals", term), ("timeouts", trunc)):
        if len(arr) != n:
            raise DatasetError(f"{path}: field {name!r} has {len(arr)} rows, 'rewards' {n}")
    if obs.ndim != 2:
        raise DatasetError(f"{path}: field 'observations' must be [N, S], got {list(obs.shape)}")
    nxt = members.get("next_observations") if "next_observations" in members.names else None
    if nxt is not None and nxt.shape != obs.shape:
        raise DatasetError(f"{path}: field 'next_observations' must match 'observations' {list(obs.shape)}, "
                           f"got {list(nxt.shape)}")
    if act.ndim == 2 and act.shape[1] == 1 and np.issubdtype(act.dtype, np.integer):
        act = act[:, 0]
    ends = np.flatnonzero(term.astype(bool) | trunc.astype(bool)).tolist()
    if not ends or ends[-1] != n - 1:
        ends.append(n - 1)
    space = _space_from_meta(path, meta) or _infer_space([act], str(path))
    episodes, start = [], 0
    for i, end in enumerate(ends):
        sl = slice(start, end + 1)
        last = nxt[end] if nxt is not None else obs[end]
        tr = trunc[sl].astype(bool).copy()
        if end == n - 1 and not term[end] and not trunc[end]:
            tr[-1] = True  # cut off by the end of the arrays
        arrays = {"observations": np.concatenate([obs[sl], last[None]]), "actions": act[sl], "rewards": rew[sl],
                  "terminations": term[sl], "truncations": tr}
        episodes.append(_check_episode(f"{path}: episode {i} (rows {start}..{end})", arrays, space, None, ""))
        start = end + 1
    return OfflineDataset(episodes, space, meta.get("env_id"), {})


# ---------------------------------------------------------------------- environments and policies


def make_env(env_id: str, **kwargs: Any) -> Any:
    """``gymnasium.make(env_id)`` for any registered environment, with a clear error for unknown ids."""
    import gymnasium as gym

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


# ---------------------------------------------------------------------- training windows


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """``R̂_t = Σ_{t' ≥ t} r_t'`` (undiscounted, §3 of the paper): ``rewards [T] -> [T]``."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return np.cumsum(rewards[::-1])[::-1].astype(np.float32)


class TrajectoryWindows(Dataset):
    """Windows of ``context`` (K) steps for training: item ``i`` starts at the ``i``-th step of the
    concatenated episodes and runs to at most K steps within its episode, right-padded.

    Sample: ``states [K, S]`` (raw), ``actions [K, A]`` (box: scaled to [-1, 1]; discrete: one-hot),
    ``returns_to_go [K, 1]`` (raw), ``timesteps [K]``, ``mask [K]`` (``True`` on real steps), and
    ``target`` (the actions to predict: ``[K, A]`` float, or ``[K]`` indices for discrete)."""

    def __init__(self, data: OfflineDataset, context: int) -> None:
        if context < 1:
            raise ValueError(f"context: expected at least 1 timestep, got {context}")
        self.data, self.context, self.space = data, context, data.action_space
        self.starts = np.cumsum([0] + [len(e) for e in data.episodes])  # [N + 1]
        self.rtg = [returns_to_go(e.rewards) for e in data.episodes]
        if self.space.discrete:
            self.unit_actions = [e.actions for e in data.episodes]
        else:
            self.unit_actions = [self.space.to_unit(e.actions) for e in data.episodes]

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        e = int(np.searchsorted(self.starts, index, side="right") - 1)
        t0 = index - int(self.starts[e])
        ep, k = self.data.episodes[e], self.context
        t1 = min(len(ep), t0 + k)
        n = t1 - t0
        s = self.data.state_dim
        states = np.zeros((k, s), np.float32)
        states[:n] = ep.observations[t0:t1]
        rtg = np.zeros((k, 1), np.float32)
        rtg[:n, 0] = self.rtg[e][t0:t1]
        timesteps = np.zeros(k, np.int64)
        timesteps[:n] = np.arange(t0, t1)
        mask = np.zeros(k, bool)
        mask[:n] = True
        a = self.unit_actions[e][t0:t1]
        if self.space.discrete:
            target = np.zeros(k, np.int64)
            target[:n] = a
            actions = np.zeros((k, self.space.n), np.float32)
            actions[np.arange(n), a] = 1.0
        else:
            target = np.zeros((k, self.space.dim), np.float32)
            target[:n] = a
            actions = target.copy()
        return {"states": torch.from_numpy(states), "actions": torch.from_numpy(actions),
                "returns_to_go": torch.from_numpy(rtg), "timesteps": torch.from_numpy(timesteps),
                "mask": torch.from_numpy(mask), "target": torch.from_numpy(target)}


def describe(data: OfflineDataset) -> str:
    """One line: episodes, steps, and the return's mean / best / worst, per policy kind too."""
    r = data.returns()
    kinds: dict[str, list[float]] = {}
    for e in data.episodes:
        kinds.setdefault((e.policy or "unknown").split("(")[0], []).append(e.total_return)
    per = ", ".join(f"{k} {len(v)} (mean {np.mean(v):.1f})" for k, v in sorted(kinds.items()))
    return (f"{data.env_id or 'dataset'}: {len(data.episodes)} episodes, {data.total_steps} steps, return mean "
            f"{r.mean():.1f}, best {r.max():.1f}, worst {r.min():.1f}; {per}")


__all__ = [
    "ENVIRONMENTS", "FIELDS", "POLICIES", "ActionSpace", "DatasetError", "Episode", "OfflineDataset",
    "TrajectoryWindows", "collect", "describe", "load_dataset", "make_env", "max_episode_steps", "parse_mix",
    "returns_to_go",
]

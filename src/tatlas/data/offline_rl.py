"""Offline reinforcement-learning data from real gymnasium environments (the data of Decision
Transformer, Chen et al. 2021, §4-5, made here instead of downloaded from D4RL).

- Environments: gymnasium's classic control ``CartPole-v1`` (discrete, dense reward),
  ``Pendulum-v1`` (continuous, dense), ``MountainCar-v0`` (discrete: nothing but a -1 time penalty
  until the car reaches the flag) and our ``MountainCarSparse-v0`` (the same car, sparse reward: 1
  on the step that reaches the flag, 0 on every other; registered with gymnasium when first made).
- Policies of mixed quality (:data:`POLICIES`): ``random``; ``scripted``, a simple hand-written rule
  of middling quality; ``expert``, a good controller; ``noisy``, the expert taking a random action
  with a probability drawn per episode from U(0, 1), which spreads the returns between the two.
- Layout (:class:`OfflineDataset`): Minari's per-episode fields, ``observations [T + 1, S]``,
  ``actions [T]`` (discrete) or ``[T, A]``, ``rewards [T]``, ``terminations [T]``, ``truncations [T]``,
  saved either as one ``.npz`` whose members are ``episode_<i>/<field>`` plus a ``metadata`` JSON
  string (the environment, the action space, and each episode's policy), or as a Minari dataset
  folder (Minari 0.5's HDF5 storage: ``<dataset>/data/main_data.hdf5`` with a group ``episode_<i>``
  of those fields per episode, and ``<dataset>/data/metadata.json``), which ``minari.load_dataset``
  opens. :func:`load_dataset` reads both, Minari folders written by Minari itself (a ``Dict`` or
  ``Tuple`` observation is flattened, its parts concatenated in key order), a folder of
  ``episode_<i>/<field>.npy`` files, and D4RL's flat arrays (``observations``, ``actions``,
  ``rewards``, ``terminals``/``terminations``, ``timeouts``/``truncations``, optionally
  ``next_observations``; in an ``.npz`` or D4RL's ``.hdf5``), and names the episode and field of any
  malformed one.
- Training windows (:class:`TrajectoryWindows`): ``K`` consecutive steps starting anywhere in the
  data (episodes weighted by length, as in the paper's code), with the undiscounted returns-to-go
  ``R̂_t = Σ_{t'≥t} r_t'`` (:func:`returns_to_go`), padded on the right (so causal attention never
  sees the padding) and masked.
"""

from __future__ import annotations

import functools
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

ENVIRONMENTS: tuple[str, ...] = ("CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarSparse-v0")
POLICIES: tuple[str, ...] = ("random", "scripted", "expert", "noisy")
FIELDS: tuple[str, ...] = ("observations", "actions", "rewards", "terminations", "truncations")
FORMAT = "tatlas.offline_rl"
FORMAT_VERSION = 1
MINARI_VERSION = "0.5.4"  # the Minari layout written (one of ``minari.supported_dataset_versions``)
MINARI_FILE = "main_data.hdf5"
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

    def save(self, path: str | Path, *, dataset_id: str | None = None) -> Path:
        """Write the dataset where :func:`dataset_layout` says: one ``.npz`` (``episode_<i>/<field>``
        members and a ``metadata`` JSON string), or a Minari dataset folder ``path/data/`` holding
        ``main_data.hdf5`` and ``metadata.json`` (:func:`save_minari`; ``dataset_id`` defaults to the
        folder's name). Returns the file or folder written."""
        path = Path(path)
        if dataset_layout(path, dataset_id) == "minari":
            return save_minari(self, path, dataset_id or path.name)
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


def dataset_layout(path: str | Path, dataset_id: str | None = None) -> str:
    """How :meth:`OfflineDataset.save` writes ``path``: ``"npz"`` for a name ending in ``.npz``,
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


# ---------------------------------------------------------------------- Minari's HDF5 layout


def _minari_action_space(space: ActionSpace) -> dict[str, Any]:
    """``space`` as ``minari.serialization.serialize_space`` writes gymnasium's Discrete and Box."""
    if space.discrete:
        return {"type": "Discrete", "dtype": "int64", "start": 0, "n": space.n}
    return {"type": "Box", "dtype": "float32", "shape": [space.dim], "low": list(space.low), "high": list(space.high)}


def _minari_env_facts(env_id: str | None, state_dim: int) -> tuple[dict[str, Any], str | None]:
    """The serialised observation space (the environment's, when it is a Box of ``state_dim``;
    else an unbounded float32 Box) and the environment's ``EnvSpec`` JSON (``None`` if unknown)."""
    import gymnasium as gym

    obs: dict[str, Any] = {"type": "Box", "dtype": "float32", "shape": [state_dim],
                           "low": [-math.inf] * state_dim, "high": [math.inf] * state_dim}
    if env_id is None:
        return obs, None
    try:
        env = make_env(env_id)
    except ValueError:
        return obs, None
    try:
        space = env.observation_space
        if isinstance(space, gym.spaces.Box) and space.shape == (state_dim,):
            obs = {"type": "Box", "dtype": str(space.dtype), "shape": [state_dim], "low": space.low.tolist(),
                   "high": space.high.tolist()}
        try:
            spec = env.spec.to_json() if env.spec is not None else None
        except (TypeError, ValueError):  # kwargs that JSON cannot hold: Minari too saves no spec then
            spec = None
        return obs, spec
    finally:
        env.close()


def save_minari(data: OfflineDataset, path: str | Path, dataset_id: str) -> Path:
    """Write ``data`` as a Minari dataset folder (Minari 0.5's HDF5 storage): ``path/data/main_data.hdf5``
    with a group ``episode_<i>`` per episode (the five fields; attributes ``id``, ``total_steps`` and
    ``policy``) and ``path/data/metadata.json`` (``dataset_id``, ``minari_version``, ``data_format``,
    the serialised spaces, the environment's ``env_spec``, and our own metadata under ``"tatlas"``).
    With ``path = $MINARI_DATASETS_PATH/<dataset_id>``, ``minari.load_dataset(dataset_id)`` opens it.
    Existing files are replaced (each written to a temporary name first)."""
    import h5py

    path = Path(path)
    if not _MINARI_ID.match(dataset_id):
        raise ValueError(f"dataset_id: expected Minari's (NAMESPACE/)NAME-v<VERSION>, got {dataset_id!r}")
    folder = path / "data"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MINARI_FILE + ".tmp")
    with h5py.File(tmp, "w", track_order=True) as f:
        for i, e in enumerate(data.episodes):
            group = f.create_group(f"episode_{i}")
            group.attrs["id"] = i
            group.attrs["total_steps"] = len(e)
            if e.policy:
                group.attrs["policy"] = e.policy
            for name in FIELDS:
                group.create_dataset(name, data=getattr(e, name))
    tmp.replace(folder / MINARI_FILE)
    obs_space, env_spec = _minari_env_facts(data.env_id, data.state_dim)
    meta: dict[str, Any] = {
        "dataset_id": dataset_id, "minari_version": MINARI_VERSION, "data_format": "hdf5", "jpeg_encoding": False,
        "total_episodes": len(data.episodes), "total_steps": data.total_steps,
        "dataset_size": round((folder / MINARI_FILE).stat().st_size / 1e6, 1),
        "observation_space": json.dumps(obs_space), "action_space": json.dumps(_minari_action_space(data.action_space)),
        "algorithm_name": "tatlas.data.offline_rl.collect" if "policy_mix" in data.info else "tatlas",
        "description": describe(data), "tatlas": data.metadata(),
    }
    if env_spec is not None:
        meta["env_spec"] = env_spec
    tmp = folder / "metadata.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(folder / "metadata.json")
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
    """Read a dataset saved by :meth:`OfflineDataset.save`: an ``.npz``, or a Minari dataset (its
    folder, the folder's ``data/``, or ``main_data.hdf5``; written by tatlas or by Minari); a folder
    of ``episode_<i>/<field>.npy`` (with an optional ``metadata.json``), or D4RL's flat arrays in an
    ``.npz`` or an ``.hdf5`` file. Errors name the file, the episode and the field."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty")
    minari = _minari_location(path)
    if minari is not None:
        return _load_minari(*minari)
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


def _load_episodes(path: Path, members: _Members, found: dict[int, dict[str, str]], meta: Mapping[str, Any]) -> OfflineDataset:
    indices = sorted(found)
    _check_numbering(path, indices)
    space = _space_from_meta(path, meta)
    policies = list(meta.get("episode_policies") or [])
    entries = []
    for i in indices:
        names = found[i]
        arrays = {k: members.get(names[k]) for k in FIELDS if k in names}
        entries.append((f"{path}: episode_{i}", arrays, str(policies[i]) if i < len(policies) else ""))
    info = {k: v for k, v in meta.items() if k in ("policy_mix", "seed", "noise")}
    return _assemble(entries, space, meta.get("env_id"), info)


def _minari_location(path: Path) -> tuple[Path, Path] | None:
    """``(data folder, main_data.hdf5)`` when ``path`` is a Minari dataset folder, its ``data/``
    folder, or an ``.hdf5`` file; ``None`` for anything else."""
    if path.is_file():
        return (path.parent, path) if path.suffix in (".hdf5", ".h5") else None
    for folder in (path, path / "data"):
        if (folder / MINARI_FILE).is_file():
            return folder, folder / MINARI_FILE
        try:  # Minari's metadata without its HDF5 file: another storage, or a broken copy
            if "data_format" in json.loads((folder / "metadata.json").read_text()):
                return folder, folder / MINARI_FILE
        except (OSError, ValueError, TypeError):
            pass
    return None


def _minari_action_space_of(where: str, meta: Mapping[str, Any]) -> ActionSpace | None:
    """The action space of Minari's metadata (a JSON string of ``serialize_space``); ``None`` when
    absent or a Box with unbounded dims (then it comes from the environment or the data)."""
    if "action_space" not in meta:
        return None
    try:
        d = json.loads(meta["action_space"]) if isinstance(meta["action_space"], str) else dict(meta["action_space"])
        kind = d["type"]
        if kind == "Discrete":
            if int(d.get("start", 0)) != 0:
                raise DatasetError(f"{where}: field 'action_space' is Discrete(n={d['n']}, start={d['start']}); "
                                   f"tatlas reads discrete actions numbered from 0")
            return ActionSpace(discrete=True, n=int(d["n"]))
        if kind == "Box":
            if len(d["shape"]) != 1:
                raise DatasetError(f"{where}: field 'action_space' is a Box of shape {d['shape']}; tatlas reads 1-D boxes")
            low = np.broadcast_to(np.asarray(d["low"], np.float64), d["shape"])
            high = np.broadcast_to(np.asarray(d["high"], np.float64), d["shape"])
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                return None
            return ActionSpace(discrete=False, low=tuple(map(float, low)), high=tuple(map(float, high)))
    except DatasetError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{where}: field 'action_space' is malformed ({e})") from None
    raise DatasetError(f"{where}: field 'action_space' is a {kind} space; tatlas reads Discrete and 1-D Box actions")


def _minari_env_id(where: str, meta: Mapping[str, Any]) -> str | None:
    spec = meta.get("env_spec")
    if spec is None:
        return None
    try:
        env_id = (json.loads(spec) if isinstance(spec, str) else spec)["id"]
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{where}: field 'env_spec' is malformed ({e})") from None
    return str(env_id)


def _read_h5(node: Any, where: str, name: str) -> np.ndarray:
    """One field of an episode group: a dataset, or (observations only) a group of a Dict or Tuple
    space, flattened: its leaves ``[T + 1, *]`` concatenated in key order (a Tuple's ``_index_<i>``
    in index order)."""
    import h5py

    if isinstance(node, h5py.Dataset):
        return node[()]
    if name != "observations":
        raise DatasetError(f"{where}: field {name!r} is a group ({', '.join(node)}) of a Dict or Tuple space; "
                           f"tatlas reads {name} as one array")
    leaves: list[tuple[str, np.ndarray]] = []

    def walk(group: Any, prefix: str) -> None:
        keys = sorted(group, key=lambda k: (0, int(k[7:]), k) if re.fullmatch(r"_index_\d+", k) else (1, 0, k))
        for key in keys:
            child = group[key]
            if isinstance(child, h5py.Group):
                walk(child, f"{prefix}/{key}")
            else:
                leaves.append((f"{prefix}/{key}", child[()]))

    walk(node, name)
    if not leaves:
        raise DatasetError(f"{where}: field {name!r} is an empty group")
    rows = len(leaves[0][1]) if np.ndim(leaves[0][1]) else 0
    parts = []
    for field_name, value in leaves:
        if np.ndim(value) == 0 or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise DatasetError(f"{where}: field {field_name!r} must be a numeric array [T + 1, ...], got "
                               f"{value.dtype} {list(np.shape(value))}")
        if len(value) != rows:
            raise DatasetError(f"{where}: field {field_name!r} has {len(value)} rows, {leaves[0][0]!r} {rows}")
        parts.append(value.reshape(rows, -1).astype(np.float64))
    return np.concatenate(parts, axis=1)


class _H5Arrays:
    """The top-level arrays of an open HDF5 file by name, as :class:`_Members` gives them (D4RL's
    files hold ``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts`` there)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.names = [k for k in f if hasattr(f[k], "shape")]

    def get(self, name: str) -> np.ndarray:
        return self.f[name][()]


def _load_minari(folder: Path, file: Path) -> OfflineDataset:
    """A Minari dataset in HDF5 storage: ``metadata.json`` (optional here) and ``main_data.hdf5``;
    or an HDF5 file of D4RL's flat arrays (:func:`_load_flat`)."""
    import h5py

    meta_path = folder / "metadata.json"
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as e:
            raise DatasetError(f"{meta_path}: not JSON ({e})") from None
        if not isinstance(meta, dict):
            raise DatasetError(f"{meta_path}: expected a JSON object")
    fmt = meta.get("data_format", "hdf5")
    if fmt != "hdf5":
        raise DatasetError(f"{meta_path}: field 'data_format' is {fmt!r}; tatlas reads Minari's 'hdf5' storage")
    if not file.is_file():
        raise DatasetError(f"{folder}: no {MINARI_FILE} (Minari's HDF5 storage)")
    if file.stat().st_size == 0:
        raise DatasetError(f"{file}: the file is empty")
    own = meta.get("tatlas") if isinstance(meta.get("tatlas"), dict) else {}
    space = _space_from_meta(meta_path, own) or _minari_action_space_of(str(meta_path), meta)
    env_id = own.get("env_id") or _minari_env_id(str(meta_path), meta)
    policies = list(own.get("episode_policies") or [])
    try:
        f = h5py.File(file, "r")
    except OSError as e:
        raise DatasetError(f"{file}: not a readable HDF5 file ({e})") from None
    with f:
        if "rewards" in f and not isinstance(f["rewards"], h5py.Group):  # D4RL's own HDF5 file: flat arrays
            return _load_flat(file, _H5Arrays(f), meta)
        index: dict[int, str] = {}
        for name in f:
            m = re.fullmatch(r"episode_(\d+)", name)
            if m is None:
                raise DatasetError(f"{file}: unexpected entry {name!r} (Minari's file holds only 'episode_<i>' groups)")
            index[int(m.group(1))] = name
        if not index:
            raise DatasetError(f"{file}: no episodes (Minari's file holds 'episode_<i>' groups)")
        _check_numbering(file, sorted(index))
        total = meta.get("total_episodes")
        if total is not None and total != len(index):
            raise DatasetError(f"{meta_path}: field 'total_episodes' is {total}, {file.name} holds {len(index)} episodes")
        entries = []
        for i in sorted(index):
            where, group = f"{file}: episode_{i}", f[index[i]]
            if not isinstance(group, h5py.Group):
                raise DatasetError(f"{where}: expected a group of fields, got a dataset")
            arrays = {k: _read_h5(group[k], where, k) for k in FIELDS if k in group}
            steps, rewards = group.attrs.get("total_steps"), arrays.get("rewards")
            if steps is not None and rewards is not None and np.ndim(rewards) == 1 and int(steps) != len(rewards):
                raise DatasetError(f"{where}: attribute 'total_steps' is {int(steps)}, field 'rewards' has "
                                   f"{len(rewards)} steps")
            policy = group.attrs.get("policy", policies[i] if i < len(policies) else "")
            entries.append((where, arrays, policy.decode() if isinstance(policy, bytes) else str(policy)))
    if space is None and env_id is not None:  # Minari's fallback too: the spaces of the environment
        try:
            env = make_env(env_id)
        except ValueError:
            env = None
        if env is not None:
            try:
                space = ActionSpace.of_env(env)
            except ValueError:
                space = None
            finally:
                env.close()
    info = {k: v for k, v in own.items() if k in ("policy_mix", "seed", "noise")}
    return _assemble(entries, space, env_id, info)


def _load_flat(path: Path, members: _Members | _H5Arrays, meta: Mapping[str, Any]) -> OfflineDataset:
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
    "ENVIRONMENTS", "FIELDS", "MINARI_VERSION", "POLICIES", "ActionSpace", "DatasetError", "Episode", "OfflineDataset",
    "TrajectoryWindows", "collect", "dataset_layout", "describe", "load_dataset", "make_env", "max_episode_steps",
    "parse_mix", "returns_to_go", "save_minari", "sparse_mountain_car",
]

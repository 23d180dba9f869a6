"""Minari dataset folders in Minari 0.5's HDF5 storage: :func:`save_minari` writes them (and
``minari.load_dataset`` opens what it writes); :func:`_load_minari` reads them, written by tatlas or
by Minari itself.

Layout: ``<dataset>/data/main_data.hdf5`` holds a group ``episode_<i>`` per episode with the five
fields of :class:`~.dataset.Episode` (a ``Dict`` or ``Tuple`` observation is a group of groups,
read flattened: its parts concatenated in key order), and ``<dataset>/data/metadata.json`` holds
Minari's facts (``dataset_id``, ``minari_version``, ``data_format``, the serialised spaces, the
environment's ``env_spec``) and our own metadata under ``"tatlas"``. An ``.hdf5`` file of D4RL's
flat arrays is handed to :func:`~.d4rl._load_flat`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .d4rl import _H5Arrays, _load_flat
from .dataset import (
    _MINARI_ID,
    FIELDS,
    ActionSpace,
    DatasetError,
    OfflineDataset,
    _assemble,
    _check_numbering,
    _space_from_meta,
    describe,
)
from .envs import make_env

MINARI_VERSION = "0.5.4"  # the Minari layout written (one of ``minari.supported_dataset_versions``)
MINARI_FILE = "main_data.hdf5"


# ---------------------------------------------------------------------- writing


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


# ---------------------------------------------------------------------- reading


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
    if not isinstance(node, h5py.Group):  # a named datatype (or a corrupt link): no values to read
        raise DatasetError(f"{where}: field {name!r} is a {type(node).__name__}, not an array")
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
            elif not isinstance(child, h5py.Dataset):
                raise DatasetError(f"{where}: field {prefix}/{key} is a {type(child).__name__}, not an array")
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

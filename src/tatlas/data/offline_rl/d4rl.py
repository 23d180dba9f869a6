"""Datasets stored as named arrays: D4RL's flat arrays (``observations``, ``actions``,
``rewards``, ``terminals``/``terminations``, ``timeouts``/``truncations``, optionally
``next_observations``; one row per step) in an ``.npz`` or D4RL's ``.hdf5``, and the per-episode
layout ``episode_<i>/<field>`` in the ``.npz`` that :func:`~.load.save_dataset` writes or
in a folder of ``episode_<i>/<field>.npy`` files. Both are read through one view of the arrays by
name (:class:`_Members`, :class:`_H5Arrays`) and one metadata reader (:func:`_load_arrays`).
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...io.arrays import load_numpy
from .dataset import (
    FIELDS,
    DatasetError,
    OfflineDataset,
    _assemble,
    _check_episode,
    _check_numbering,
    _infer_space,
    _space_from_meta,
)


class _Members:
    """The arrays of an ``.npz`` file or of a folder of ``.npy`` files, by name (``a/b`` for ``a/b.npy``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            self.names = sorted(str(p.relative_to(path).with_suffix("")) for p in path.rglob("*.npy"))
            self._npz = None
        else:
            self._npz = load_numpy(path, DatasetError)
            if not isinstance(self._npz, np.lib.npyio.NpzFile):
                raise DatasetError(f"{path}: holds one bare array, not the named fields of a dataset")
            self.names = list(self._npz.files)

    def get(self, name: str) -> np.ndarray:
        try:
            if self._npz is not None:
                return self._npz[name]
            return load_numpy(self.path / f"{name}.npy", DatasetError)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,  # zlib: a corrupt compressed member
                NotImplementedError, RuntimeError) as e:  # zipfile: an unknown zip version, an "encrypted" flag
            if isinstance(e, DatasetError):
                raise
            raise DatasetError(f"{self.path}: field {name!r} is unreadable ({' '.join(str(e).split())})") from None

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()


class _H5Arrays:
    """The top-level arrays of an open HDF5 file by name, as :class:`_Members` gives them (D4RL's
    files hold ``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts`` there)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.names = [k for k in f if hasattr(f[k], "shape")]

    def get(self, name: str) -> np.ndarray:
        return self.f[name][()]


_EPISODE = re.compile(r"episode_(\d+)/(\w+)\Z")


def _load_arrays(path: Path) -> OfflineDataset:
    """An ``.npz`` or a folder of ``.npy`` files (:class:`_Members`): the ``episode_<i>/<field>``
    layout (:func:`_load_episodes`, with a ``metadata`` member or a ``metadata.json`` beside the
    folder's arrays) or D4RL's flat arrays (:func:`_load_flat`)."""
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


def _save_npz(data: OfflineDataset, path: Path) -> Path:
    """One ``.npz``: ``episode_<i>/<field>`` members and a ``metadata`` JSON string, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"metadata": np.array(json.dumps(data.metadata()))}
    for i, e in enumerate(data.episodes):
        for name in FIELDS:
            arrays[f"episode_{i}/{name}"] = getattr(e, name)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)
    return path

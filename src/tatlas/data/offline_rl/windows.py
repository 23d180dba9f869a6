"""Training windows for Decision Transformer (Chen et al. 2021, §3): ``K`` consecutive steps
starting anywhere in the data (episodes weighted by length, as in the paper's code), with the
undiscounted returns-to-go ``R̂_t = Σ_{t'≥t} r_t'`` (:func:`returns_to_go`), padded on the right
(so causal attention never sees the padding) and masked."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .dataset import OfflineDataset


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

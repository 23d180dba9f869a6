"""scikit-learn's bundled handwritten digits (no download): 1,797 images of 8x8 pixels, 0-9.

The images come from :func:`sklearn.datasets.load_digits` (UCI optical recognition of
handwritten digits, 16 grey levels), scaled to [0, 1] and optionally upsampled. The split is
a seeded permutation of all images: the first 80 % train, the rest test.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

DIGIT_SPLITS: tuple[str, ...] = ("train", "test")
TRAIN_FRACTION = 0.8
_MODES = ("nearest", "bilinear")


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # imported on first use: no import-time cost

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # [1797, 8, 8] in [0, 1]
    labels = bunch.target.astype(np.int64)  # [1797]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_indices(split: str, seed: int = 0) -> np.ndarray:
    """Indices (into the 1,797 digits) of ``split`` under the permutation drawn with ``seed``."""
    if split not in DIGIT_SPLITS:
        raise ValueError(f"split: expected one of {DIGIT_SPLITS}, got {split!r}")
    n = len(_digits()[1])
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(round(TRAIN_FRACTION * n))
    return np.sort(perm[:cut] if split == "train" else perm[cut:])


class DigitsDataset(Dataset):
    """Handwritten digits. ``size`` (>= 8) is the output side; above 8 the images are upsampled
    with ``mode`` ("nearest" or "bilinear", via ``F.interpolate``).

    Sample: ``{"image": float32 [1, size, size] in [0, 1], "label": int in 0..9}``.
    ``indices`` holds the source index of every sample (train and test are disjoint and together
    cover all 1,797 images for a given ``seed``).
    """

    num_classes = 10

    def __init__(self, split: str = "train", size: int = 8, seed: int = 0, *, mode: str = "nearest") -> None:
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size: expected an int >= 8, got {size!r}")
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        self.indices = split_indices(split, seed)
        images, labels = _digits()
        x = torch.from_numpy(images[self.indices].copy())[:, None]  # (N, 1, 8, 8)
        if size != 8:
            kwargs = {"align_corners": False} if mode == "bilinear" else {}
            x = F.interpolate(x, size=(size, size), mode=mode, **kwargs).clamp_(0.0, 1.0)
        self.images = x  # (N, 1, size, size)
        self.labels = torch.from_numpy(labels[self.indices].copy())  # (N,)
        self.split, self.size, self.seed, self.mode = split, size, seed, mode

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"image": self.images[index], "label": int(self.labels[index])}

"""An endless, deterministic, resumable order over a map-style dataset.

Epoch ``e`` is ``torch.randperm(len(dataset))`` drawn from a generator seeded by ``(seed, e)``, so
the order is a pure function of the seed and the position: nothing about it lives in a global RNG,
and a checkpoint needs to store one integer, the number of global batches already consumed.

Each epoch is cut into ``len(dataset) // batch_size`` global batches; the last
``len(dataset) % batch_size`` samples of each permutation are dropped (``drop_last``), so a batch
never holds a sample twice. A global batch is split into equal, contiguous rank shards
(``batch_size // world_size`` samples each) and each shard into ``grad_accum`` micro-batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s permutation (distinct per (seed, epoch), within int64)."""
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


class InfiniteBatchSampler:
    """A ``batch_sampler`` for :class:`torch.utils.data.DataLoader` that never ends.

    Yields this rank's micro-batches (lists of dataset indices), ``grad_accum`` per global batch,
    starting at global batch ``start`` (the resume position).
    """

    def __init__(
        self, dataset_len: int, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
        grad_accum: int = 1, start: int = 0,
    ) -> None:
        if dataset_len <= 0:
            raise ValueError(f"the training dataset is empty (expected at least batch_size={batch_size} samples)")
        if batch_size > dataset_len:
            raise ValueError(
                f"batch_size={batch_size} is larger than the dataset ({dataset_len} samples); "
                "batches never repeat a sample (drop_last), so use batch_size <= len(dataset)"
            )
        if batch_size % (world_size * grad_accum):
            raise ValueError(
                f"batch_size={batch_size} must be divisible by world_size * grad_accum "
                f"= {world_size} * {grad_accum}"
            )
        self.dataset_len, self.batch_size, self.seed = dataset_len, batch_size, seed
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.start = start

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset_len // self.batch_size

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // (self.world_size * self.grad_accum)

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.dataset_len, generator=g)

    def global_batch(self, index: int) -> torch.Tensor:
        """Dataset indices of global batch ``index`` (all ranks): ``[batch_size]``."""
        epoch, b = divmod(index, self.batches_per_epoch)
        return self.permutation(epoch)[b * self.batch_size:(b + 1) * self.batch_size]

    def position(self, batches: int) -> dict[str, int]:
        """The checkpointed data position after ``batches`` global batches."""
        epoch, b = divmod(batches, self.batches_per_epoch)
        return {"batches": batches, "epoch": epoch, "batch_in_epoch": b,
                "dataset_len": self.dataset_len, "batch_size": self.batch_size}

    def __iter__(self) -> Iterator[list[int]]:
        per_rank, micro = self.batch_size // self.world_size, self.micro_batch_size
        index, cached_epoch, perm = self.start, -1, torch.empty(0, dtype=torch.long)
        while True:
            epoch, b = divmod(index, self.batches_per_epoch)
            if epoch != cached_epoch:
                perm, cached_epoch = self.permutation(epoch), epoch
            shard = perm[b * self.batch_size:(b + 1) * self.batch_size][self.rank * per_rank:(self.rank + 1) * per_rank]
            for m in range(self.grad_accum):
                yield shard[m * micro:(m + 1) * micro].tolist()
            index += 1

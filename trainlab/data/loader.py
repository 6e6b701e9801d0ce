"""A data loader for data sets that fit in device memory (airbench style).

The whole split lives on the training device as two tensors; a batch is one ``index_select``
and augmentation runs on the whole batch at once. For MNIST- and CIFAR-sized sets this removes
the per-sample Python work and host-to-device copies that dominate a ``torch.utils.data``
pipeline on small images.

    loader = TensorLoader(x.to(device), y.to(device), batch_size=128, transform=augment, seed=cfg["seed"])
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)          # a resumed run sees exactly the same batches
        for xb, yb in loader:
            ...

Data-parallel training gives each rank ``rank`` and ``world_size``: every rank draws the same
global batch order and takes its share of each batch (:func:`shard`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

Transform = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed that is a pure function of (seed, epoch).

    SeedSequence hashes the pair, so neighbouring seeds or epochs do not give correlated streams
    (as ``seed + epoch`` would: seed 1 epoch 0 would replay seed 0 epoch 1).
    """
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def shard(indices, rank: int, world_size: int):
    """Rank ``rank``'s share of one global batch ``indices`` (any sliceable sequence: a tensor of
    sample indices, a range, the rows of a batch).

    Every rank draws the same global batch (same seed, same epoch) and takes the ``rank``-th of
    ``world_size`` contiguous blocks; block sizes differ by at most one, the first ``len % W``
    blocks being the larger::

        n = len(indices);  lo_r = r·⌊n/W⌋ + min(r, n mod W);  share_r = indices[lo_r : lo_{r+1}]

    The shares partition the batch, so the union over ranks is exactly what one process would
    train on. This is the one definition of sharding: the in-memory and the streaming loaders
    both use it.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(len(indices), world_size)
    lo = rank * base + min(rank, extra)
    return indices[lo:lo + base + (rank < extra)]


class TensorLoader:
    """Yields ``(xb, yb)`` batches of tensors kept on their device, optionally transformed.

    The order of an epoch, and the random stream handed to ``transform(xb, yb, generator)``,
    depend only on (seed, epoch). Call :meth:`set_epoch` before each epoch to pin the epoch
    number (needed to resume); without it, each new pass uses the next epoch number, so plain
    repeated iteration still reshuffles.

    With ``world_size`` > 1 it yields this rank's :func:`shard` of each global batch of
    ``batch_size``. The transform runs on the whole global batch before sharding, so a sample
    gets the same augmentation (and mixup partner) whichever rank trains on it, as in one
    process; each rank pays for transforming the global batch. A last batch smaller than
    ``world_size`` is dropped (some rank would have no sample).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        transform: Transform | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        if x.device != y.device:
            raise ValueError(f"x is on {x.device} but y is on {y.device}; move both to the training device")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than world_size {world_size}: "
                             "every rank needs at least one sample of each global batch")
        shard(range(world_size), rank, world_size)  # validates rank
        self.rank, self.world_size = int(rank), int(world_size)
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self.seed = int(seed)
        self._epoch = 0
        # A generator on the data's device, so permutations and augmentation noise are drawn
        # where the data lives, without a host round trip.
        self.generator = torch.Generator(device=x.device)

    @property
    def num_samples(self) -> int:
        """Samples in the split (including those a ``drop_last`` epoch leaves out)."""
        return len(self.x)

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last or self.num_samples % self.batch_size < self.world_size:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use epoch number ``epoch`` (order and transform randomness)."""
        self._epoch = int(epoch)

    def _order(self) -> Tensor | None:
        """The sample order of this epoch; None means the natural order (cheap slicing)."""
        if not self.shuffle:
            return None
        return torch.randperm(self.num_samples, generator=self.generator, device=self.x.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.generator.manual_seed(epoch_seed(self.seed, self._epoch))
        self._epoch += 1  # the next pass reshuffles unless set_epoch pins it
        order = self._order()
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.num_samples)
            rows = range(lo, hi)
            if self.transform is None:  # only this rank's samples are gathered at all
                rows = shard(rows, self.rank, self.world_size)
            if order is None:
                xb, yb = self.x[rows.start:rows.stop], self.y[rows.start:rows.stop]
            else:
                idx = order[rows.start:rows.stop]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.transform is not None:
                xb, yb = self.transform(xb, yb, self.generator)
                xb, yb = shard(xb, self.rank, self.world_size), shard(yb, self.rank, self.world_size)
            yield xb, yb

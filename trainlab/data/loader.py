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


def epoch_order(num_samples: int, generator: torch.Generator, shuffle: bool = True) -> Tensor | None:
    """The sample order of one epoch, drawn first from the freshly seeded ``generator`` (on its
    device); None means the natural order. Every loader uses this one function, so the in-memory
    and streaming paths visit the same samples in the same order for the same (seed, epoch)."""
    if not shuffle:
        return None
    return torch.randperm(num_samples, generator=generator, device=generator.device)


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


class SeededBatches:
    """What every trainlab loader shares: batch ``b`` of epoch ``e`` and the randomness handed to
    the batched augmentation are a pure function of (seed, e, b), and the position can be saved
    and restored between any two batches.

    One generator (on the training device) is seeded with :func:`epoch_seed` at the start of an
    epoch, draws the order (:func:`epoch_order`), then feeds ``transform(xb, yb, generator)``
    batch after batch. :meth:`state_dict` records the epoch, the batches already handed out and
    the generator's state after the last of them; after :meth:`load_state_dict` the next pass
    over that epoch redraws the order, restores the generator and starts at that batch, so a
    resumed run sees exactly the batches the uninterrupted one would have, and the batches
    already consumed are never read again.

    With ``world_size`` > 1 the batches are global: a loader yields rank ``rank``'s :func:`shard`
    of each. A last batch smaller than ``world_size`` is dropped (some rank would have no sample).
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, drop_last: bool,
                 transform: Transform | None, seed: int, device: torch.device | str, rank: int = 0,
                 world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than world_size {world_size}: "
                             "every rank needs at least one sample of each global batch")
        shard(range(world_size), rank, world_size)  # validates rank
        self.rank, self.world_size = int(rank), int(world_size)
        self._num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self.seed = int(seed)
        self._epoch = 0  # the epoch the next pass uses
        self._current, self._batch = 0, 0  # the epoch being (or last) iterated, batches handed out
        self._resume: dict | None = None
        self._started = False
        # A generator on the data's device, so permutations and augmentation noise are drawn
        # where the data lives, without a host round trip.
        self.generator = torch.Generator(device=device)

    @property
    def num_samples(self) -> int:
        """Samples in the split (including those a ``drop_last`` epoch leaves out)."""
        return self._num_samples

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last or self.num_samples % self.batch_size < self.world_size:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use epoch number ``epoch`` (order and transform randomness)."""
        self._epoch = int(epoch)

    def state_dict(self) -> dict:
        """The position between two batches: ``{"epoch", "batch", "generator"}``; empty before
        the first pass (nothing to continue: the first epoch starts from its seed)."""
        if not self._started:
            return {}
        return {"epoch": self._current, "batch": self._batch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` the next time its epoch is iterated."""
        self._resume = dict(state) if state else None

    def _start_epoch(self) -> tuple[Tensor | None, int]:
        """Seed the generator and draw the order for this pass; returns (order, first batch)."""
        epoch, self._epoch = self._epoch, self._epoch + 1  # the next pass reshuffles unless set_epoch pins it
        self.generator.manual_seed(epoch_seed(self.seed, epoch))
        order = epoch_order(self.num_samples, self.generator, self.shuffle)
        resume, self._resume = self._resume, None
        start = 0
        if resume is not None and int(resume["epoch"]) == epoch:
            self.generator.set_state(resume["generator"])
            start = int(resume["batch"])
        self._current, self._batch, self._started = epoch, start, True
        return order, start

    def _bounds(self, b: int) -> tuple[int, int]:
        return b * self.batch_size, min((b + 1) * self.batch_size, self.num_samples)

    def _finish(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """The batched augmentation, on the device, then count the batch as handed out."""
        if self.transform is not None:
            xb, yb = self.transform(xb, yb, self.generator)
        self._batch += 1
        return xb, yb


class TensorLoader(SeededBatches):
    """Yields ``(xb, yb)`` batches of tensors kept on their device, optionally transformed.

    The order of an epoch, and the random stream handed to ``transform(xb, yb, generator)``,
    depend only on (seed, epoch). Call :meth:`set_epoch` before each epoch to pin the epoch
    number (needed to resume); without it, each new pass uses the next epoch number, so plain
    repeated iteration still reshuffles.

    With ``world_size`` > 1 it yields this rank's :func:`shard` of each global batch of
    ``batch_size``. The transform runs on the whole global batch before sharding, so a sample
    gets the same augmentation (and mixup partner) whichever rank trains on it, as in one
    process; each rank pays for transforming the global batch.
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
        super().__init__(len(x), batch_size, shuffle, drop_last, transform, seed, x.device, rank, world_size)
        self.x, self.y = x, y

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order, start = self._start_epoch()
        for b in range(start, len(self)):
            rows = range(*self._bounds(b))
            if self.transform is None:  # only this rank's samples are gathered at all
                rows = shard(rows, self.rank, self.world_size)
            if order is None:
                xb, yb = self.x[rows.start:rows.stop], self.y[rows.start:rows.stop]  # cheap slicing
            else:
                idx = order[rows.start:rows.stop]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            xb, yb = self._finish(xb, yb)
            if self.transform is not None:
                xb, yb = shard(xb, self.rank, self.world_size), shard(yb, self.rank, self.world_size)
            yield xb, yb

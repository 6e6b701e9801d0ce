"""Seeded, stratified index selection: validation splits and smaller training sets.

Every function returns sorted index tensors (on ``y``'s device) so that the kept samples stay in
their original order; the loader shuffles later. Stratified means each class keeps its share,
which matters most on small or imbalanced sets, where a plain random split can leave a class out
of validation altogether.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _grouped_by_class(y: Tensor, seed: int) -> tuple[Tensor, list[int], list[int]]:
    """Indices of ``y`` grouped by class, shuffled within each class by ``seed``.

    Returns (indices, counts, starts): class c's samples are indices[starts[c]:starts[c]+counts[c]].
    One seeded permutation followed by a stable sort on the label does the grouping without a
    Python loop over samples.
    """
    labels = y.detach().to("cpu", torch.int64)
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(labels), generator=generator)
    order = torch.sort(labels[perm], stable=True).indices
    grouped = perm[order]
    counts = torch.bincount(labels).tolist()
    starts, total = [], 0
    for c in counts:
        starts.append(total)
        total += c
    return grouped, counts, starts


def _take(y: Tensor, grouped: Tensor, starts: list[int], sizes: list[int]) -> Tensor:
    """The first ``sizes[c]`` shuffled samples of every class c, sorted, on ``y``'s device."""
    parts = [grouped[s : s + k] for s, k in zip(starts, sizes) if k > 0]
    taken = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
    return torch.sort(taken).values.to(y.device)


def _complement(n: int, taken: Tensor) -> Tensor:
    """Sorted indices in range(n) that are not in ``taken``."""
    mask = torch.ones(n, dtype=torch.bool, device=taken.device)
    mask[taken] = False
    return torch.nonzero(mask).flatten()


def stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices into (keep_idx, split_idx) with ``fraction`` of every class in split_idx.

    Class c with n_c samples gives round(fraction * n_c) to the split, at least 1 when n_c > 1 and
    fraction > 0 (so every class is seen in validation), and never all of them (so every class
    is still trained on).
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    grouped, counts, starts = _grouped_by_class(y, seed)
    sizes = []
    for n in counts:
        k = round(fraction * n)
        if n > 1 and fraction > 0:
            k = min(max(k, 1), n - 1)
        elif n == 1:
            k = 0
        sizes.append(k)
    split_idx = _take(y, grouped, starts, sizes)
    return _complement(len(y), split_idx), split_idx


def stratified_subset(y: Tensor, n: int, seed: int) -> Tensor:
    """Indices of ``n`` samples (all of them if n >= len(y)) keeping the class proportions.

    Each class gets floor(n * n_c / N), and the samples left over go to the classes with the
    largest remainders (largest-remainder rounding), so the total is exactly ``n``.
    """
    total = len(y)
    if n >= total:
        return torch.arange(total, device=y.device)
    grouped, counts, starts = _grouped_by_class(y, seed)
    quotas = [n * c / total for c in counts]
    sizes = [int(q) for q in quotas]
    by_remainder = sorted(range(len(counts)), key=lambda c: (sizes[c] - quotas[c], c))
    for c in by_remainder[: n - sum(sizes)]:
        sizes[c] += 1
    return _take(y, grouped, starts, sizes)


def per_class_subset(y: Tensor, k: int, seed: int) -> Tensor:
    """Indices of ``k`` random samples of every class (all of a class that has fewer)."""
    grouped, counts, starts = _grouped_by_class(y, seed)
    return _take(y, grouped, starts, [min(k, c) for c in counts])

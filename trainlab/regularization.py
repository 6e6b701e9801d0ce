"""Regularisation (slides, reference/002): weight penalties in the loss, and the family of
"A common pattern" ("Training: Add random noise" · "Testing: Marginalize over the noise") — inverted dropout, DropConnect, stochastic depth,
fractional max pooling — plus label smoothing.

Every random mask here is drawn with ``torch.rand`` from the global generator, so
``torch.manual_seed`` (trainlab's ``seed``) makes a run repeatable.

    loss = smoothed_cross_entropy(model(x), y, eps=0.1) + weight_penalty(model, cfg["reg"])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.registry import Registry

PENALTIES: Registry = Registry("penalty")


# --- weight penalties: loss = data loss + λ R(W) -------------------------------------------------

@PENALTIES.register("none")
def no_penalty(weights: list[Tensor], strength: float, beta: float) -> Tensor:
    """R(W) = 0."""
    device = weights[0].device if weights else None
    return torch.zeros((), device=device)


@PENALTIES.register("l2")
def l2_penalty(weights: list[Tensor], strength: float, beta: float) -> Tensor:
    """λ R(W) with R(W) = Σ_k Σ_l W_{k,l}² (weight decay, the lecture's L2 regularisation)."""
    return strength * sum((w.pow(2).sum() for w in weights), no_penalty(weights, 0, 0))


@PENALTIES.register("l1")
def l1_penalty(weights: list[Tensor], strength: float, beta: float) -> Tensor:
    """λ R(W) with R(W) = Σ_k Σ_l |W_{k,l}| (L1: pushes weights to exactly zero, sparse W)."""
    return strength * sum((w.abs().sum() for w in weights), no_penalty(weights, 0, 0))


@PENALTIES.register("elastic")
def elastic_penalty(weights: list[Tensor], strength: float, beta: float) -> Tensor:
    """λ R(W) with R(W) = Σ_k Σ_l β W_{k,l}² + |W_{k,l}| (elastic net, L1 + L2)."""
    return strength * sum(((beta * w.pow(2) + w.abs()).sum() for w in weights), no_penalty(weights, 0, 0))


def penalty_weights(model: nn.Module) -> list[Tensor]:
    """The tensors a weight penalty applies to: trainable weights with ≥ 2 dimensions.

    Biases, norm γ/β and PReLU slopes (all 1-D) are left out: they are few, and shrinking them
    towards zero only limits the model (the same rule as the optimiser's no-decay group).
    Frozen weights are left out too: their penalty is a constant that only costs time.
    """
    return [p for p in model.parameters() if p.dim() > 1 and p.requires_grad]


def weight_penalty(model: nn.Module, cfg_reg: dict) -> Tensor:
    """λ R(W) for the penalty named by ``cfg_reg["penalty"]`` over :func:`penalty_weights`."""
    fn = PENALTIES.get(cfg_reg["penalty"])
    return fn(penalty_weights(model), cfg_reg["strength"], cfg_reg["beta"])


# --- noise in training, marginalised at test time ------------------------------------------------

def _check_probability(p: float, what: str) -> float:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{what} probability must be in [0, 1), got {p}")
    return float(p)


class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al. 2014), written out as in the lecture.

    Training: h ← h ⊙ U, U = (rand(h.shape) > p) / (1 − p), so E[h ⊙ U] = h.
    Testing: h unchanged ("test time is unchanged!").

    Note: ``p`` here is the probability of *dropping* a unit (as in ``torch.nn.Dropout`` and
    ``model.dropout``); the lecture's code uses p for the probability of *keeping* it.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = _check_probability(p, "dropout")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = (torch.rand_like(x) > self.p).to(x.dtype) / (1.0 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ChannelDropout(nn.Module):
    """Channel (spatial) dropout for conv layers: drop whole feature maps, not single pixels
    (the lecture: in conv layers "you might drop out entire channels").

    Training: h ← h ⊙ U, U_{n,c} = (rand(N, C) > p) / (1 − p) broadcast over H×W, so one draw
    zeroes (or keeps) an entire channel of one sample and E[h ⊙ U] = h.
    Testing: h unchanged (inverted, like :class:`Dropout`).

    Why channels: neighbouring pixels of a feature map are strongly correlated, so dropping single
    pixels removes little information; dropping the whole map does (Tompson et al. 2015).
    """

    def __init__(self, p: float = 0.1):
        super().__init__()
        self.p = _check_probability(p, "channel dropout")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = x.shape[:2] + (1,) * (x.dim() - 2)
        mask = (torch.rand(shape, device=x.device) > self.p).to(x.dtype) / (1.0 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropConnectLinear(nn.Linear):
    """DropConnect (Wan et al. 2013): drop connections (weights) instead of activations.

    Training: y = x (W ⊙ M)ᵀ + b, M = (rand(W.shape) > p) / (1 − p), so E[W ⊙ M] = W.
    Testing: y = x Wᵀ + b ("use all the connections").

    One mask per forward pass, shared by the minibatch (the paper draws one per example; sharing
    keeps it one matmul). The bias is never dropped.
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.p = _check_probability(p, "DropConnect")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return F.linear(x, self.weight, self.bias)
        mask = (torch.rand_like(self.weight) > self.p).to(self.weight.dtype) / (1.0 - self.p)
        return F.linear(x, self.weight * mask, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


class StochasticDepth(nn.Module):
    """Stochastic depth (Huang et al. 2016) applied to a residual branch's output F(x).

    Training: out = x + F(x) · b / (1 − p), b ~ Bernoulli(1 − p) drawn once per *sample*, so a
    sample either skips the whole branch or keeps it, and E[b / (1 − p)] = 1.
    Testing: every branch is used ("use all the layers"): F(x) unchanged.

    Use it as ``shortcut(x) + StochasticDepth(p)(branch(x))``.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = _check_probability(p, "stochastic depth")

    def forward(self, branch_out: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return branch_out
        shape = (branch_out.shape[0],) + (1,) * (branch_out.dim() - 1)
        keep = (torch.rand(shape, device=branch_out.device) > self.p).to(branch_out.dtype)
        return branch_out * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FractionalMaxPool(nn.FractionalMaxPool2d):
    """Fractional max pooling (Graham 2014): 2x2 max pools over randomised regions that shrink
    each side by 1/√2 instead of 1/2, so twice as many pooling layers fit in a network.

    Training: fresh pseudo-random pooling regions per sample and channel (``nn.FractionalMaxPool2d``).
    Testing: a fixed set of regions, so evaluation is deterministic — the one given by
    ``eval_sample`` u ∈ [0, 1) (the same u for every sample and channel). The lecture's other
    choice, "average predictions from several regions", is :func:`region_sets`: the prediction
    averaged over K fixed sets u_k = (k + ½)/K (``model.fractional_eval_sets``).
    """

    RATIO = 1.0 / math.sqrt(2.0)
    # Any fixed u in [0, 1) gives a valid region layout; the middle one is as good as any.
    EVAL_SAMPLE = 0.5

    def __init__(self, eval_sets: int = 1):
        super().__init__(kernel_size=2, output_ratio=self.RATIO)
        if eval_sets < 1:
            raise ValueError(f"eval_sets must be >= 1, got {eval_sets}")
        self.eval_sets, self.eval_sample = int(eval_sets), self.EVAL_SAMPLE

    @classmethod
    def output_size(cls, size: int) -> int:
        """The side after one pool; less than 1 means the input is too small to pool."""
        return int(size * cls.RATIO)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return super().forward(x)
        n, c = (x.shape[0], x.shape[1]) if x.dim() == 4 else (1, x.shape[0])
        fixed = torch.full((n, c, 2), self.eval_sample, dtype=x.dtype, device=x.device)
        return F.fractional_max_pool2d(x, self.kernel_size, output_ratio=self.output_ratio,
                                       _random_samples=fixed)

    def extra_repr(self) -> str:
        return f"eval_sets={self.eval_sets}"


def region_sets(model: nn.Module):
    """Iterate over the fixed pooling-region sets a model averages at test time.

    Yields once per set k = 0 .. K − 1 with every :class:`FractionalMaxPool` of ``model`` set to
    u_k = (k + ½)/K, K = the largest ``eval_sets`` among them (1, and u = ½, without fractional
    pooling); the prediction averaged over the yields is the lecture's "average predictions from
    several regions". Each pool's own ``eval_sample`` is restored afterwards.
    """
    pools = [m for m in model.modules() if isinstance(m, FractionalMaxPool)]
    sets = max((p.eval_sets for p in pools), default=1)
    saved = [p.eval_sample for p in pools]
    try:
        for k in range(sets):
            for p in pools:
                p.eval_sample = (k + 0.5) / sets if sets > 1 else p.eval_sample
            yield k
    finally:
        for p, u in zip(pools, saved):
            p.eval_sample = u


# --- label smoothing ---------------------------------------------------------------------------

def smoothed_cross_entropy(logits: Tensor, target: Tensor, eps: float = 0.0) -> Tensor:
    """Cross-entropy against smoothed targets (Szegedy et al. 2016), mean over the batch.

    q' = (1 − ε) q + ε / C,   L = −(1/N) Σ_i Σ_c q'_{i,c} log softmax(z_i)_c

    ``target`` is either class indices (N,) — q is one-hot — or class probabilities (N, C), e.g.
    the blended labels of mixup/cutmix.
    """
    if target.dim() == logits.dim():
        target = target.to(logits.dtype)
    return F.cross_entropy(logits, target, label_smoothing=eps)


__all__ = ["PENALTIES", "penalty_weights", "weight_penalty", "Dropout", "ChannelDropout", "DropConnectLinear",
           "StochasticDepth", "FractionalMaxPool", "region_sets", "smoothed_cross_entropy"]

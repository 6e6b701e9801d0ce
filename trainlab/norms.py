"""Normalisation layers (slides, reference/002: batch, layer, instance and group normalisation), found by name.

All of them compute  y = γ (x − μ) / √(σ² + ε) + β  and differ only in the axes μ and σ² are
taken over (x: N × C × H × W, or N × D for vectors):

    batch     μ, σ: 1 × C × 1 × 1  (over N, H, W; running averages at test time)
    layer     μ, σ: N × 1 × 1 × 1  (over C, H, W of each sample; same in train and test)
    instance  μ, σ: N × C × 1 × 1  (over H, W of each sample and channel)
    group     μ, σ: N × G × 1 × 1  (over H, W and the C/G channels of each group)

Every entry of :data:`NORMS` is ``make(num_features, spatial=False, **options) -> nn.Module``
(group norm's option: ``groups``); :func:`create_norm` finds one by name, :func:`make_norm`
reads the name and options from the ``model`` config section.
:func:`fold_batchnorm` fuses a test-time batch norm into the layer before it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from trainlab.errors import UserError
from trainlab.registry import Component, Registry


@dataclass(frozen=True)
class NormInfo(Component):
    def __call__(self, num_features: int, spatial: bool, cfg_model: dict) -> nn.Module:
        """The config adapter: this norm with its options read from the ``model`` section."""
        return self.make(num_features, spatial, **self.options_from(cfg_model))


NORMS: Registry[NormInfo] = Registry("normalisation", entry=NormInfo, section="model")


@NORMS.register("none")
def no_norm(num_features: int, spatial: bool = False) -> nn.Module:
    """y = x."""
    return nn.Identity()


@NORMS.register("batch")
def batch_norm(num_features: int, spatial: bool = False) -> nn.Module:
    """Batch norm (Ioffe and Szegedy 2015), per channel j over the minibatch (and H, W):

        μ_j = (1/N) Σ_i x_ij,  σ_j² = (1/N) Σ_i (x_ij − μ_j)²,  x̂_ij = (x_ij − μ_j) / √(σ_j² + ε),
        y_ij = γ_j x̂_ij + β_j.

    At test time μ_j, σ_j² are running averages of the values seen in training: a linear map
    that can be folded into the previous layer (:func:`fold_batchnorm`).
    """
    return nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)


@NORMS.register("layer")
def layer_norm(num_features: int, spatial: bool = False) -> nn.Module:
    """Layer norm (Ba, Kiros and Hinton 2016): μ, σ: N × 1 over all features of each sample,
    γ, β per feature: y = γ (x − μ) / σ + β. Same behaviour in train and test.

    For images the features of a sample are C × H × W, which is group norm with one group.
    """
    return nn.GroupNorm(1, num_features) if spatial else nn.LayerNorm(num_features)


@NORMS.register("instance")
def instance_norm(num_features: int, spatial: bool = False) -> nn.Module:
    """Instance norm (Ulyanov et al. 2017): μ, σ: N × C × 1 × 1 over H, W of each sample and
    channel; γ, β: 1 × C × 1 × 1. Same behaviour in train and test."""
    if not spatial:
        raise UserError(
            "model.norm=instance normalises each channel over its H x W pixels, so it needs image "
            "feature maps; this layer sees flat vectors. Use model.norm=layer (or batch) for the mlp."
        )
    return nn.InstanceNorm2d(num_features, affine=True)


@NORMS.register("group", options={"groups": "groups"})
def group_norm(num_features: int, spatial: bool = False, groups: int = 8) -> nn.Module:
    """Group norm (Wu and He 2018): channels split into G = ``groups`` groups;
    μ, σ: N × G over H, W and the C/G channels of each group; γ, β per channel.
    G = 1 is layer norm, G = C is instance norm."""
    if num_features % groups != 0:
        raise UserError(
            f"model.groups={groups} does not divide the {num_features} channels of a layer: group norm "
            f"needs equal groups. Choose model.groups from the divisors of {num_features}, or change model.width."
        )
    return nn.GroupNorm(groups, num_features)


def create_norm(name: str, num_features: int, spatial: bool = False, **options) -> nn.Module:
    """A normalisation layer by name for ``num_features`` channels (``spatial=True``: feature
    maps N×C×H×W) or units (N×D): ``create_norm("group", 64, spatial=True, groups=8)``.
    An unknown name or option raises :class:`trainlab.errors.ConfigError`."""
    return NORMS.get(name).create(num_features, spatial, **options)


def make_norm(num_features: int, spatial: bool, cfg_model: dict) -> nn.Module:
    """The normalisation named by ``cfg_model["norm"]``."""
    return NORMS.get(cfg_model["norm"])(num_features, spatial, cfg_model)


# --- batch-norm folding ----------------------------------------------------------------------

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_FOLDABLE = (nn.Linear, nn.Conv2d)


@torch.no_grad()
def _fold_into(layer: nn.Linear | nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """w' = w · γ/√(σ²+ε),  b' = (b − μ) · γ/√(σ²+ε) + β  (per output channel), in place."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.affine:
        scale = scale * bn.weight
    shift = bn.bias if bn.affine else torch.zeros_like(scale)
    layer.weight.mul_(scale.reshape((-1,) + (1,) * (layer.weight.dim() - 1)).to(layer.weight.dtype))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + shift
    layer.bias = nn.Parameter(new_bias.to(layer.weight.dtype))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every batch norm that directly follows a Linear or
    Conv2d in an ``nn.Sequential`` folded into that layer and replaced by ``nn.Identity``.

    At test time batch norm is the linear map  y = γ (x − μ)/√(σ² + ε) + β  with fixed running
    μ, σ², so with x = w·a + b:  y = w'·a + b',  w' = w · γ/√(σ²+ε),  b' = (b − μ) · γ/√(σ²+ε) + β
    (lecture: "zero overhead at test-time: can be fused with conv!"). The original is untouched.
    """
    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for prev, name in zip(names, names[1:]):
            layer, bn = seq._modules[prev], seq._modules[name]
            if (isinstance(layer, _FOLDABLE) and isinstance(bn, _BATCH_NORMS)
                    and bn.running_mean is not None  # without running stats it uses batch stats even in eval
                    and layer.weight.shape[0] == bn.num_features):
                _fold_into(layer, bn)
                seq._modules[name] = nn.Identity()
    return folded


__all__ = ["NORMS", "NormInfo", "create_norm", "make_norm", "fold_batchnorm"]

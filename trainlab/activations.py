"""Activation functions (slides, reference/002, *Activation Functions*), found by name.

Every entry of :data:`ACTIVATIONS` is a factory

    make(features: int | None = None, spatial: bool = False, **options) -> nn.Module

that returns a fresh module (a learned activation such as PReLU must not be shared between
layers). ``features`` is the number of channels/units the activation sees, ``spatial`` says
whether its input is an image batch (N, C, H, W) or a batch of vectors (N, D); ``options``
(leaky_relu's ``slope``, elu's ``alpha``) have their defaults in the signature.

Maxout is the odd one out: it "does not have the basic form of dot product -> nonlinearity"
(lecture), it *is* the dot products. :class:`Maxout` and :class:`MaxoutConv2d` therefore replace
the linear/conv layer in front of the activation, and the activation slot itself becomes
``nn.Identity``. Model builders ask :func:`is_maxout` which layer to build.

    act = create_activation("elu", alpha=0.5)               # keyword arguments
    act = make_activation(cfg["model"], features=64, spatial=True)  # from the model config section
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainlab.registry import Component, Registry
from trainlab.regularization import DropConnectLinear


@dataclass(frozen=True)
class ActivationInfo(Component):
    def __call__(self, cfg_model: dict, features: int | None = None, spatial: bool = False) -> nn.Module:
        """The config adapter: this activation with its options read from the ``model`` section."""
        return self.make(features=features, spatial=spatial, **self.options_from(cfg_model))


ACTIVATIONS: Registry[ActivationInfo] = Registry("activation", entry=ActivationInfo, section="model")

# He et al. 2015 start PReLU's learned slope at 0.25; it is then trained by backprop.
PRELU_INIT = 0.25


@ACTIVATIONS.register("sigmoid")
def sigmoid(features: int | None = None, spatial: bool = False) -> nn.Module:
    """σ(x) = 1 / (1 + e^(−x)). Saturates at both ends and is not zero-centred (lecture: don't use)."""
    return nn.Sigmoid()


class CentredSigmoid(nn.Module):
    """σ(x) − ½: the sigmoid's shape and saturation, but zero-centred outputs in (−½, ½)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) - 0.5


@ACTIVATIONS.register("sigmoid_centered")
def sigmoid_centered(features: int | None = None, spatial: bool = False) -> nn.Module:
    """f(x) = σ(x) − ½ = ½ tanh(x/2). A probe, not a recommendation: it keeps the sigmoid's
    saturation and removes only its non-zero-centred output (the slides' problem 2, "Sigmoid
    outputs are not zero-centered"), so ``trainlab lab sigmoid-centring`` can tell the two apart."""
    return CentredSigmoid()


@ACTIVATIONS.register("tanh")
def tanh(features: int | None = None, spatial: bool = False) -> nn.Module:
    """tanh(x) = (e^x − e^(−x)) / (e^x + e^(−x)). Zero-centred, but still saturates."""
    return nn.Tanh()


@ACTIVATIONS.register("relu")
def relu(features: int | None = None, spatial: bool = False) -> nn.Module:
    """f(x) = max(0, x). Does not saturate for x > 0; units whose input stays negative "die"."""
    return nn.ReLU()


@ACTIVATIONS.register("leaky_relu", options={"slope": "leaky_slope"})
def leaky_relu(features: int | None = None, spatial: bool = False, slope: float = 0.01) -> nn.Module:
    """f(x) = max(αx, x) with a fixed slope α = ``slope`` (lecture: 0.01). Will not die."""
    return nn.LeakyReLU(negative_slope=slope)


@ACTIVATIONS.register("prelu")
def prelu(features: int | None = None, spatial: bool = False) -> nn.Module:
    """f(x) = max(αx, x) with α a parameter learned by backprop (He et al. 2015).

    One α per channel (images) or per unit (vectors) when ``features`` is given, else one shared α.
    """
    return nn.PReLU(num_parameters=features or 1, init=PRELU_INIT)


@ACTIVATIONS.register("elu", options={"alpha": "elu_alpha"})
def elu(features: int | None = None, spatial: bool = False, alpha: float = 1.0) -> nn.Module:
    """f(x) = x if x > 0 else α (exp(x) − 1), α = ``alpha`` (Clevert et al. 2015).

    Closer to zero-mean outputs than ReLU; the negative side saturates at −α.
    """
    return nn.ELU(alpha=alpha)


@ACTIVATIONS.register("gelu")
def gelu(features: int | None = None, spatial: bool = False) -> nn.Module:
    """f(x) = x · Φ(x), Φ the standard normal CDF (Hendrycks and Gimpel 2016)."""
    return nn.GELU()


@ACTIVATIONS.register("silu")
def silu(features: int | None = None, spatial: bool = False) -> nn.Module:
    """f(x) = x · σ(x), also called swish (Ramachandran et al. 2017)."""
    return nn.SiLU()


@ACTIVATIONS.register("maxout")
def maxout(features: int | None = None, spatial: bool = False) -> nn.Module:
    """max(w₁ᵀx + b₁, …, w_kᵀx + b_k) — computed by :class:`Maxout`/:class:`MaxoutConv2d`, which the
    model builders put in place of the preceding linear/conv layer; the activation slot is empty."""
    return nn.Identity()


def create_activation(name: str, features: int | None = None, spatial: bool = False, **options) -> nn.Module:
    """A fresh activation module by name: ``create_activation("leaky_relu", slope=0.1)``,
    ``create_activation("prelu", features=64, spatial=True)`` (one learned slope per channel).

    "maxout" gives ``nn.Identity``: maxout replaces the layer before it (:class:`Maxout`).
    An unknown name or option raises :class:`trainlab.errors.ConfigError`.
    """
    return ACTIVATIONS.get(name).create(features=features, spatial=spatial, **options)


def make_activation(cfg_model: dict, features: int | None = None, spatial: bool = False) -> nn.Module:
    """The activation named by ``cfg_model["activation"]``, as a fresh module."""
    return ACTIVATIONS.get(cfg_model["activation"])(cfg_model, features, spatial)


def is_maxout(cfg_model: dict) -> bool:
    """True when the linear/conv layers must be built as maxout layers."""
    return cfg_model["activation"] == "maxout"


class Maxout(nn.Module):
    """Maxout unit (Goodfellow et al. 2013): y_j = max_{i=1..k} (W_i x + b_i)_j.

    The k affine maps are stored as one ``nn.Linear(in_features, k · out_features)`` so that a
    single matmul computes them all; rows ``i·out_features : (i+1)·out_features`` of
    ``pieces.weight`` are W_i. k = 2 doubles the parameters of a linear layer (lecture: "doubles
    the number of parameters/neuron").
    """

    def __init__(self, in_features: int, out_features: int, k: int = 2, bias: bool = True,
                 dropconnect: float = 0.0):
        super().__init__()
        if k < 1:
            raise ValueError(f"maxout needs k >= 1 pieces, got {k}")
        self.in_features, self.out_features, self.k = in_features, out_features, k
        if dropconnect > 0:
            self.pieces: nn.Linear = DropConnectLinear(in_features, k * out_features, dropconnect, bias=bias)
        else:
            self.pieces = nn.Linear(in_features, k * out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pieces(x)  # (..., k·out)
        return z.unflatten(-1, (self.k, self.out_features)).amax(dim=-2)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}"


class MaxoutConv2d(nn.Module):
    """Convolutional maxout: y_c = max_{i=1..k} (W_i ∗ x + b_i)_c, a max over k feature maps per
    output channel. The k convolutions are one ``nn.Conv2d`` with k · out_channels filters; output
    channels ``i·out_channels : (i+1)·out_channels`` belong to piece i."""

    def __init__(self, in_channels: int, out_channels: int, k: int = 2, kernel_size: int = 3,
                 stride: int = 1, padding: int = 1, bias: bool = True):
        super().__init__()
        if k < 1:
            raise ValueError(f"maxout needs k >= 1 pieces, got {k}")
        self.in_channels, self.out_channels, self.k = in_channels, out_channels, k
        self.pieces = nn.Conv2d(in_channels, k * out_channels, kernel_size, stride=stride,
                                padding=padding, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pieces(x)  # (N, k·C, H, W); unflatten splits C, so channels_last strides still view
        return z.unflatten(1, (self.k, self.out_channels)).amax(dim=1)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, k={self.k}"


__all__ = ["ACTIVATIONS", "ActivationInfo", "create_activation", "make_activation", "is_maxout", "Maxout", "MaxoutConv2d", "PRELU_INIT"]

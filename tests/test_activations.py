"""Activations: each checked against the lecture's formula."""
import math

import pytest
import torch
from torch import nn

from tests.helpers import model_cfg as cfg
from trainlab.activations import (
    ACTIVATIONS,
    Maxout,
    MaxoutConv2d,
    is_maxout,
    make_activation,
)


def test_every_activation_builds_a_fresh_module():
    x = torch.randn(4, 6)
    for name in ACTIVATIONS:
        a, b = make_activation(cfg(activation=name), 6), make_activation(cfg(activation=name), 6)
        assert isinstance(a, nn.Module) and a is not b
        assert a(x).shape == x.shape


@pytest.mark.parametrize("name, formula", [
    ("sigmoid", lambda x: 1 / (1 + torch.exp(-x))),
    ("tanh", lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x))),
    ("relu", lambda x: torch.clamp(x, min=0)),
    ("gelu", lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))),
    ("silu", lambda x: x / (1 + torch.exp(-x))),
])
def test_elementwise_formulas(name, formula):
    x = torch.linspace(-5, 5, 101)
    torch.testing.assert_close(make_activation(cfg(activation=name))(x), formula(x), atol=1e-6, rtol=1e-5)


def test_leaky_relu_is_max_of_slope_x_and_x():
    x = torch.linspace(-5, 5, 101)
    act = make_activation(cfg(activation="leaky_relu", leaky_slope=0.1))
    torch.testing.assert_close(act(x), torch.maximum(0.1 * x, x))


def test_elu_formula():
    x = torch.linspace(-5, 5, 101)
    act = make_activation(cfg(activation="elu", elu_alpha=0.7))
    expected = torch.where(x > 0, x, 0.7 * (torch.exp(x) - 1))
    torch.testing.assert_close(act(x), expected)


def test_prelu_has_one_learned_slope_per_channel_and_gets_gradient():
    act = make_activation(cfg(activation="prelu"), features=3, spatial=True)
    (slope,) = list(act.parameters())
    assert slope.shape == (3,)
    x = torch.randn(2, 3, 4, 4)
    y = act(x)
    torch.testing.assert_close(y, torch.maximum(slope.view(1, 3, 1, 1) * x, x))
    y.sum().backward()
    assert slope.grad is not None and slope.grad.abs().sum() > 0
    # d/dα Σ max(αx, x) = Σ_{x<0} x per channel
    torch.testing.assert_close(slope.grad, torch.where(x < 0, x, torch.zeros_like(x)).sum(dim=(0, 2, 3)))


def test_maxout_activation_slot_is_identity():
    c = cfg(activation="maxout")
    assert is_maxout(c) and not is_maxout(cfg(activation="relu"))
    assert isinstance(make_activation(c, 8), nn.Identity)


def test_maxout_is_max_of_k_affine_maps_and_has_k_times_the_params():
    torch.manual_seed(0)
    layer = Maxout(5, 4, k=3)
    x = torch.randn(7, 5)
    W = layer.pieces.weight.view(3, 4, 5)
    b = layer.pieces.bias.view(3, 4)
    pieces = torch.stack([x @ W[i].T + b[i] for i in range(3)])
    torch.testing.assert_close(layer(x), pieces.max(dim=0).values)
    assert sum(p.numel() for p in layer.parameters()) == 3 * sum(p.numel() for p in nn.Linear(5, 4).parameters())


def test_maxout_conv_is_max_of_k_convolutions():
    torch.manual_seed(0)
    layer = MaxoutConv2d(3, 4, k=2)
    x = torch.randn(2, 3, 6, 6)
    W = layer.pieces.weight.view(2, 4, 3, 3, 3)
    b = layer.pieces.bias.view(2, 4)
    maps = torch.stack([nn.functional.conv2d(x, W[i], b[i], padding=1) for i in range(2)])
    torch.testing.assert_close(layer(x), maps.max(dim=0).values)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), layer(x))
    assert sum(p.numel() for p in layer.parameters()) == 2 * sum(p.numel() for p in nn.Conv2d(3, 4, 3).parameters())

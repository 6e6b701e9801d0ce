"""Initialisation rules: variances on large layers (statistical tolerance), symmetry, init_model."""
import math

import pytest
import torch
from torch import nn

from tests.helpers import model_cfg as cfg
from trainlab.init import INITS, fan_in
from trainlab.models import build_model


def weight(*shape):
    torch.manual_seed(0)
    return torch.empty(*shape)


# (out, in) = (256, 2048): 0.5M samples, so the sample variance is within ~0.5% of the truth.
@pytest.mark.parametrize("shape", [(256, 2048), (64, 128, 3, 3)])
@pytest.mark.parametrize("name, options, variance", [
    ("xavier", {}, lambda din, dout: 1 / din),
    ("kaiming", {"activation": "relu"}, lambda din, dout: 2 / din),
    ("kaiming", {"activation": "leaky_relu", "leaky_slope": 0.3}, lambda din, dout: 2 / ((1 + 0.09) * din)),
    ("kaiming_uniform", {"activation": "relu"}, lambda din, dout: 2 / din),
    ("xavier_uniform", {}, lambda din, dout: 2 / (din + dout)),
    ("small_gaussian", {"init_std": 0.01}, lambda din, dout: 1e-4),
])
def test_weight_variance(shape, name, options, variance):
    w = weight(*shape)
    INITS.get(name)(w, cfg(init=name, **options))
    receptive = math.prod(shape[2:])
    din, dout = shape[1] * receptive, shape[0] * receptive
    assert w.mean().abs() < 3 * math.sqrt(variance(din, dout) / w.numel()) + 1e-7
    assert w.var().item() == pytest.approx(variance(din, dout), rel=0.03)


def test_fan_in_of_conv_is_kernel_area_times_input_channels():
    assert fan_in(torch.empty(8, 3, 5, 5)) == 75
    assert fan_in(torch.empty(10, 64)) == 64


def test_orthogonal_rows_are_orthonormal_times_gain():
    w = weight(64, 256)
    INITS.get("orthogonal")(w, cfg(activation="relu"))
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(64), atol=1e-4, rtol=0)


def test_constant_init_makes_every_hidden_unit_identical_forever():
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "depth": 2, "width": 16, "init": "constant", "init_std": 0.05},
                        (1, 8, 8), 10)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    hidden = model.features(x)
    assert hidden.std(dim=1).max() < 1e-6  # all 16 units compute the same thing
    first = model.features[0][1].weight
    assert (first - first[0]).abs().max() < 1e-6  # rows never diverged: symmetry is never broken


def test_init_model_biases_head_scale_and_maxout_pieces():
    shape = (1, 8, 8)
    torch.manual_seed(1)
    a = build_model({"name": "mlp", "activation": "maxout", "bias_init": -0.5, "head_scale": 1.0}, shape, 10)
    torch.manual_seed(1)
    b = build_model({"name": "mlp", "activation": "maxout", "bias_init": -0.5, "head_scale": 0.25}, shape, 10)
    torch.testing.assert_close(b.head.weight, 0.25 * a.head.weight)
    for m in a.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            assert torch.all(m.bias == -0.5)
    pieces = a.features[0][1].pieces.weight  # a maxout layer's k linear maps get the rule too
    assert pieces.var().item() == pytest.approx(2 / 64, rel=0.1)


def test_init_model_uses_the_configured_rule_on_convs():
    torch.manual_seed(0)
    model = build_model({"name": "convnet", "width": 64, "init": "xavier"}, (3, 32, 32), 10)
    conv = model.features[1][0]  # second stage, first conv: 64 → 128 channels
    assert conv.weight.var().item() == pytest.approx(1 / (64 * 9), rel=0.05)

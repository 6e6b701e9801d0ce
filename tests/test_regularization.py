"""Penalties, inverted dropout, DropConnect, stochastic depth, fractional pooling, label smoothing."""
import math

import pytest
import torch
from torch import nn

from trainlab.models import build_model
from trainlab.regularization import (
    PENALTIES,
    DropConnectLinear,
    Dropout,
    FractionalMaxPool,
    StochasticDepth,
    penalty_weights,
    smoothed_cross_entropy,
    weight_penalty,
)


def weights():
    torch.manual_seed(0)
    return [torch.randn(4, 3), torch.randn(2, 3, 3, 3)]


@pytest.mark.parametrize("name, formula", [
    ("none", lambda ws, lam, beta: 0.0),
    ("l2", lambda ws, lam, beta: lam * sum(float((w * w).sum()) for w in ws)),
    ("l1", lambda ws, lam, beta: lam * sum(float(w.abs().sum()) for w in ws)),
    ("elastic", lambda ws, lam, beta: lam * sum(float((beta * w * w + w.abs()).sum()) for w in ws)),
])
def test_penalties_match_their_formulas(name, formula):
    ws = weights()
    value = PENALTIES.get(name)(ws, 0.3, 0.7)
    assert value.shape == ()
    assert value.item() == pytest.approx(formula(ws, 0.3, 0.7), rel=1e-5)


def test_penalty_is_differentiable():
    w = torch.randn(3, 3, requires_grad=True)
    PENALTIES.get("l2")([w], 0.5, 0.0).backward()
    torch.testing.assert_close(w.grad, w.detach())  # d/dW 0.5 Σ W² = W


def test_penalty_weights_exclude_biases_and_norm_parameters():
    model = build_model({"name": "mlp", "norm": "batch", "activation": "prelu", "width": 8}, (1, 8, 8), 10)
    chosen = {id(p) for p in penalty_weights(model)}
    expected = {id(model.features[0][1].weight), id(model.features[1][0].weight), id(model.head.weight)}
    assert chosen == expected
    reg = {"penalty": "l2", "strength": 0.1, "beta": 0.5}
    total = sum(float((p.detach() ** 2).sum()) for p in (model.features[0][1].weight, model.features[1][0].weight, model.head.weight))
    assert weight_penalty(model, reg).item() == pytest.approx(0.1 * total, rel=1e-5)
    model.head.bias.data.fill_(100.0)  # biases do not change the penalty
    assert weight_penalty(model, reg).item() == pytest.approx(0.1 * total, rel=1e-5)


def test_inverted_dropout_keeps_the_expected_activation_and_is_identity_in_eval():
    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.rand(1000) + 0.5
    outs = torch.stack([drop(x) for _ in range(400)])
    kept = outs != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.01)
    torch.testing.assert_close(outs[kept], (x / 0.7).expand_as(outs)[kept])  # survivors scaled by 1/(1-p)
    assert (outs.mean(dim=0) - x).abs().mean() < 0.03  # E[h ⊙ U] = h
    drop.eval()
    assert torch.equal(drop(x), x)


def test_dropout_masks_follow_the_global_seed():
    drop = Dropout(0.5).train()
    torch.manual_seed(7)
    a = drop(torch.ones(100))
    torch.manual_seed(7)
    assert torch.equal(drop(torch.ones(100)), a)


def test_dropconnect_drops_weights_keeps_expectation_and_is_plain_linear_in_eval():
    torch.manual_seed(0)
    layer = DropConnectLinear(20, 5, p=0.4).train()
    x = torch.randn(3, 20)
    plain = nn.functional.linear(x, layer.weight, layer.bias)
    with torch.no_grad():
        samples = torch.stack([layer(x) for _ in range(2000)])
        # a one-hot input row reads out one column of the dropped weights: each is 0 or w/(1-p)
        eye_out = torch.stack([layer(torch.eye(20)) - layer.bias for _ in range(50)])
    assert (samples.mean(dim=0) - plain).abs().max() < 0.1 * plain.abs().max()
    assert not torch.allclose(samples[0], plain)
    w = layer.weight.T.detach()
    assert torch.all(torch.isclose(eye_out, torch.zeros_like(eye_out), atol=1e-6) |
                     torch.isclose(eye_out, (w / 0.6).expand_as(eye_out), atol=1e-6))
    layer.eval()
    torch.testing.assert_close(layer(x), plain)


def test_stochastic_depth_drops_whole_branches_per_sample():
    torch.manual_seed(0)
    sd = StochasticDepth(0.25).train()
    branch = torch.rand(4000, 3, 2, 2) + 0.5
    out = sd(branch)
    dropped = (out == 0).flatten(1)
    assert torch.all(dropped.all(dim=1) | ~dropped.any(dim=1))  # per sample: all or nothing
    assert dropped.all(dim=1).float().mean().item() == pytest.approx(0.25, abs=0.02)
    survivors = ~dropped.all(dim=1)
    torch.testing.assert_close(out[survivors], branch[survivors] / 0.75)
    assert out.mean().item() == pytest.approx(branch.mean().item(), rel=0.03)  # expectation kept
    sd.eval()
    assert torch.equal(sd(branch), branch)


def test_fractional_max_pool_shrinks_by_one_over_root_two_and_is_fixed_in_eval():
    torch.manual_seed(0)
    pool = FractionalMaxPool()
    x = torch.randn(2, 3, 32, 32)
    side = int(32 / math.sqrt(2))
    assert pool.train()(x).shape == (2, 3, side, side)
    outs = {pool(x).sum().item() for _ in range(5)}
    assert len(outs) > 1  # random regions in training
    pool.eval()
    torch.testing.assert_close(pool(x), pool(x))
    # a max pool: every output is one of the inputs, and at least the smallest is no max
    assert pool(x).min() > x.amin(dim=(2, 3)).min()
    torch.testing.assert_close(pool(x.to(memory_format=torch.channels_last)), pool(x))


def _smoothed_formula(logits, q, eps):
    c = logits.shape[1]
    q = (1 - eps) * q + eps / c
    return -(q * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def test_label_smoothing_with_integer_labels():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    onehot = nn.functional.one_hot(y, 5).float()
    torch.testing.assert_close(smoothed_cross_entropy(logits, y, 0.1), _smoothed_formula(logits, onehot, 0.1))
    torch.testing.assert_close(smoothed_cross_entropy(logits, y, 0.0), nn.functional.cross_entropy(logits, y))


def test_label_smoothing_with_soft_targets():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    q = torch.softmax(torch.randn(6, 5), dim=1)  # e.g. mixup: 40% cat, 60% dog
    torch.testing.assert_close(smoothed_cross_entropy(logits, q, 0.2), _smoothed_formula(logits, q, 0.2))

"""Normalisation layers normalise over the lecture's axes; batch-norm folding keeps the outputs."""
import pytest
import torch
from torch import nn

from tests.helpers import model_cfg as cfg
from trainlab.errors import UserError
from trainlab.models import build_model
from trainlab.norms import NORMS, fold_batchnorm, make_norm


def images(n=16, c=8, h=5, w=6):
    torch.manual_seed(0)
    return 3 * torch.randn(n, c, h, w) + torch.arange(c).view(1, c, 1, 1)  # channel-dependent offset


def assert_standardised(y, dims):
    torch.testing.assert_close(y.mean(dim=dims), torch.zeros_like(y.mean(dim=dims)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=dims, unbiased=False), torch.ones_like(y.mean(dim=dims)), atol=1e-3, rtol=0)


def test_batch_norm_dense_train_mode_standardises_each_feature_over_the_batch():
    x = 5 * torch.randn(64, 10) + 2
    bn = make_norm(10, False, cfg(norm="batch")).train()
    assert isinstance(bn, nn.BatchNorm1d)
    assert_standardised(bn(x), (0,))


def test_spatial_batch_norm_standardises_each_channel_over_n_h_w():
    bn = make_norm(8, True, cfg(norm="batch")).train()
    assert isinstance(bn, nn.BatchNorm2d)
    assert_standardised(bn(images()), (0, 2, 3))


def test_batch_norm_eval_uses_running_statistics():
    bn = make_norm(8, True, cfg(norm="batch"))
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    bn.train()
    for _ in range(5):
        bn(images())
    bn.eval()
    x = images(4)
    mu, var = bn.running_mean.view(1, -1, 1, 1), bn.running_var.view(1, -1, 1, 1)
    expected = bn.weight.view(1, -1, 1, 1) * (x - mu) / torch.sqrt(var + bn.eps) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), expected)
    # and not the batch's own statistics: a single image is not standardised
    assert bn(x[:1]).mean().abs() > 1e-2


def test_layer_norm_dense_standardises_each_sample_over_its_features():
    x = 4 * torch.randn(6, 32) + torch.arange(6.0).view(6, 1)
    assert_standardised(make_norm(32, False, cfg(norm="layer"))(x), (1,))


def test_layer_norm_spatial_standardises_each_sample_over_c_h_w():
    assert_standardised(make_norm(8, True, cfg(norm="layer"))(images()), (1, 2, 3))


def test_instance_norm_standardises_each_sample_and_channel_over_h_w():
    norm = make_norm(8, True, cfg(norm="instance"))
    y = norm(images())
    assert_standardised(y, (2, 3))
    assert list(norm.parameters())  # learnable γ, β
    norm.eval()
    torch.testing.assert_close(norm(images()), y)  # same in train and test


def test_instance_norm_on_vectors_is_a_user_error():
    with pytest.raises(UserError, match="instance"):
        make_norm(8, False, cfg(norm="instance"))
    with pytest.raises(UserError, match="mlp"):
        build_model({"name": "mlp", "norm": "instance"}, (1, 8, 8), 10)


def test_group_norm_standardises_each_group_of_channels():
    y = make_norm(8, True, cfg(norm="group", groups=2))(images())
    grouped = y.view(16, 2, 4, 5, 6)  # (N, G, C/G, H, W)
    assert_standardised(grouped, (2, 3, 4))
    # not over single channels: each channel alone is not standardised
    assert y.mean(dim=(2, 3)).abs().max() > 0.1


def test_group_norm_groups_must_divide_channels():
    with pytest.raises(UserError, match=r"model\.groups=5.*12 channels"):
        make_norm(12, True, cfg(norm="group", groups=5))
    with pytest.raises(UserError, match=r"model\.groups=5"):
        build_model({"name": "convnet", "norm": "group", "groups": 5, "width": 8}, (1, 8, 8), 10)


def test_none_is_identity():
    x = images()
    assert torch.equal(make_norm(8, True, cfg(norm="none"))(x), x)
    assert set(NORMS) >= {"none", "batch", "layer", "instance", "group"}


def _train_a_few_steps(model, shape, steps=5):
    torch.manual_seed(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        x, y = torch.randn(32, *shape), torch.randint(0, 10, (32,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():  # make γ and β far from 1 and 0, so the folding formula is really exercised
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 2.0)
                m.bias.normal_()
    return model.eval()


# The resnet's 20 layers of random γ make its logits ~500, so float32 rounding alone exceeds 1e-5
# there; in float64 the check is exact to 1e-5 all the same.
@pytest.mark.parametrize("name, shape, dtype", [("mlp", (1, 8, 8), torch.float32),
                                                ("convnet", (3, 16, 16), torch.float32),
                                                ("resnet", (3, 8, 8), torch.float64)])
def test_fold_batchnorm_keeps_the_outputs(name, shape, dtype):
    torch.manual_seed(0)
    model = _train_a_few_steps(build_model({"name": name, "norm": "batch", "width": 16}, shape, 10), shape)
    model = model.to(dtype)
    assert any(m.running_mean.abs().max() > 1e-3 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())  # original untouched
    assert not folded.training
    x = torch.randn(8, *shape, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)

"""Architectures: the shared outline, every input shape, maxout/dropconnect/stochastic depth wiring,
resnet sizes and zero-init of residual blocks."""
import warnings

import pytest
import torch
from torch import nn

from trainlab.activations import Maxout, MaxoutConv2d
from trainlab.errors import UserError
from trainlab.models import (
    MODELS,
    BasicBlock,
    build_model,
    fit_convnet_depth,
    model_config,
)
from trainlab.regularization import (
    DropConnectLinear,
    Dropout,
    FractionalMaxPool,
    StochasticDepth,
)

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
SMALL = {"mlp": {"width": 32}, "convnet": {"width": 8}, "resnet": {"width": 8, "depth": 8}}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def check_outline(model, x, num_classes):
    assert isinstance(model.features, nn.Sequential) and isinstance(model.head, nn.Linear)
    assert all(any(True for _ in block.parameters()) for block in model.features)  # every block is trainable
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (x.shape[0], num_classes)
        torch.testing.assert_close(out, model.head(torch.flatten(model.features(x), 1)))


@pytest.mark.parametrize("name", ["mlp", "convnet", "resnet"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_every_model_takes_every_image_shape(name, shape):
    torch.manual_seed(0)
    model = build_model({"name": name, **SMALL[name]}, shape, 7)
    check_outline(model, torch.randn(3, *shape), 7)


# instance norm needs image feature maps: the mlp refusing it is tested in test_norms
GRID = [(name, activation, norm) for name in ("mlp", "convnet", "resnet")
        for activation in ("relu", "tanh", "prelu", "maxout")
        for norm in ("none", "batch", "layer", "group", "instance") if (name, norm) != ("mlp", "instance")]


@pytest.mark.parametrize("name, activation, norm", GRID)
def test_models_with_activations_and_norms(name, activation, norm):
    torch.manual_seed(0)
    model = build_model({"name": name, "activation": activation, "norm": norm, "dropout": 0.2, **SMALL[name]},
                        (1, 8, 8), 10)
    x = torch.randn(4, 1, 8, 8)
    model.train()
    model(x).sum().backward()
    check_outline(model, x, 10)


def test_mlp_takes_flat_vectors_and_conv_nets_refuse_them():
    model = build_model({"name": "mlp", "depth": 3, "width": 16}, (64,), 10)
    check_outline(model, torch.randn(5, 64), 10)
    assert len(model.features) == 3
    for name in ("convnet", "resnet"):
        with pytest.raises(UserError, match="model.name=mlp"):
            build_model({"name": name}, (64,), 10)


def test_defaults_for_null_width_and_depth():
    mlp = build_model({"name": "mlp"}, (1, 8, 8), 10)
    assert len(mlp.features) == 2 and mlp.head.in_features == 256
    conv = build_model({"name": "convnet"}, (1, 8, 8), 10)
    assert len(conv.features) == 3 and conv.head.in_features == 32 * 4
    assert conv.num_classes == 10 and conv.input_shape == (1, 8, 8)


def test_maxout_layers_replace_linear_and_conv_and_double_their_parameters():
    for name, layer_type in (("mlp", Maxout), ("convnet", MaxoutConv2d), ("resnet", MaxoutConv2d)):
        relu = build_model({"name": name, **SMALL[name]}, (1, 8, 8), 10)
        maxout = build_model({"name": name, "activation": "maxout", "maxout_k": 2, **SMALL[name]}, (1, 8, 8), 10)
        assert any(isinstance(m, layer_type) for m in maxout.modules())
        assert not any(isinstance(m, (nn.ReLU, nn.PReLU)) for m in maxout.modules())
        if name != "resnet":  # every hidden layer is maxout: its weights double
            hidden = lambda m: n_params(m) - n_params(m.head)  # noqa: E731
            assert hidden(maxout) == 2 * hidden(relu)


def test_dropconnect_and_dropout_are_wired_into_the_mlp():
    model = build_model({"name": "mlp", "dropconnect": 0.3, "dropout": 0.2, "width": 16}, (1, 8, 8), 10)
    hidden = [m for m in model.features.modules() if isinstance(m, nn.Linear)]
    assert hidden and all(isinstance(m, DropConnectLinear) and m.p == 0.3 for m in hidden)
    assert sum(isinstance(m, Dropout) for m in model.modules()) == 2
    assert not isinstance(model.head, DropConnectLinear)


def test_convnet_depth_is_clipped_to_the_image_size():
    assert fit_convnet_depth(10, 8, fractional=False) == 4   # 8 → 4 → 2 → 1
    assert fit_convnet_depth(10, 8, fractional=True) == 5    # 8 → 5 → 3 → 2 → 1
    assert fit_convnet_depth(3, 32, fractional=False) == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model({"name": "convnet", "depth": 8, "width": 4, "fractional_pool": True}, (1, 8, 8), 10)
    assert len(model.features) == 5 and caught
    assert sum(isinstance(m, FractionalMaxPool) for m in model.modules()) == 4
    check_outline(model, torch.randn(2, 1, 8, 8), 10)


def test_resnet20_has_about_0_27M_parameters():
    model = build_model({"name": "resnet", "depth": 20, "norm": "batch"}, (3, 32, 32), 10)
    assert 0.26e6 < n_params(model) < 0.28e6
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 9
    assert len(model.features) == 4  # stem + 3 stages


def test_resnet_depths():
    r56 = build_model({"name": "resnet", "depth": 56, "width": 4}, (3, 32, 32), 10)
    assert sum(isinstance(m, BasicBlock) for m in r56.modules()) == 27
    r18 = build_model({"name": "resnet", "depth": 18, "width": 8, "norm": "batch"}, (1, 8, 8), 10)
    assert sum(isinstance(m, BasicBlock) for m in r18.modules()) == 8
    assert r18.head.in_features == 64 and len(r18.features) == 5
    check_outline(r18, torch.randn(2, 1, 8, 8), 10)
    assert 11e6 < n_params(build_model({"name": "resnet", "depth": 18}, (3, 32, 32), 10)) < 11.3e6
    with pytest.raises(UserError, match="6n\\+2"):
        build_model({"name": "resnet", "depth": 21}, (3, 32, 32), 10)


def test_stochastic_depth_grows_linearly_with_block_index():
    model = build_model({"name": "resnet", "depth": 20, "width": 4, "stochastic_depth": 0.5}, (3, 8, 8), 10)
    probs = [m.p for m in model.modules() if isinstance(m, StochasticDepth)]
    assert probs == pytest.approx([0.5 * i / 9 for i in range(1, 10)])


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_zero_init_residual_makes_each_block_its_shortcut(norm):
    torch.manual_seed(0)
    model = build_model({"name": "resnet", "depth": 20, "width": 8, "norm": norm, "zero_init_residual": True},
                        (3, 8, 8), 10).eval()
    x = torch.randn(2, 3, 8, 8)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    with torch.no_grad():
        h = model.features[0](x)
        for block in blocks:
            out = block(h)
            torch.testing.assert_close(out, block.act(block.shortcut(h)))
            if isinstance(block.shortcut, nn.Identity):
                torch.testing.assert_close(out, h)  # h ≥ 0 after ReLU: the block is exactly its input
            h = out
    # and without the option the branches are not zero
    other = build_model({"name": "resnet", "depth": 20, "width": 8, "norm": norm, "zero_init_residual": False},
                        (3, 8, 8), 10).eval()
    block = next(m for m in other.modules() if isinstance(m, BasicBlock))
    with torch.no_grad():
        h = other.features[0](x)
        assert not torch.allclose(block(h), block.act(block.shortcut(h)))


@pytest.mark.parametrize("name", ["convnet", "resnet"])
def test_conv_nets_work_in_channels_last(name):
    torch.manual_seed(0)
    cfg = {"name": name, "norm": "batch", "activation": "maxout", **SMALL[name]}
    model = build_model(cfg, (3, 32, 32), 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, atol=1e-5, rtol=1e-4)


def test_model_config_names_unknown_keys():
    assert model_config(depth=3)["depth"] == 3
    with pytest.raises(UserError, match="model.widht"):
        model_config(widht=3)
    assert set(MODELS) == {"mlp", "convnet", "resnet"}


def test_norm_defaults_depend_on_the_architecture():
    """model.norm left null: a ResNet gets batch norm (the README's resnet20 at SGD lr 0.1 diverged
    without it), mlp and convnet get none; a norm that is set is kept."""
    def norms(model):
        return {type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__}

    assert norms(build_model({"name": "resnet", "depth": 8}, (1, 8, 8), 10)) == {"BatchNorm2d"}
    assert norms(build_model({"name": "convnet", "width": 4}, (1, 8, 8), 10)) == set()
    assert norms(build_model({"name": "mlp"}, (64,), 10)) == set()
    assert norms(build_model({"name": "resnet", "depth": 8, "norm": "none"}, (1, 8, 8), 10)) == set()

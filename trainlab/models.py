"""Architectures: ``mlp``, ``convnet`` (VGG-style stages) and ``resnet`` (CIFAR-style 6n+2, and 18).

Every trainlab model has one outline, which monitors, transfer learning and fine-tuning rely on:

    model.features   nn.Sequential of blocks, input → last hidden representation (N, D);
                     every block has parameters (mlp: hidden layers; convnet/resnet: stem and stages)
    model.head       nn.Linear(D, num_classes) producing the logits
    model(x)         = model.head(torch.flatten(model.features(x), 1))

Each builder takes the activation, norm, init and regulariser names of the ``model`` config
section. Every entry of :data:`MODELS` is ``build(options, input_shape, num_classes)``, options
being :func:`create_model`'s keyword arguments as a dict; :func:`create_model` fills in the
defaults (in its signature) and initialises the weights, :func:`build_model` is its config adapter.

    model = create_model("resnet", 10, (3, 32, 32), depth=20, norm="batch")
    model = build_model({"name": "resnet", "depth": 20, "norm": "batch"}, (3, 32, 32), 10)
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from trainlab.activations import ACTIVATIONS, Maxout, MaxoutConv2d, is_maxout, make_activation
from trainlab.errors import ConfigError, UserError
from trainlab.init import INITS, init_model
from trainlab.norms import NORMS, make_norm
from trainlab.registry import Registry, check_bounds, close_matches
from trainlab.regularization import (
    ChannelDropout,
    DropConnectLinear,
    Dropout,
    FractionalMaxPool,
    StochasticDepth,
)
from trainlab.schema import defaults

MODELS: Registry = Registry("model")

# Defaults when model.depth / model.width are null (the config's help text states the same).
MLP_DEPTH, MLP_WIDTH = 2, 256
CONVNET_DEPTH, CONVNET_WIDTH = 3, 32
RESNET_DEPTH, RESNET_WIDTH, RESNET18_WIDTH = 20, 16, 64
# model.norm when null: a ResNet is built around batch norm (He et al. 2016: BN after every conv;
# without it the README's resnet20 at SGD lr 0.1 diverges), the plain nets train without one.
DEFAULT_NORM = {"resnet": "batch"}


class Classifier(nn.Module):
    """``head(flatten(features(x)))``: the outline every trainlab model shares."""

    def __init__(self, features: nn.Sequential, head: nn.Linear, input_shape: tuple, num_classes: int):
        super().__init__()
        self.features = features
        self.head = head
        # Plain attributes (not in the state dict): what the model was built for.
        self.input_shape, self.num_classes = tuple(input_shape), num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) → (N, C): the mean of each feature map."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


def model_config(**overrides) -> dict:
    """The ``model`` config section with its defaults, updated by ``overrides`` (key names only
    are checked here; values are checked when a config is loaded)."""
    cfg = defaults()["model"]
    for key in overrides:
        if key not in cfg:
            raise ConfigError(f"unknown config key 'model.{key}'{close_matches(key, cfg)}")
    cfg.update(overrides)
    return cfg


def create_model(name: str, num_classes: int, input_shape: tuple, *, depth: int | None = None,
                 width: int | None = None, activation: str = "relu", leaky_slope: float = 0.01,
                 elu_alpha: float = 1.0, maxout_k: int = 2, norm: str | None = None, groups: int = 8,
                 init: str = "kaiming", init_std: float = 0.01, bias_init: float = 0.0, head_scale: float = 0.1,
                 zero_init_residual: bool = True, dropout: float = 0.0, dropconnect: float = 0.0,
                 stochastic_depth: float = 0.0, fractional_pool: bool = False, fractional_eval_sets: int = 1,
                 channel_dropout: float = 0.0, head_stages: int = 1) -> Classifier:
    """The architecture ``name`` (mlp, convnet, resnet) for ``num_classes`` classes and samples of
    ``input_shape`` — (C, H, W) images or (D,) vectors — initialised, e.g.
    ``create_model("convnet", 10, (1, 8, 8), width=16, norm="batch", dropout=0.1)``.

    depth/width None: the architecture's own default (mlp 2 x 256; convnet 3 stages from 32
    channels; resnet 20 from 16); norm None: batch norm for resnet, none otherwise. The keywords
    are the ``model`` config keys (see the README's table). An unknown name raises
    :class:`trainlab.errors.ConfigError`.
    """
    options = dict(locals())
    del options["num_classes"], options["input_shape"]
    if norm is None:
        options["norm"] = DEFAULT_NORM.get(name, "none")
    check_architecture_options(name, options)
    if num_classes < 1:
        raise UserError(f"a classifier needs at least one class, got num_classes={num_classes}")
    check_bounds(f"model {name!r}", options, {key: f"model.{key}" for key in options if key != "name"})
    for kind, registry in (("activation", ACTIVATIONS), ("norm", NORMS), ("init", INITS)):
        registry.get(options[kind])  # an unknown name fails here, before any layer is built
    model = MODELS.get(name)(options, tuple(input_shape), num_classes)
    if head_stages > 1:
        model = read_several_stages(model, head_stages)
    return init_model(model, options)


# Regularisers that live in one architecture's layers; anywhere else they would silently do nothing.
ARCHITECTURE_OPTIONS = {"dropconnect": "mlp", "stochastic_depth": "resnet", "fractional_pool": "convnet",
                        "channel_dropout": "convnet"}


def check_architecture_options(name: str, options: dict) -> None:
    """Refuse (ConfigError) a regulariser set on an architecture that has no layer for it:
    DropConnect acts on the mlp's hidden layers, stochastic depth on residual blocks, fractional
    pooling and channel dropout on the convnet's stages."""
    for key, arch in ARCHITECTURE_OPTIONS.items():
        if options.get(key) and name != arch:
            raise ConfigError(f"model.{key}={options[key]} acts on the {arch}'s layers and model.name={name} has none: "
                              f"use model.name={arch}, or leave model.{key} at its default")


def build_model(cfg_model: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """The config adapter of :func:`create_model`: the ``model`` section (a partial one is
    completed with the defaults) as its keyword arguments. ``sync_bn`` is not part of the network
    but of how data-parallel training wraps it (trainlab.distributed)."""
    options = {k: v for k, v in model_config(**cfg_model).items() if k not in WRAPPER_KEYS}
    return create_model(input_shape=input_shape, num_classes=num_classes, **options)


WRAPPER_KEYS = ("sync_bn",)  # model.* keys read by the training wrapper, not by create_model


class MultiStageFeatures(nn.Sequential):
    """``model.features`` whose output is the concatenation of the last ``taps`` blocks' outputs,
    each pooled to one vector per sample: z = [g(h_{n−taps+1}), …, g(h_n)], g = global average
    pool for feature maps (N, C, H, W), flatten otherwise. A linear head on z is the lecture's
    "linear classifier from different stages". The blocks keep their names (``features.0``, ...),
    so state dicts of the plain model load into it.
    """

    def __init__(self, blocks: nn.Sequential, taps: int):
        super().__init__(*blocks)
        if not 1 <= taps <= len(blocks):
            raise UserError(f"model.head_stages={taps} but model.features has {len(blocks)} blocks; "
                            f"use 1 to {len(blocks)}")
        self.taps = taps

    def forward(self, x: Tensor) -> Tensor:
        pooled, first = [], len(self) - self.taps
        for i, block in enumerate(self):
            x = block(x)
            if i >= first:
                pooled.append(x.mean(dim=(2, 3)) if x.dim() == 4 else torch.flatten(x, 1))
        return torch.cat(pooled, dim=1)


def read_several_stages(model: Classifier, taps: int) -> Classifier:
    """``model`` with :class:`MultiStageFeatures` over its last ``taps`` blocks and a new linear
    head as wide as their pooled features together."""
    features = MultiStageFeatures(model.features, taps)
    with torch.no_grad():
        width = features.eval()(torch.zeros(1, *model.input_shape)).shape[1]
    features.train()
    return Classifier(features, nn.Linear(width, model.num_classes), model.input_shape, model.num_classes)


# --- shared layer builders -------------------------------------------------------------------

def _bias(cfg: dict) -> bool:
    # A norm right after the layer subtracts any per-channel bias and adds its own β.
    return cfg["norm"] == "none"


def _linear(in_f: int, out_f: int, cfg: dict) -> nn.Module:
    """The hidden linear layer: maxout pieces, DropConnect, or a plain Linear."""
    if is_maxout(cfg):
        return Maxout(in_f, out_f, cfg["maxout_k"], bias=_bias(cfg), dropconnect=cfg["dropconnect"])
    if cfg["dropconnect"] > 0:
        return DropConnectLinear(in_f, out_f, cfg["dropconnect"], bias=_bias(cfg))
    return nn.Linear(in_f, out_f, bias=_bias(cfg))


def _conv3x3(in_c: int, out_c: int, cfg: dict, stride: int = 1, allow_maxout: bool = True) -> nn.Module:
    if allow_maxout and is_maxout(cfg):
        return MaxoutConv2d(in_c, out_c, cfg["maxout_k"], kernel_size=3, stride=stride, padding=1, bias=_bias(cfg))
    return nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=_bias(cfg))


def _conv_norm_act(in_c: int, out_c: int, cfg: dict, stride: int = 1) -> list[nn.Module]:
    return [_conv3x3(in_c, out_c, cfg, stride), make_norm(out_c, True, cfg), make_activation(cfg, out_c, True)]


def _image_shape(input_shape: tuple, name: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise UserError(
            f"model.name={name} needs images of shape (channels, height, width), but the data has "
            f"shape {tuple(input_shape)}. Use model.name=mlp for flat feature vectors."
        )
    return tuple(int(s) for s in input_shape)


def _pooled(cfg: dict) -> list[nn.Module]:
    """End of the last stage: global average pool, then dropout before the head."""
    layers: list[nn.Module] = [GlobalAvgPool()]
    if cfg["dropout"] > 0:
        layers.append(Dropout(cfg["dropout"]))
    return layers


# --- mlp --------------------------------------------------------------------------------------

@MODELS.register("mlp")
def mlp(cfg: dict, input_shape: tuple, num_classes: int) -> Classifier:
    """Fully connected net: flatten, then ``depth`` blocks of
    (Linear | DropConnectLinear | Maxout) → norm → activation → dropout, then the linear head."""
    depth, width = cfg["depth"] or MLP_DEPTH, cfg["width"] or MLP_WIDTH
    in_f = math.prod(input_shape)
    blocks = []
    for i in range(depth):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        layers += [_linear(in_f if i == 0 else width, width, cfg), make_norm(width, False, cfg),
                   make_activation(cfg, width, False)]
        if cfg["dropout"] > 0:
            layers.append(Dropout(cfg["dropout"]))
        blocks.append(nn.Sequential(*layers))
    return Classifier(nn.Sequential(*blocks), nn.Linear(width, num_classes), input_shape, num_classes)


# --- convnet ----------------------------------------------------------------------------------

def fit_convnet_depth(depth: int, size: int, fractional: bool) -> int:
    """The number of stages (≤ depth) whose pools keep the smaller image side ≥ 1.

    Stage i < depth − 1 ends in a pool (2x2: side // 2; fractional: side · 1/√2), the last in a
    global average pool, so 8x8 digits allow 4 stages of 2x2 pools (8 → 4 → 2 → 1).
    """
    stages = 1
    while stages < depth:
        size = FractionalMaxPool.output_size(size) if fractional else size // 2
        if size < 1:
            break
        stages += 1
    return stages


@MODELS.register("convnet")
def convnet(cfg: dict, input_shape: tuple, num_classes: int) -> Classifier:
    """VGG-style: stage i = 2 × (conv3x3 → norm → activation) with width · 2^i channels, channel
    dropout (``model.channel_dropout`` > 0), then a 2x2 max pool (or a fractional max pool); the
    last stage ends in global average pooling and dropout, followed by the linear head."""
    channels, height, width_px = _image_shape(input_shape, "convnet")
    asked, width = cfg["depth"] or CONVNET_DEPTH, cfg["width"] or CONVNET_WIDTH
    depth = fit_convnet_depth(asked, min(height, width_px), cfg["fractional_pool"])
    if depth < asked:
        warnings.warn(f"model.depth={asked} convnet stages would pool a {height}x{width_px} image below "
                      f"1 pixel; using {depth} stages", stacklevel=2)
    stages, in_c = [], channels
    for i in range(depth):
        out_c = width * 2**i
        layers = _conv_norm_act(in_c, out_c, cfg) + _conv_norm_act(out_c, out_c, cfg)
        if cfg["channel_dropout"] > 0:
            layers.append(ChannelDropout(cfg["channel_dropout"]))
        if i < depth - 1:
            layers.append(FractionalMaxPool(cfg["fractional_eval_sets"]) if cfg["fractional_pool"] else nn.MaxPool2d(2))
        else:
            layers += _pooled(cfg)
        stages.append(nn.Sequential(*layers))
        in_c = out_c
    return Classifier(nn.Sequential(*stages), nn.Linear(in_c, num_classes), input_shape, num_classes)


# --- resnet -----------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """Residual block (He et al. 2016): out = act(shortcut(x) + StochasticDepth(p)(branch(x))),
    branch = conv3x3 → norm → act → conv3x3 → norm; shortcut = identity, or 1x1 conv → norm when
    the shape changes. With maxout the first conv is a :class:`MaxoutConv2d` and ``act`` is the
    identity (maxout has no elementwise form to apply after the sum).

    ``branch`` and ``shortcut`` are the names :func:`trainlab.init.zero_init_residual_blocks` looks for.
    """

    def __init__(self, in_c: int, out_c: int, stride: int, cfg: dict, drop_prob: float = 0.0):
        super().__init__()
        self.branch = nn.Sequential(
            *_conv_norm_act(in_c, out_c, cfg, stride),
            _conv3x3(out_c, out_c, cfg, allow_maxout=False),
            make_norm(out_c, True, cfg),
        )
        if stride == 1 and in_c == out_c:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_c, out_c, 1, stride=stride, bias=_bias(cfg)),
                                          make_norm(out_c, True, cfg))
        self.drop_path = StochasticDepth(drop_prob)
        self.act = make_activation(cfg, out_c, True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.shortcut(x) + self.drop_path(self.branch(x)))


def resnet_layout(depth: int, width: int | None) -> tuple[list[int], list[int]]:
    """(blocks per stage, channels per stage) for a resnet depth.

    6n + 2 (20, 32, 44, 56, 110): CIFAR-style, 3 stages of n blocks, width · (1, 2, 4) channels
    (width 16 gives the paper's 16/32/64). 18: 4 stages of 2 blocks, width · (1, 2, 4, 8) (64..512).
    """
    if depth == 18:
        width = width or RESNET18_WIDTH
        return [2, 2, 2, 2], [width, 2 * width, 4 * width, 8 * width]
    if depth >= 8 and (depth - 2) % 6 == 0:
        width, n = width or RESNET_WIDTH, (depth - 2) // 6
        return [n, n, n], [width, 2 * width, 4 * width]
    raise UserError(f"bad value {depth} for model.depth with model.name=resnet: expected 6n+2 "
                    "(CIFAR-style: 20, 32, 44, 56, 110) or 18")


@MODELS.register("resnet")
def resnet(cfg: dict, input_shape: tuple, num_classes: int) -> Classifier:
    """ResNet for small images: 3x3 stem (conv → norm → act), stages of :class:`BasicBlock`
    (the first block of each stage after the first halves the side with stride 2), global average
    pool, dropout, linear head. Stochastic depth drop probability grows linearly with the block
    index l = 1..L: p_l = (l / L) · ``model.stochastic_depth`` (Huang et al. 2016)."""
    channels, _, _ = _image_shape(input_shape, "resnet")
    blocks_per_stage, widths = resnet_layout(cfg["depth"] or RESNET_DEPTH, cfg["width"])
    stem = nn.Sequential(*_conv_norm_act(channels, widths[0], cfg))
    total, index, in_c, stages = sum(blocks_per_stage), 0, widths[0], []
    for s, (n, out_c) in enumerate(zip(blocks_per_stage, widths)):
        blocks: list[nn.Module] = []
        for b in range(n):
            index += 1
            stride = 2 if s > 0 and b == 0 else 1
            blocks.append(BasicBlock(in_c, out_c, stride, cfg, cfg["stochastic_depth"] * index / total))
            in_c = out_c
        stages.append(nn.Sequential(*blocks))
    stages[-1].extend(_pooled(cfg))
    return Classifier(nn.Sequential(stem, *stages), nn.Linear(in_c, num_classes), input_shape, num_classes)


__all__ = ["MODELS", "create_model", "build_model", "model_config", "Classifier", "BasicBlock", "GlobalAvgPool",
           "MultiStageFeatures", "read_several_stages",
           "fit_convnet_depth", "resnet_layout"]

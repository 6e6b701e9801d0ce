"""Weight initialisation (slides, reference/002, *Weight Initialization*), found by name.

Every entry of :data:`INITS` is ``fn(weight, **options) -> None`` and fills ``weight`` in place
(options such as ``std`` or the ``activation`` whose gain to use have their defaults in the
signature).
Din ("fan in") is the number of inputs of one output unit: in_features for a linear layer,
in_channels · kernel_size² for a conv ("for conv layers, Din is kernel_size² · input_channels").

:func:`create_init` returns a callable that applies a rule to a whole model: every Linear/Conv2d
weight (maxout pieces included), every bias, the head's scale, and zero-init of residual
branches; :func:`init_model` does the same from the ``model`` config section.

    create_init("kaiming", activation="relu")(model)
    init_model(model, cfg["model"])
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from trainlab.activations import PRELU_INIT
from trainlab.registry import Component, Registry, check_bounds, check_keywords


@dataclass(frozen=True)
class InitInfo(Component):
    def __call__(self, weight: Tensor, cfg_model: dict) -> None:
        """The config adapter: fill ``weight`` with this rule, options from the ``model`` section."""
        self.make(weight, **self.options_from(cfg_model))


INITS: Registry[InitInfo] = Registry("initialisation", entry=InitInfo, section="model")
# The options of the rules whose gain depends on the activation that follows the layer.
_GAIN_OPTIONS = {"activation": "activation", "leaky_slope": "leaky_slope"}


def fan_in(weight: Tensor) -> int:
    """Din: inputs per output unit (weight is out × in or out × in × kh × kw)."""
    return weight[0].numel()


def _relu_slope(activation: str, leaky_slope: float) -> float:
    """The negative slope a that sets He et al.'s gain √(2 / (1 + a²)) for the model's activation."""
    if activation == "leaky_relu":
        return leaky_slope
    if activation == "prelu":
        return PRELU_INIT
    return 0.0  # relu; also used for elu/gelu/silu/maxout, which are ReLU-like for x > 0


@INITS.register("constant", options={"value": "init_std"})
@torch.no_grad()
def constant(weight: Tensor, value: float = 0.01) -> None:
    """W = c with c = ``value`` (config: ``model.init_std``). Every unit of a layer computes the
    same function and gets the same gradient, so they stay identical forever: the symmetry problem."""
    weight.fill_(value)


@INITS.register("small_gaussian", options={"std": "init_std"})
@torch.no_grad()
def small_gaussian(weight: Tensor, std: float = 0.01) -> None:
    """W ~ N(0, std²) (lecture: ``W = 0.01 * np.random.randn(Din, Dout)``; config: ``model.init_std``).
    Fine for small nets; in deep ones the activations shrink towards zero layer by layer."""
    weight.normal_(0.0, std)


@INITS.register("xavier")
@torch.no_grad()
def xavier(weight: Tensor) -> None:
    """W ~ N(0, 1/Din): the lecture's "Xavier" form ``np.random.randn(Din, Dout) / np.sqrt(Din)``,
    chosen so that Var(y_i) = Din · Var(x_i) · Var(w_i) = Var(x_i).

    Glorot and Bengio's paper averages fan in and fan out, Var(w) = 2/(Din + Dout); that
    variant is ``xavier_uniform``. The lecture's form is torch's kaiming rule with gain 1.
    """
    nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="linear")


@INITS.register("xavier_uniform")
@torch.no_grad()
def xavier_uniform(weight: Tensor) -> None:
    """Glorot uniform: W ~ U(−a, a), a = √(6 / (Din + Dout)), so Var(w) = 2 / (Din + Dout)."""
    nn.init.xavier_uniform_(weight)


@INITS.register("kaiming", options=_GAIN_OPTIONS)
@torch.no_grad()
def kaiming(weight: Tensor, activation: str = "relu", leaky_slope: float = 0.01) -> None:
    """Kaiming/MSRA (He et al. 2015): W ~ N(0, 2 / Din) for ReLU — "ReLU correction: std = sqrt(2/Din)",
    because ReLU zeroes half of its inputs. For leaky ReLU/PReLU with slope a: N(0, 2 / ((1 + a²) Din))."""
    nn.init.kaiming_normal_(weight, a=_relu_slope(activation, leaky_slope), mode="fan_in", nonlinearity="leaky_relu")


@INITS.register("kaiming_uniform", options=_GAIN_OPTIONS)
@torch.no_grad()
def kaiming_uniform(weight: Tensor, activation: str = "relu", leaky_slope: float = 0.01) -> None:
    """Kaiming uniform: W ~ U(−b, b), b = √(3 · 2 / ((1 + a²) Din)): the same variance as ``kaiming``."""
    nn.init.kaiming_uniform_(weight, a=_relu_slope(activation, leaky_slope), mode="fan_in", nonlinearity="leaky_relu")


@INITS.register("orthogonal", options=_GAIN_OPTIONS)
@torch.no_grad()
def orthogonal(weight: Tensor, activation: str = "relu", leaky_slope: float = 0.01) -> None:
    """W = g · Q with Q (out × Din) having orthonormal rows (or columns, whichever are fewer)
    (Saxe et al. 2013); g is the activation's gain (√2 for ReLU, 5/3 for tanh) so that the
    signal keeps its scale through the nonlinearity as well as through the linear map."""
    if activation in ("tanh", "sigmoid", "linear"):
        gain = nn.init.calculate_gain(activation)
    else:
        gain = nn.init.calculate_gain("leaky_relu", _relu_slope(activation, leaky_slope))
    nn.init.orthogonal_(weight, gain=gain)


# --- whole-model initialisation --------------------------------------------------------------

_WEIGHTED = (nn.Linear, nn.Conv2d)


@torch.no_grad()
def zero_init_residual_blocks(model: nn.Module) -> int:
    """Make every residual block start as its shortcut: out = act(shortcut(x) + 0).

    A residual block is any module with a ``branch`` (``nn.Sequential`` ending in its last norm)
    and a ``shortcut``. The last norm's γ is set to 0 (Goyal et al. 2017); when the branch has no
    norm with a γ, its last conv/linear weight and bias are zeroed instead (Fixup, Zhang et al.
    2019) — the gradient still reaches them through the other layer of the branch.
    Returns the number of blocks changed.
    """
    changed = 0
    for block in model.modules():
        branch = getattr(block, "branch", None)
        if not (isinstance(branch, nn.Sequential) and hasattr(block, "shortcut")):
            continue
        last_norm = branch[-1]
        if isinstance(getattr(last_norm, "weight", None), Tensor):
            last_norm.weight.zero_()
            changed += 1
            continue
        layers = [m for m in branch.modules() if isinstance(m, _WEIGHTED)]
        if layers:
            layers[-1].weight.zero_()
            if layers[-1].bias is not None:
                layers[-1].bias.zero_()
            changed += 1
    return changed


@torch.no_grad()
def init_module(model: nn.Module, rule: Callable[[Tensor], None], bias: float = 0.0, head_scale: float = 0.1,
                zero_init_residual: bool = True) -> nn.Module:
    """Initialise ``model`` in place and return it:

    - every Linear/Conv2d weight (maxout pieces and DropConnect layers are Linear/Conv2d too)
      with ``rule``; norm layers keep γ = 1, β = 0;
    - every bias of those layers = ``bias``;
    - ``model.head.weight`` × ``head_scale`` when the model has a Linear ``head`` (small logits
      at init → loss ≈ ln C);
    - ``zero_init_residual``: see :func:`zero_init_residual_blocks` (no effect without residual blocks).
    """
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            rule(module.weight)
            if module.bias is not None:
                module.bias.fill_(bias)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        head.weight.mul_(head_scale)
    if zero_init_residual:
        zero_init_residual_blocks(model)
    return model


def create_init(name: str, bias: float = 0.0, head_scale: float = 0.1, zero_init_residual: bool = True,
                **options) -> Callable[[nn.Module], nn.Module]:
    """A callable that initialises a whole module in place (see :func:`init_module`) with the
    rule ``name`` and its ``options``:

        create_init("kaiming", activation="leaky_relu", leaky_slope=0.1)(model)
        create_init("small_gaussian", std=0.01, head_scale=1.0)(model)

    An unknown name or option raises :class:`trainlab.errors.ConfigError`.
    """
    info = INITS.get(name)
    what = f"initialisation {name!r}"
    check_keywords(what, options, info.keywords()[1:])  # now, not at the first layer
    check_bounds(what, {**options, "head_scale": head_scale},
                 {"head_scale": "model.head_scale", **{k: f"model.{key}" for k, key in info.options.items()}})
    return partial(init_module, rule=partial(info.make, **options), bias=bias, head_scale=head_scale,
                   zero_init_residual=zero_init_residual)


def init_model(model: nn.Module, cfg_model: dict) -> nn.Module:
    """Initialise ``model`` in place as the ``model`` config section says (``init`` and its
    options, ``bias_init``, ``head_scale``, ``zero_init_residual``), and return it."""
    info = INITS.get(cfg_model["init"])
    return init_module(model, partial(info.make, **info.options_from(cfg_model)), cfg_model["bias_init"],
                       cfg_model["head_scale"], cfg_model.get("zero_init_residual", False))


__all__ = ["INITS", "InitInfo", "create_init", "init_module", "init_model", "zero_init_residual_blocks", "fan_in"]

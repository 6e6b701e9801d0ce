"""Weight initialisation (slides, reference/002, *Weight Initialization*), found by name.

Every entry of :data:`INITS` is ``fn(weight, cfg_model) -> None`` and fills ``weight`` in place.
Din ("fan in") is the number of inputs of one output unit: in_features for a linear layer,
in_channels · kernel_size² for a conv ("for conv layers, Din is kernel_size² · input_channels").

:func:`init_model` applies the configured rule to a whole model: every Linear/Conv2d weight
(maxout pieces included), every bias, the head's scale, and zero-init of residual branches.

    init_model(model, cfg["model"])
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from trainlab.activations import PRELU_INIT
from trainlab.registry import Registry

INITS: Registry = Registry("initialisation")


def fan_in(weight: Tensor) -> int:
    """Din: inputs per output unit (weight is out × in or out × in × kh × kw)."""
    return weight[0].numel()


def _relu_slope(cfg_model: dict) -> float:
    """The negative slope a that sets He et al.'s gain √(2 / (1 + a²)) for the model's activation."""
    activation = cfg_model.get("activation", "relu")
    if activation == "leaky_relu":
        return cfg_model["leaky_slope"]
    if activation == "prelu":
        return PRELU_INIT
    return 0.0  # relu; also used for elu/gelu/silu/maxout, which are ReLU-like for x > 0


@INITS.register("constant")
@torch.no_grad()
def constant(weight: Tensor, cfg_model: dict) -> None:
    """W = c with c = ``model.init_std``. Every unit of a layer computes the same function and
    gets the same gradient, so they stay identical forever: the symmetry problem."""
    weight.fill_(cfg_model["init_std"])


@INITS.register("small_gaussian")
@torch.no_grad()
def small_gaussian(weight: Tensor, cfg_model: dict) -> None:
    """W ~ N(0, std²), std = ``model.init_std`` (lecture: ``W = 0.01 * np.random.randn(Din, Dout)``).
    Fine for small nets; in deep ones the activations shrink towards zero layer by layer."""
    weight.normal_(0.0, cfg_model["init_std"])


@INITS.register("xavier")
@torch.no_grad()
def xavier(weight: Tensor, cfg_model: dict) -> None:
    """W ~ N(0, 1/Din): the lecture's "Xavier" form ``np.random.randn(Din, Dout) / np.sqrt(Din)``,
    chosen so that Var(y_i) = Din · Var(x_i) · Var(w_i) = Var(x_i).

    Glorot and Bengio's paper averages fan in and fan out, Var(w) = 2/(Din + Dout); that
    variant is ``xavier_uniform``. The lecture's form is torch's kaiming rule with gain 1.
    """
    nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="linear")


@INITS.register("xavier_uniform")
@torch.no_grad()
def xavier_uniform(weight: Tensor, cfg_model: dict) -> None:
    """Glorot uniform: W ~ U(−a, a), a = √(6 / (Din + Dout)), so Var(w) = 2 / (Din + Dout)."""
    nn.init.xavier_uniform_(weight)


@INITS.register("kaiming")
@torch.no_grad()
def kaiming(weight: Tensor, cfg_model: dict) -> None:
    """Kaiming/MSRA (He et al. 2015): W ~ N(0, 2 / Din) for ReLU — "ReLU correction: std = sqrt(2/Din)",
    because ReLU zeroes half of its inputs. For leaky ReLU/PReLU with slope a: N(0, 2 / ((1 + a²) Din))."""
    nn.init.kaiming_normal_(weight, a=_relu_slope(cfg_model), mode="fan_in", nonlinearity="leaky_relu")


@INITS.register("kaiming_uniform")
@torch.no_grad()
def kaiming_uniform(weight: Tensor, cfg_model: dict) -> None:
    """Kaiming uniform: W ~ U(−b, b), b = √(3 · 2 / ((1 + a²) Din)): the same variance as ``kaiming``."""
    nn.init.kaiming_uniform_(weight, a=_relu_slope(cfg_model), mode="fan_in", nonlinearity="leaky_relu")


@INITS.register("orthogonal")
@torch.no_grad()
def orthogonal(weight: Tensor, cfg_model: dict) -> None:
    """W = g · Q with Q (out × Din) having orthonormal rows (or columns, whichever are fewer)
    (Saxe et al. 2013); g is the activation's gain (√2 for ReLU, 5/3 for tanh) so that the
    signal keeps its scale through the nonlinearity as well as through the linear map."""
    activation = cfg_model.get("activation", "relu")
    if activation in ("tanh", "sigmoid", "linear"):
        gain = nn.init.calculate_gain(activation)
    else:
        gain = nn.init.calculate_gain("leaky_relu", _relu_slope(cfg_model))
    nn.init.orthogonal_(weight, gain=gain)


# --- whole-model initialisation --------------------------------------------------------------

_WEIGHTED = (nn.Linear, nn.Conv2d)


@torch.no_grad()
def zero_init_residual(model: nn.Module) -> int:
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
def init_model(model: nn.Module, cfg_model: dict) -> nn.Module:
    """Initialise ``model`` in place as ``cfg_model`` says, and return it.

    - every Linear/Conv2d weight (maxout pieces and DropConnect layers are Linear/Conv2d too) with
      the rule ``model.init``; norm layers keep γ = 1, β = 0;
    - every bias of those layers = ``model.bias_init``;
    - ``model.head.weight`` × ``model.head_scale`` (small logits at init → loss ≈ ln C);
    - ``model.zero_init_residual``: see :func:`zero_init_residual`.
    """
    rule = INITS.get(cfg_model["init"])
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            rule(module.weight, cfg_model)
            if module.bias is not None:
                module.bias.fill_(cfg_model["bias_init"])
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        head.weight.mul_(cfg_model["head_scale"])
    if cfg_model.get("zero_init_residual", False):
        zero_init_residual(model)
    return model


__all__ = ["INITS", "init_model", "zero_init_residual", "fan_in"]

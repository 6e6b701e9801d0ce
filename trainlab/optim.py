"""Optimisers (lecture: "Optimization"), each a thin factory over ``torch.optim``.

Every update rule is torch's own; trainlab only maps config keys to torch arguments and builds
parameter groups. ``tests/test_optim.py`` checks each one, step by step, against the lecture's
NumPy code on an ill-conditioned quadratic.

    opt = create_optimizer(model, "nesterov", lr=0.05, weight_decay=5e-4, momentum=0.9)
    opt = build_optimizer(model, cfg)                                   # optim.*, train.batch_size
    opt = build_optimizer(model, cfg, lr_multipliers={"features": 0.1})  # fine-tuning

Registry entries are :class:`OptimInfo` records around factories
``make(params, lr, weight_decay=0.0, **options) -> torch.optim.Optimizer``; ``params`` is the
output of :func:`param_groups` (or a plain list of tensors) and ``lr`` the base rate: each
group's rate is ``lr * group["lr_mult"]``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from trainlab.errors import UserError
from trainlab.registry import Component, Registry, check_bounds


@dataclass(frozen=True)
class OptimInfo(Component):
    """An optimiser entry. ``full_batch``: the method needs the whole, noise-free objective and a
    closure (L-BFGS): the trainer then turns off dropout and augmentation and feeds full batches."""

    full_batch: bool = False

    def __call__(self, params, cfg_optim: dict, lr: float) -> torch.optim.Optimizer:
        """The config adapter: this optimiser over ``params`` with options from the ``optim`` section."""
        return self.make(params, lr, weight_decay=cfg_optim.get("weight_decay", 0.0), **self.options_from(cfg_optim))


OPTIMIZERS: Registry[OptimInfo] = Registry("optimiser", entry=OptimInfo, section="optim")


# --- parameter groups -------------------------------------------------------------------------


def is_no_decay(param: torch.Tensor) -> bool:
    """Biases and norm gains/shifts (every parameter with ndim <= 1) are not decayed.

    Why: decaying them does not reduce the model's capacity (a bias does not multiply an input),
    it only pulls batch-norm's gamma towards 0 and shrinks the signal (timm, Goyal et al. 2017).
    The regularisation penalties use the same rule, so the two never disagree.
    """
    return param.ndim <= 1


def _matching_prefix(name: str, prefixes: Iterable[str]) -> str | None:
    """The longest prefix that names ``name`` or a module containing it ("features.0" matches
    "features.0.weight" but not "features.01.weight")."""
    found = [p for p in prefixes if name == p or name.startswith(p + ".")]
    return max(found, key=len) if found else None


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay_bias_norm: bool,
    lr_multipliers: dict[str, float] | None = None,
) -> list[dict]:
    """Split the trainable parameters into groups by (weight decay, learning-rate multiplier).

    Each group is ``{"params", "weight_decay", "lr_mult", "name"}``; ``name`` is "decay" or
    "no_decay", followed by ":<prefix>" when an ``lr_multipliers`` prefix matched (the longest
    one wins). Frozen parameters (requires_grad=False) are left out, so the optimiser keeps no
    state for them. The optimiser sets each group's ``lr = base_lr * lr_mult``.
    """
    lr_multipliers = dict(lr_multipliers or {})
    groups: dict[tuple[str, str | None], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        kind = "no_decay" if no_decay_bias_norm and is_no_decay(param) else "decay"
        prefix = _matching_prefix(name, lr_multipliers)
        key = (kind, prefix)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": weight_decay if kind == "decay" else 0.0,
                "lr_mult": float(lr_multipliers[prefix]) if prefix is not None else 1.0,
                "name": kind if prefix is None else f"{kind}:{prefix}",
            }
        groups[key]["params"].append(param)
    if not groups:
        raise UserError("the model has no trainable parameters (every parameter has requires_grad=False)")
    return list(groups.values())


def _with_lr(groups, lr: float) -> list[dict]:
    """Copies of the groups with ``lr = initial_lr = lr * lr_mult``; bare tensors (a list, or a
    generator such as ``model.parameters()``) become one group. ``initial_lr`` is what a
    LambdaLR multiplies by its schedule."""
    groups = list(groups)
    if groups and isinstance(groups[0], torch.Tensor):
        groups = [{"params": groups}]  # weight decay then comes from the optimiser's default
    out = []
    for g in groups:
        g = dict(g)
        g.setdefault("lr_mult", 1.0)
        g.setdefault("name", "all")
        g["lr"] = lr * g["lr_mult"]
        g["initial_lr"] = g["lr"]
        out.append(g)
    return out


# --- the update rules (all torch.optim) ---------------------------------------------------------


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Vanilla SGD: ``x -= learning_rate * dx``."""
    return torch.optim.SGD(_with_lr(params, lr), lr=lr, momentum=0.0, weight_decay=weight_decay)


@OPTIMIZERS.register("momentum", options={"momentum": "momentum"})
def momentum(params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD+Momentum: ``vx = rho * vx + dx; x -= learning_rate * vx`` (rho = ``momentum``).

    Equivalent, for a constant rate, to ``vx = rho * vx - learning_rate * dx; x += vx``.
    """
    return torch.optim.SGD(_with_lr(params, lr), lr=lr, momentum=momentum, nesterov=False, weight_decay=weight_decay)


@OPTIMIZERS.register("nesterov", options={"momentum": "momentum"})
def nesterov(params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Nesterov momentum in the lecture's change of variables (gradient at the current x):
    ``old_v = v; v = rho * v - learning_rate * dx; x += -rho * old_v + (1 + rho) * v``.

    torch's ``SGD(nesterov=True)`` is this rule with its buffer ``b = -v / learning_rate``.
    """
    return torch.optim.SGD(_with_lr(params, lr), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


@OPTIMIZERS.register("adagrad", options={"eps": "eps"})
def adagrad(params, lr: float, weight_decay: float = 0.0, eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdaGrad: ``grad_squared += dx * dx; x -= learning_rate * dx / (np.sqrt(grad_squared) + eps)``."""
    return torch.optim.Adagrad(_with_lr(params, lr), lr=lr, lr_decay=0.0, initial_accumulator_value=0.0, eps=eps,
                               weight_decay=weight_decay)


@OPTIMIZERS.register("rmsprop", options={"alpha": "alpha", "eps": "eps"})
def rmsprop(params, lr: float, weight_decay: float = 0.0, alpha: float = 0.99, eps: float = 1e-8) -> torch.optim.Optimizer:
    """RMSProp ("leaky AdaGrad", decay_rate = ``alpha``):
    ``grad_squared = decay_rate * grad_squared + (1 - decay_rate) * dx * dx;
    x -= learning_rate * dx / (np.sqrt(grad_squared) + eps)``."""
    return torch.optim.RMSprop(_with_lr(params, lr), lr=lr, alpha=alpha, eps=eps, momentum=0.0, centered=False,
                               weight_decay=weight_decay)


@OPTIMIZERS.register("adam", options={"betas": "betas", "eps": "eps"})
def adam(params, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam (full form, bias-corrected), t = 1, 2, ...:
    ``first_moment = beta1 * first_moment + (1 - beta1) * dx;
    second_moment = beta2 * second_moment + (1 - beta2) * dx * dx;
    first_unbias = first_moment / (1 - beta1 ** t); second_unbias = second_moment / (1 - beta2 ** t);
    x -= learning_rate * first_unbias / (np.sqrt(second_unbias) + eps)``.

    ``weight_decay`` here is L2 in the gradient (dx += wd * x), so it is rescaled by the
    adaptive denominator; use adamw for decay that is not.
    """
    return torch.optim.Adam(_with_lr(params, lr), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


class AdamAlmost(torch.optim.Optimizer):
    """The slides' "Adam (almost)", without bias correction:
    ``first_moment = beta1 * first_moment + (1 - beta1) * dx;
    second_moment = beta2 * second_moment + (1 - beta2) * dx * dx;
    x -= learning_rate * first_moment / (np.sqrt(second_moment) + eps)``.

    Both moments start at zero, so the first steps divide by a tiny second moment: the first is
    lr · (1 − β1)/√(1 − β2) · sign(dx), about 3.2 lr with the default betas, against lr for Adam.
    Kept to show why Adam corrects the bias (``trainlab lab adaptive``), not for training.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                dx = p.grad if not group["weight_decay"] else p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["first_moment"] = torch.zeros_like(p)
                    state["second_moment"] = torch.zeros_like(p)
                m, v = state["first_moment"], state["second_moment"]
                m.mul_(b1).add_(dx, alpha=1 - b1)
                v.mul_(b2).addcmul_(dx, dx, value=1 - b2)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-group["lr"])
        return loss


@OPTIMIZERS.register("adam_uncorrected", options={"betas": "betas", "eps": "eps"})
def adam_uncorrected(params, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                     eps: float = 1e-8) -> torch.optim.Optimizer:
    """The slides' "Adam (almost)": Adam without bias correction (:class:`AdamAlmost`)."""
    return AdamAlmost(_with_lr(params, lr), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw", options={"betas": "betas", "eps": "eps"})
def adamw(params, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter): decoupled weight decay ``x -= learning_rate * wd * x`` before
    the Adam step, with dx the gradient of the loss alone (the decay never enters the moments)."""
    return torch.optim.AdamW(_with_lr(params, lr), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("lbfgs", options={"history_size": "lbfgs_history", "max_iter": "lbfgs_iters"}, full_batch=True)
def lbfgs(params, lr: float, weight_decay: float = 0.0, history_size: int = 10, max_iter: int = 20) -> torch.optim.Optimizer:
    """L-BFGS with a strong-Wolfe line search: full batch and deterministic, as the lecture says
    ("if you have a single, deterministic f(x) then L-BFGS will probably work very nicely").

    ``step(closure)`` runs up to ``max_iter`` inner iterations, keeping ``history_size``
    curvature pairs. torch's LBFGS has one parameter group and no weight decay, so all groups
    are merged; per-layer rates or weight decay are refused (use reg.penalty for L2).
    """
    groups = _with_lr(params, lr)
    if len({g["lr_mult"] for g in groups}) > 1:
        raise UserError("lbfgs updates every parameter with one learning rate: per-layer learning-rate multipliers are not supported")
    if any(g.get("weight_decay", weight_decay) for g in groups):
        raise UserError("lbfgs has no weight decay: set optim.weight_decay=0 and use reg.penalty=l2 (the penalty in the loss)")
    merged = {
        "params": [p for g in groups for p in g["params"]],
        "lr": groups[0]["lr"],
        "initial_lr": groups[0]["initial_lr"],
        "lr_mult": groups[0]["lr_mult"],
        "name": "all",
    }
    return torch.optim.LBFGS([merged], lr=lr, max_iter=max_iter, history_size=history_size, line_search_fn="strong_wolfe")


def create_optimizer(model_or_params: nn.Module | Iterable, name: str, lr: float, weight_decay: float = 0.0,
                     no_decay_bias_norm: bool = True, lr_multipliers: dict[str, float] | None = None,
                     **options) -> torch.optim.Optimizer:
    """The update rule ``name`` at base rate ``lr``, e.g.
    ``create_optimizer(model, "nesterov", lr=0.05, weight_decay=5e-4, momentum=0.9)``.

    Given a module, its trainable parameters are grouped by :func:`param_groups` (no weight decay
    on biases and norm parameters unless ``no_decay_bias_norm=False``; ``lr_multipliers`` maps
    module-name prefixes to rate multipliers). Given parameters (tensors or group dicts), they
    are used as they are. Each group carries ``initial_lr = lr * lr_mult``, what a schedule from
    :func:`trainlab.schedules.create_scheduler` multiplies. ``options`` are the rule's own
    (momentum, betas, eps, alpha, history_size, max_iter); an unknown name or option raises
    :class:`trainlab.errors.ConfigError`.
    """
    info = OPTIMIZERS.get(name)
    check_bounds(f"optimiser {name!r}", {"lr": lr, "weight_decay": weight_decay},
                 {"lr": "optim.lr", "weight_decay": "optim.weight_decay"})
    if isinstance(model_or_params, nn.Module):
        params = param_groups(model_or_params, weight_decay, no_decay_bias_norm, lr_multipliers)
    else:
        params = list(model_or_params)
    return info.create(params, lr, weight_decay=weight_decay, **options)


# --- from the full config -------------------------------------------------------------------------


def base_lr(cfg: dict) -> float:
    """``optim.lr``, times ``train.batch_size / optim.reference_batch`` when ``optim.batch_scaling``
    (the linear scaling rule: "if you increase the batch size by N, also scale the initial
    learning rate by N")."""
    lr = float(cfg["optim"]["lr"])
    if cfg["optim"].get("batch_scaling", False):
        lr *= cfg["train"]["batch_size"] / cfg["optim"]["reference_batch"]
    return lr


def base_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each parameter group's undecayed rate, read back from the optimiser: ``initial_lr`` (set by
    :func:`create_optimizer` and by torch's LR schedulers when they are built), else ``lr``."""
    return [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]


def optimizer_base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The base rate the optimiser was built with (batch scaling included, per-group multipliers
    out): group 0's ``initial_lr / lr_mult``, the number :func:`base_lr` computes from a config."""
    return base_lrs(optimizer)[0] / optimizer.param_groups[0].get("lr_mult", 1.0)


def build_optimizer(model: nn.Module, cfg: dict, lr_multipliers: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """The optimiser named by ``optim.name`` over ``model``'s trainable parameters: the config
    adapter of :func:`create_optimizer`, at the rate :func:`base_lr`."""
    o = cfg["optim"]
    return create_optimizer(model, o["name"], base_lr(cfg), weight_decay=o.get("weight_decay", 0.0),
                            no_decay_bias_norm=o.get("no_decay_bias_norm", True), lr_multipliers=lr_multipliers,
                            **OPTIMIZERS.get(o["name"]).options_from(o))


def is_full_batch(cfg: dict) -> bool:
    """True when the optimiser needs the whole, noise-free objective (lbfgs): the trainer then
    turns off dropout and augmentation and feeds full batches."""
    return OPTIMIZERS.get(cfg["optim"]["name"]).full_batch


__all__ = ["OPTIMIZERS", "OptimInfo", "create_optimizer", "param_groups", "is_no_decay", "build_optimizer", "base_lr",
           "base_lrs", "optimizer_base_lr",
           "is_full_batch"]

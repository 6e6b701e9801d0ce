"""Gradient check (lecture: "Gradient checking"): compare backprop's gradient with a numerical one.

For a few coordinates θ_i of every parameter tensor (and of every floating-point input):

    numeric  n = (L(θ + h e_i) − L(θ − h e_i)) / 2h          (centred difference, error O(h²))
    analytic a = ∂L/∂θ_i from autograd
    relative error = |a − n| / max(|a|, |n|)                  pass when < 1e-5

all in float64, on a copy of the module (the caller's module is never touched).

Why these choices:

- float64: in float32 the rounding error of L, ~1e-7·|L|, divided by h swamps any real
  difference; in float64 it is ~1e-16·|L| / h ≈ 1e-11 for h = 1e-5.
- h = 1e-5: truncation error h²·L'''/6 ≈ 1e-11, rounding ≈ 1e-11: both far below 1e-5 of
  any gradient that is not itself at round-off level.
- deterministic: dropout, DropConnect, stochastic depth and fractional pooling are switched to
  their eval behaviour (a random mask would differ between L(θ + h) and L(θ − h)); batch norm
  stays in train mode, so the batch-statistics backward that training uses is what is checked.
- kinks (ReLU at 0, max-pool ties, |w| at 0): with a kink within ±h of θ_i the centred
  difference averages the slopes on its two sides and matches neither — at a kink exactly at
  θ_i (a zero-initialised residual branch feeding a ReLU whose input is exactly 0) it is half
  the one-sided slope for every h. The one-sided slopes, Richardson-extrapolated from steps h
  and h/2, r± = ±(4(L(θ ± h/2) − L(θ)) − (L(θ ± h) − L(θ))) / h, agree with each other to O(h²)
  for a smooth L and differ by the jump of the derivative at a kink. A coordinate where they
  disagree by more than the tolerance is counted under ``kinks`` and not judged. A wrong
  backward still fails: there r₊ ≈ r₋ ≈ the numeric derivative ≠ autograd's.
- coordinates are drawn among those whose analytic gradient is at least 1e-3 of the tensor's
  largest, plus one drawn from all of them, so a backward that wrongly returns zeros is caught
  too. A coordinate whose gradient is so small that rounding alone could push its relative error
  past the tolerance (|∂L/∂θ_i| < ~1e-15·|L| / (h · 1e-5), ≈ 2e-5 for a loss near ln 10) is
  counted under ``round_off`` and not judged.

    report = gradcheck_module(my_layer, (torch.randn(4, 16),))   # loss: random projection of the output
    assert all(r["passed"] for r in report)
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

GRADCHECK_STEP = 1e-5
GRADCHECK_TOLERANCE = 1e-5
# Sample coordinates whose |analytic gradient| ≥ this fraction of the tensor's largest.
RELEVANT_GRADIENT = 1e-3
# Rounding noise of one loss evaluation, relative to max(|L|, 1): ~5 float64 ulps (a loss sums
# a few hundred rounded terms; their errors mostly cancel — measured ≈ 1e-16·|L|). A difference
# quotient then carries noise ≈ LOSS_ROUNDING·|L| / h, and a coordinate is judged only when its
# gradient is large enough that this noise alone stays below the tolerance.
LOSS_ROUNDING = 1e-15

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm,)


def relative_error(a: float, n: float) -> float:
    """|a − n| / max(|a|, |n|), and 0 when both are 0."""
    scale = max(abs(a), abs(n))
    return abs(a - n) / scale if scale > 0 else 0.0


def deterministic_float64_copy(module: nn.Module) -> nn.Module:
    """A float64 copy whose forward is a deterministic function of parameters and inputs:
    every layer in eval behaviour except batch norm, which keeps using batch statistics."""
    model = copy.deepcopy(module).double().eval()
    for m in model.modules():
        if isinstance(m, NORM_LAYERS):
            m.train()
    return model


def _random_projection(seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """L = Σ out ⊙ R with a fixed R ~ N(0, 1): every output coordinate's gradient matters."""
    cache: dict[tuple, torch.Tensor] = {}

    def loss(out: torch.Tensor, module: nn.Module) -> torch.Tensor:
        key = tuple(out.shape)
        if key not in cache:
            g = torch.Generator().manual_seed(seed)
            cache[key] = torch.randn(key, generator=g, dtype=torch.float64).to(out.device)
        return (out * cache[key]).sum()

    return loss


def evaluate_at(f: Callable[[], float], t: torch.Tensor, idx: tuple, offsets: Sequence[float]) -> list[float]:
    """f() with t[idx] moved by each offset in turn; t is left exactly as it was."""
    original = t[idx].clone()
    values = []
    for offset in offsets:
        t[idx] = original + offset
        values.append(f())
    t[idx] = original
    return values


def _coordinates(grad: torch.Tensor, count: int, gen: torch.Generator) -> list[int]:
    flat = grad.detach().abs().reshape(-1).cpu()
    relevant = torch.nonzero(flat >= RELEVANT_GRADIENT * flat.max()).reshape(-1) if flat.max() > 0 else torch.arange(0)
    picks = relevant[torch.randperm(len(relevant), generator=gen)[:max(count - 1, 1)]].tolist()
    picks.append(int(torch.randint(len(flat), (1,), generator=gen)))
    return list(dict.fromkeys(picks))  # a coordinate drawn twice is checked once


def gradcheck_module(module: nn.Module, inputs: Sequence[torch.Tensor], loss_fn: Callable | None = None,
                     coords: int = 4, h: float = GRADCHECK_STEP, tolerance: float = GRADCHECK_TOLERANCE,
                     seed: int = 0, check_inputs: bool = True) -> list[dict]:
    """Gradient check of ``module`` on ``inputs``; one report per parameter/input tensor:
    ``{name, shape, checked, kinks, round_off, max_relative_error, passed, worst}``; ``passed`` is
    judged on the ``checked`` coordinates only (see the module docstring for kinks and round-off).

    loss_fn: ``(output, module) -> scalar`` (default: a fixed random projection of the output);
    ``module`` is the float64 copy being checked, for a loss that also penalises its weights.
    """
    model = deterministic_float64_copy(module)
    xs = [x.detach().double().requires_grad_(check_inputs) if x.is_floating_point() else x for x in inputs]
    loss_fn = loss_fn or _random_projection(seed)
    tensors = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    tensors += [(f"input[{i}]", x) for i, x in enumerate(xs) if x.is_floating_point() and check_inputs]

    def loss_of(m: nn.Module) -> torch.Tensor:
        return loss_fn(m(*xs), m)

    loss = loss_of(model)
    grads = torch.autograd.grad(loss, [t for _, t in tensors], allow_unused=True)
    f0 = float(loss.detach())
    noise = LOSS_ROUNDING * max(abs(f0), 1.0) / h
    gen = torch.Generator().manual_seed(seed)
    reports = []
    with torch.no_grad():
        for (name, t), g in zip(tensors, grads):
            g = torch.zeros_like(t) if g is None else g
            report = {"name": name, "shape": list(t.shape), "checked": 0, "kinks": 0, "round_off": 0,
                      "max_relative_error": 0.0, "passed": True, "worst": None}
            for i in _coordinates(g, coords, gen):
                idx = tuple(int(k) for k in torch.unravel_index(torch.tensor(i), t.shape))
                f_plus, f_minus, f_half_plus, f_half_minus = evaluate_at(
                    lambda: float(loss_of(model)), t, idx, (h, -h, h / 2, -h / 2))
                numeric, analytic = (f_plus - f_minus) / (2 * h), float(g[idx])
                right = (4 * (f_half_plus - f0) - (f_plus - f0)) / h
                left = -(4 * (f_half_minus - f0) - (f_minus - f0)) / h
                if max(abs(analytic), abs(numeric)) * tolerance < noise:
                    report["round_off"] += 1
                    continue
                if abs(right - left) > tolerance * max(abs(right), abs(left)) + 10 * noise:
                    report["kinks"] += 1
                    continue
                report["checked"] += 1
                err = relative_error(analytic, numeric)
                if err >= report["max_relative_error"]:
                    report["max_relative_error"] = err
                    report["worst"] = {"index": list(idx), "analytic": analytic, "numeric": numeric}
            report["passed"] = report["max_relative_error"] < tolerance
            reports.append(report)
    return reports

"""``trainlab lab lbfgs``: full-batch L-BFGS against Adam on a small deterministic problem, and
both again with minibatch noise.

The lecture (slides, "L-BFGS"): "Usually works very well in full batch, deterministic mode i.e.
if you have a single, deterministic f(x) then L-BFGS will probably work very nicely" and "Does not
transfer very well to mini-batch setting. Gives bad results." Both optimisers are trainlab's
:data:`OPTIMIZERS` entries (torch's LBFGS with a strong-Wolfe line search, torch's Adam), given
the same budget of gradient evaluations, counted in passes over the training set.

trainlab's trainer always gives L-BFGS the full batch (the lecture's advice), so the minibatch
variant — the thing the lecture warns against — runs in the small loop below instead.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trainlab.classifier import build_classifier
from trainlab.evaluate import evaluate
from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    SLIDES,
    SLIDES_2016,
    LabContext,
    LabResult,
    claim,
    experiment,
    times,
)
from trainlab.optim import OPTIMIZERS
from trainlab.plots import plt, save_figure

ADAM_LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
MINIBATCH = 64
# A smooth objective (tanh, no dropout, no augmentation) on the whole digits training split.
# lbfgs_iters=5: each L-BFGS step makes at most 5 updates, so the budget is kept to within a step.
DEFAULTS = ["model.name=mlp", "model.depth=1", "model.width=64", "model.activation=tanh", "model.init=xavier",
            "optim.lbfgs_iters=5", "optim.lbfgs_history=10"]
QUICK = ["data.subset=300"]


def train_loss(model, x, y) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def optimise(cfg: dict, data, optimiser: str, lr: float, batch: int | None, passes: float, seed: int = 0) -> dict:
    """Train a fresh model (trainlab's ``build_classifier``: preprocessing + net) with
    ``optimiser`` until ``passes`` passes' worth of gradient evaluations are used; ``batch`` None
    is the full batch. Returns the full-batch training loss after each step, against passes."""
    torch.manual_seed(seed)
    x, y = data.train_x.cpu(), data.train_y.cpu()
    model = build_classifier(cfg, data.input_shape, data.num_classes, x_train=x)
    opt = OPTIMIZERS.get(optimiser)(list(model.parameters()), cfg["optim"], lr)
    n = len(y)
    gen = torch.Generator().manual_seed(seed)
    used, curve, order, t0 = 0.0, [(0.0, train_loss(model, x, y))], torch.empty(0, dtype=torch.long), time.perf_counter()
    while used < passes:
        if batch is None:
            xb, yb = x, y
        else:
            if len(order) < batch:
                order = torch.randperm(n, generator=gen)
            idx, order = order[:batch], order[batch:]
            xb, yb = x[idx], y[idx]

        def closure(xb=xb, yb=yb):
            nonlocal used
            used += len(yb) / n  # every loss-and-gradient evaluation costs its share of a pass
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            return loss

        opt.step(closure)
        curve.append((used, train_loss(model, x, y)))
        if not math.isfinite(curve[-1][1]):
            break
    return {"curve": curve, "seconds": time.perf_counter() - t0, "model": model}


def at_budget(curve: list[tuple[float, float]], passes: float) -> tuple[float, float]:
    """(passes used, training loss) at the last step that stayed within the budget: an L-BFGS
    step's line search may run past it, and those evaluations must not count in its favour."""
    return [point for point in curve if point[0] <= passes + 1e-9][-1]


def tuned_adam(cfg, data, batch, passes, lrs) -> tuple[float, dict]:
    """Adam at the rate from ``lrs`` with the lowest final training loss (NaN counts as worst)."""
    runs = {lr: optimise(cfg, data, "adam", lr, batch, passes) for lr in lrs}
    final = lambda r: at_budget(r["curve"], passes)[1]  # noqa: E731
    lr = min(runs, key=lambda k: final(runs[k]) if math.isfinite(final(runs[k])) else math.inf)
    return lr, runs[lr]


def lbfgs_claims(rows: dict) -> list[dict]:
    loss = {k: r["final_train_loss"] for k, r in rows.items()}
    finite = lambda v: v if v is not None and math.isfinite(v) else math.inf  # noqa: E731
    full = finite(loss["adam, full batch"]) / max(finite(loss["lbfgs, full batch"]), 1e-12)
    mini = finite(loss["lbfgs, minibatch"]) / max(finite(loss["adam, minibatch"]), 1e-12)
    fmt = lambda v: "diverged" if not math.isfinite(finite(v)) else f"{v:.3g}"  # noqa: E731
    return [
        claim("Usually works very well in full batch, deterministic mode i.e. if you have a single, deterministic "
              "f(x) then L-BFGS will probably work very nicely", f"{SLIDES}; {SLIDES_2016}",
              f"full-batch training loss after the same budget: lbfgs {fmt(loss['lbfgs, full batch'])}, adam (best "
              f"rate) {fmt(loss['adam, full batch'])}: adam's is {times(full)} lbfgs's", graded_ratio(full)),
        claim("Does not transfer very well to mini-batch setting. Gives bad results.", f"{SLIDES}; {SLIDES_2016}",
              f"with batches of {MINIBATCH}: lbfgs {fmt(loss['lbfgs, minibatch'])}, adam {fmt(loss['adam, minibatch'])}"
              f": lbfgs's is {times(mini)} adam's", graded_ratio(mini)),
    ]


def graded_ratio(r: float) -> str:
    """≥ 2× better: agrees; better at all (> 1.1×): partly."""
    return AGREES if r >= 2 else PARTLY if r > 1.1 else DISAGREES


def plot_losses(runs: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, run) in enumerate(runs.items()):
        used, loss = zip(*run["curve"])
        ax.semilogy(used, loss, color=f"C{i}", lw=1.5, ls="-" if "full" in name else "--", label=name)
    ax.set(xlabel="passes over the training set (gradient evaluations x batch / N)", ylabel="full training loss",
           title="L-BFGS vs Adam, full batch and minibatch")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@experiment("lbfgs", "full-batch L-BFGS vs Adam on a small deterministic problem, and both with minibatch noise")
def lbfgs(ctx: LabContext) -> LabResult:
    cfg = ctx.config(DEFAULTS + ctx.size([], QUICK))
    data = ctx.data(cfg)
    passes, lrs = ctx.size(60, 3), ctx.size(ADAM_LRS, [1e-2])
    runs, rates = {}, {}
    for batch, label in ((None, "full batch"), (MINIBATCH, "minibatch")):
        ctx.say(f"  lbfgs and adam, {label}")
        rates[f"lbfgs, {label}"], runs[f"lbfgs, {label}"] = 1.0, optimise(cfg, data, "lbfgs", 1.0, batch, passes)
        rates[f"adam, {label}"], runs[f"adam, {label}"] = tuned_adam(cfg, data, batch, passes, lrs)
    rows = {}
    for name, run in runs.items():
        used, final = at_budget(run["curve"], passes)
        test = evaluate(run["model"], data.test_x.cpu(), data.test_y.cpu(), data.num_classes)["acc"] \
            if math.isfinite(final) else None
        rows[name] = {"method": name, "lr": rates[name], "passes": used, "steps": len(run["curve"]) - 1,
                      "final_train_loss": final if math.isfinite(final) else None, "test_acc_after_all_steps": test,
                      "seconds": run["seconds"]}
    curves = {f"train_loss/{n}": [v for _, v in r["curve"]] for n, r in runs.items()}
    setup = (f"mlp, one hidden layer of {cfg['model']['width']} tanh units, on all {len(data.train_y)} "
             f"{cfg['data']['name']} training images (standardised), no dropout or augmentation. Each method gets "
             f"{passes} passes' worth of loss-and-gradient evaluations (an L-BFGS line-search evaluation counts like "
             f"any other). L-BFGS: rate 1, strong-Wolfe line search, history {cfg['optim']['lbfgs_history']}, at most "
             f"{cfg['optim']['lbfgs_iters']} updates per step; Adam: best rate from {lrs}. Minibatch: {MINIBATCH} "
             "images per evaluation, a new batch per step.")
    return LabResult("L-BFGS vs Adam, full batch and minibatch", setup,
                     ["method", "lr", "passes", "steps", "final_train_loss", "test_acc_after_all_steps", "seconds"],
                     list(rows.values()), lbfgs_claims(rows), [plot_losses(runs, ctx.plot_path("lbfgs"))], curves)

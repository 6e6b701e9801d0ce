"""``trainlab lab batchnorm``: accuracy over a grid of learning rates and initial weight scales,
with and without batch normalisation.

The lecture's list for batch norm: "Allows higher learning rates, faster convergence" and
"Networks become more robust to initialization". The same deep mlp is trained at every
(learning rate, init std) cell with model.norm=none and model.norm=batch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

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
    steps_to_target,
)
from trainlab.plots import plt, save_figure

NORMS = ["none", "batch"]
LRS = [0.003, 0.03, 0.3, 3.0]
INIT_STDS = [0.001, 0.01, 0.1, 1.0]  # kaiming for width 128 would be √(2/128) ≈ 0.125
WORKS = 0.9  # test accuracy that counts as "trains" on digits (a 1-hidden-layer mlp gets ~0.97)
TARGET, WINDOW = 0.10, 20
# Deep enough (5 hidden layers) for initialisation to matter; plain SGD+momentum with a constant
# rate so the rate is the only thing that changes along a row of the grid.
DEFAULTS = ["model.name=mlp", "model.depth=5", "model.width=128", "model.init=small_gaussian",
            "optim.name=momentum", "schedule.name=constant", "train.epochs=8"]
QUICK = ["data.subset=300", "train.epochs=1", "model.width=32", "model.depth=3"]


def batchnorm_claims(grid: dict, lrs: list[float], stds: list[float], steps: dict) -> list[dict]:
    def highest_lr(norm):
        ok = [lr for lr in lrs if any(grid[norm, lr, s] >= WORKS for s in stds)]
        return max(ok) if ok else None

    def inits_that_train(norm):
        return [s for s in stds if any(grid[norm, lr, s] >= WORKS for lr in lrs)]

    def cells(norm):
        return sum(grid[norm, lr, s] >= WORKS for lr in lrs for s in stds)

    hi_none, hi_bn = highest_lr("none"), highest_lr("batch")
    init_none, init_bn = inits_that_train("none"), inits_that_train("batch")
    faster = steps["batch"] is not None and (steps["none"] is None or steps["batch"] < steps["none"])
    higher = hi_bn is not None and (hi_none is None or hi_bn > hi_none)
    return [
        claim("Allows higher learning rates, faster convergence", f"{SLIDES}; {SLIDES_2016}",
              f"highest rate reaching {WORKS:.0%} test accuracy: {hi_bn} with batch norm, {hi_none} without; updates "
              f"to {TARGET:.0%} training error in the best cell: {steps['batch']} with, {steps['none']} without",
              AGREES if higher and faster else PARTLY if higher or faster else DISAGREES),
        claim("Networks become more robust to initialization", SLIDES,
              f"init stds that train (≥ {WORKS:.0%} at some rate): {init_bn} with batch norm, {init_none} without; "
              f"working cells {cells('batch')}/{len(lrs) * len(stds)} with, {cells('none')}/{len(lrs) * len(stds)} without",
              AGREES if len(init_bn) > len(init_none) else PARTLY if cells("batch") > cells("none") else DISAGREES),
    ]


def plot_grid(grid: dict, lrs: list[float], stds: list[float], path: Path, diverged: set = frozenset()) -> Path:
    """Test accuracy per (rate, init std) cell; a diverged run is labelled so, not drawn as 0.00."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, norm in zip(axes, NORMS):
        m = np.array([[grid[norm, lr, s] for lr in lrs] for s in stds])
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis", origin="lower")
        for i in range(len(stds)):
            for j in range(len(lrs)):
                label = "diverged" if (norm, lrs[j], stds[i]) in diverged else f"{m[i, j]:.2f}"
                ax.text(j, i, label, ha="center", va="center", fontsize=8 if label == "diverged" else 10,
                        color="white" if m[i, j] < 0.6 else "black")
        ax.set(xticks=range(len(lrs)), yticks=range(len(stds)), xlabel="learning rate", ylabel="init std",
               title=f"test accuracy, model.norm={norm}")
        ax.set_xticklabels([f"{v:g}" for v in lrs])
        ax.set_yticklabels([f"{v:g}" for v in stds])
    return save_figure(fig, path)


@experiment("batchnorm", "accuracy over learning rates x init scales with and without batch norm "
                         "('allows higher learning rates', 'more robust to initialization')")
def batchnorm(ctx: LabContext) -> LabResult:
    lrs, stds = ctx.size(LRS, [0.03, 3.0]), ctx.size(INIT_STDS, [0.01, 1.0])
    defaults = DEFAULTS + ctx.size([], QUICK)
    grid, rows, fastest = {}, [], {}
    for norm in NORMS:
        hits = []
        for lr in lrs:
            for std in stds:
                cfg = ctx.config(defaults, f"model.norm={norm}", f"optim.lr={lr}", f"model.init_std={std}")
                t = ctx.trial(f"{norm}/lr{lr:g}-std{std:g}", cfg)
                acc = 0.0 if t.diverged else t.summary["test_acc"]  # diverged weights are NaN: no classifier
                grid[norm, lr, std] = acc
                hits.append(steps_to_target(t.steps.error, TARGET, WINDOW))
                rows.append({"norm": norm, "lr": lr, "init_std": std, "test_acc": acc, "diverged": t.diverged,
                             "steps_to_10pct_error": hits[-1]})
        fastest[norm] = min((h for h in hits if h is not None), default=None)
    cfg = ctx.config(defaults)
    setup = (f"mlp with {cfg['model']['depth']} hidden layers of {cfg['model']['width']} relu units on "
             f"{cfg['data']['name']}, weights N(0, std²) (model.init=small_gaussian), SGD+momentum 0.9 at a constant "
             f"rate, {cfg['train']['epochs']} epochs, one seed per cell; the same grid with model.norm=batch (batch norm "
             f"before each relu). A run whose loss explodes is stopped by trainlab and scored 0.")
    return LabResult("batch norm: learning rate and initialisation grid", setup,
                     ["norm", "lr", "init_std", "test_acc", "diverged", "steps_to_10pct_error"], rows,
                     batchnorm_claims(grid, lrs, stds, fastest), [plot_grid(grid, lrs, stds, ctx.plot_path("batchnorm_grid"),
                                                                         {(r["norm"], r["lr"], r["init_std"]) for r in rows if r["diverged"]})])

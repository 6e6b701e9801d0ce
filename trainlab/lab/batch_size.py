"""``trainlab lab batch-size``: the linear scaling rule, with and without warm-up, across batch sizes.

The lecture (slides, "Learning Rate Decay: Linear Warmup"): "High initial learning rates can make
loss explode; linearly increasing learning rate from 0 over the first ~5000 iterations can
prevent this" and "Empirical rule of thumb: If you increase the batch size by N, also scale the
initial learning rate by N" (Goyal et al. 2017). Every batch size trains for the same number of
epochs — so larger batches make fewer updates — three ways: one fixed rate; the rate scaled by
batch / reference batch (trainlab's ``optim.batch_scaling``); scaled and warmed up.
"""
from __future__ import annotations

from pathlib import Path

from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    SLIDES,
    LabContext,
    LabResult,
    claim,
    experiment,
)
from trainlab.optim import base_lr
from trainlab.plots import plt, save_figure

BATCHES = [16, 32, 64, 128, 256, 512]
REFERENCE = 32  # the batch the base rate is meant for
# Two base rates that both train well at batch 32: scaled by 16, the first stays below the
# rate at which this net diverges, the second does not.
BASE_LRS = [0.01, 0.05]
WARMUP_EPOCHS = 2
VARIANTS = ["fixed rate", "linear scaling", "linear scaling + warm-up"]


def variant_keys(variant: str, warmup_epochs: float) -> list[str]:
    """The config overrides that make a variant."""
    scaled = [] if variant == "fixed rate" else ["optim.batch_scaling=true"]
    return scaled + ([f"schedule.warmup_epochs={warmup_epochs}"] if variant.endswith("warm-up") else [])

# SGD+momentum with a step schedule, as in Goyal et al.
DEFAULTS = ["model.name=mlp", "model.depth=2", "model.width=256", "optim.name=momentum",
            f"optim.reference_batch={REFERENCE}", "schedule.name=step", "train.epochs=15"]
QUICK = ["data.subset=300", "train.epochs=2", "model.width=32"]


def batch_claims(table: dict, batches: list[int], base_lrs: list[float], warmup: float) -> list[dict]:
    large, warm = batches[-1], "linear scaling + warm-up"
    acc = lambda lr, v, b: table[lr, v, b]["test_acc"]  # noqa: E731
    gains = {lr: max(acc(lr, "linear scaling", large), acc(lr, warm, large)) - acc(lr, "fixed rate", large)
             for lr in base_lrs}
    diverged = {v: [(lr, b) for lr in base_lrs for b in batches if table[lr, v, b]["diverged"]] for v in VARIANTS}
    show = lambda runs: ", ".join(f"base {lr:g} batch {b}" for lr, b in runs) or "none"  # noqa: E731
    return [
        claim("If you increase the batch size by N, also scale the initial learning rate by N", SLIDES,
              f"test accuracy at batch {large}, best scaled variant minus fixed rate: "
              + ", ".join(f"base rate {lr:g} (scaled to {lr * large / REFERENCE:g}): {g:+.3f}" for lr, g in gains.items()),
              AGREES if min(gains.values()) > -0.01 and max(gains.values()) > 0.01
              else PARTLY if max(gains.values()) > 0.01 else DISAGREES),
        claim("High initial learning rates can make loss explode; linearly increasing learning rate from 0 over the "
              "first ~5000 iterations can prevent this", SLIDES,
              f"runs whose loss exploded: scaled without warm-up: {show(diverged['linear scaling'])}; with "
              f"{warmup:g}-epoch warm-up: {show(diverged[warm])}",
              AGREES if diverged["linear scaling"] and not diverged[warm]
              else PARTLY if len(diverged[warm]) < len(diverged["linear scaling"]) else DISAGREES),
    ]


def plot_batches(table: dict, batches: list[int], base_lrs: list[float], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(base_lrs), figsize=(6 * len(base_lrs), 4), squeeze=False)
    for ax, lr in zip(axes[0], base_lrs):
        for i, v in enumerate(VARIANTS):
            ax.semilogx(batches, [table[lr, v, b]["test_acc"] for b in batches], "o-", color=f"C{i}", label=v, base=2)
            bad = [b for b in batches if table[lr, v, b]["diverged"]]
            ax.plot(bad, [table[lr, v, b]["test_acc"] for b in bad], "x", color=f"C{i}", ms=12, mew=2)
        ax.set(xlabel="batch size", ylabel="test accuracy", ylim=(-0.02, 1.02),
               title=f"base rate {lr:g} at batch {REFERENCE} (x: loss exploded)")
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, path)


@experiment("batch-size", "the linear learning-rate scaling rule, with and without warm-up, across batch sizes")
def batch_size(ctx: LabContext) -> LabResult:
    batches, base_lrs = ctx.size(BATCHES, [32, 256]), ctx.size(BASE_LRS, [0.05])
    defaults = DEFAULTS + ctx.size([], QUICK)
    table, rows = {}, []
    warmup = ctx.size(WARMUP_EPOCHS, 0.5)
    for lr in base_lrs:
        for variant in VARIANTS:
            for b in batches:
                cfg = ctx.config(defaults, f"optim.lr={lr}", *variant_keys(variant, warmup), f"train.batch_size={b}")
                t = ctx.trial(f"base{lr:g}/{variant.replace(' + ', '+').replace(' ', '-')}/batch{b}", cfg)
                row = {"base_lr": lr, "variant": variant, "batch_size": b, "lr": base_lr(cfg),
                       "updates": t.summary["steps"], "diverged": t.diverged,
                       "test_acc": 0.0 if t.diverged else t.summary["test_acc"]}
                table[lr, variant, b] = row
                rows.append(row)
    cfg = ctx.config(defaults)
    setup = (f"mlp ({cfg['model']['depth']} x {cfg['model']['width']} relu) on {cfg['data']['name']}, SGD+momentum "
             f"0.9, step schedule, {cfg['train']['epochs']} epochs for every batch size; base rates "
             f"{base_lrs} at batch {REFERENCE}, scaled by batch/{REFERENCE} in the scaled variants; warm-up "
             f"{warmup:g} epochs from 0. A run whose loss explodes is "
             "stopped by trainlab and scored 0. One seed per cell.")
    return LabResult("batch size and the linear scaling rule", setup,
                     ["base_lr", "variant", "batch_size", "lr", "updates", "diverged", "test_acc"], rows,
                     batch_claims(table, batches, base_lrs, warmup),
                     [plot_batches(table, batches, base_lrs, ctx.plot_path("batch_size"))])

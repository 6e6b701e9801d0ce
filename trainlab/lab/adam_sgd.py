"""``trainlab lab adam-sgd``: Adam's defaults against a rate grid, and Adam against SGD+momentum
with and without a schedule.

The slides: Adam with β1 = 0.9, β2 = 0.999 and "1e-3 or 5e-4 is a great starting point for many
models!"; "In practice: Adam is a good default choice in many cases; it often works
ok even with constant learning rate" and "SGD+Momentum can outperform Adam but may require more
tuning of LR and schedule". One MLP, each optimiser over a grid of rates, each rate with a
constant rate and with cosine decay.
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
    graded,
    median,
)
from trainlab.plots import plt, save_figure

ADAM_LRS = [1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 1e-2]
SGD_LRS = [3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
SCHEDULES = ["constant", "cosine"]
DEFAULTS = ["model.name=mlp", "model.width=128", "train.epochs=15", "train.batch_size=64"]
QUICK = ["data.subset=300", "train.epochs=1", "model.width=16"]


def best(rows: list[dict], **match) -> dict:
    """The row of highest validation accuracy among those matching ``match`` (ties: test accuracy)."""
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return max(found, key=lambda r: (r["best_val_acc"], r["test_acc"]))


def adam_sgd_claims(rows: list[dict]) -> list[dict]:
    grid_best = best(rows, optimizer="adam", schedule="constant")
    default = max((r for r in rows if r["optimizer"] == "adam" and r["schedule"] == "constant" and r["lr"] in (1e-3, 5e-4)),
                  key=lambda r: r["test_acc"])
    short = (grid_best["test_acc"] - default["test_acc"]) * 100
    adam_c, adam_cos = best(rows, optimizer="adam", schedule="constant"), best(rows, optimizer="adam", schedule="cosine")
    sgd_c, sgd_cos = best(rows, optimizer="momentum", schedule="constant"), best(rows, optimizer="momentum", schedule="cosine")
    adam_gain = (adam_cos["test_acc"] - adam_c["test_acc"]) * 100
    sgd_gain = (sgd_cos["test_acc"] - sgd_c["test_acc"]) * 100
    adam_best = max(adam_c, adam_cos, key=lambda r: r["test_acc"])
    sgd_best = max(sgd_c, sgd_cos, key=lambda r: r["test_acc"])
    lead = (sgd_best["test_acc"] - adam_best["test_acc"]) * 100
    spread = lambda opt: (max(r["test_acc"] for r in rows if r["optimizer"] == opt)  # noqa: E731
                          - median([r["test_acc"] for r in rows if r["optimizer"] == opt])) * 100
    return [
        claim("Adam with … 1e-3 or 5e-4 is a great starting point for many models!", SLIDES,
              f"best default (lr {default['lr']:g}, constant): test {default['test_acc']:.4f}; best of the grid "
              f"{sorted({r['lr'] for r in rows if r['optimizer'] == 'adam'})} (by validation, lr {grid_best['lr']:g}): "
              f"{grid_best['test_acc']:.4f}, {short:+.2f} points. "
              "Verdict rule: the default within 1 point of the grid's best agrees, within 3 partly",
              AGREES if short <= 1 else PARTLY if short <= 3 else DISAGREES),
        claim("Adam is a good default choice in many cases; it often works ok even with constant learning rate",
              SLIDES,
              f"cosine minus constant at each optimiser's best rate: Adam {adam_gain:+.2f} points, SGD+momentum "
              f"{sgd_gain:+.2f}. Verdict rule: Adam's constant rate within 1 point of its cosine and Adam's gain "
              "from the schedule smaller than SGD+momentum's agrees; only one of the two partly",
              AGREES if adam_gain <= 1 and adam_gain < sgd_gain else
              PARTLY if adam_gain <= 1 or adam_gain < sgd_gain else DISAGREES),
        claim("SGD+Momentum can outperform Adam but may require more tuning of LR and schedule", SLIDES,
              f"best SGD+momentum (lr {sgd_best['lr']:g}, {sgd_best['schedule']}) {sgd_best['test_acc']:.4f} against "
              f"best Adam (lr {adam_best['lr']:g}, {adam_best['schedule']}) {adam_best['test_acc']:.4f}: {lead:+.2f} "
              f"points; best minus median over its grid: SGD+momentum {spread('momentum'):.2f}, Adam "
              f"{spread('adam'):.2f} points (how much tuning matters). Verdict rule: tuned SGD+momentum at least "
              "level with Adam (−0.25 points) agrees, within 1 point partly",
              graded(lead, -0.25, -1.0)),
    ]


def plot_grid(rows: list[dict], path: Path) -> Path:

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for opt, sched in ((o, s) for o in ("adam", "momentum") for s in SCHEDULES):
        found = sorted((r for r in rows if r["optimizer"] == opt and r["schedule"] == sched), key=lambda r: r["lr"])
        ax.plot([r["lr"] for r in found], [r["test_acc"] for r in found], "o-" if sched == "cosine" else "s--",
                color=f"C{0 if opt == 'adam' else 1}", alpha=1.0 if sched == "cosine" else 0.6, label=f"{opt}, {sched}")
    for lr in (5e-4, 1e-3):
        ax.axvline(lr, color="C0", ls=":", lw=1)
    ax.set(xscale="log", xlabel="learning rate", ylabel="test accuracy", title="Adam and SGD+momentum over their rates")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@experiment("adam-sgd", "Adam's default rates against a grid; Adam and SGD+momentum with a constant rate and "
                        "with cosine decay")
def adam_sgd(ctx: LabContext) -> LabResult:
    defaults = DEFAULTS + ctx.size([], QUICK)
    grids = {"adam": ctx.size(ADAM_LRS, [5e-4, 1e-3]), "momentum": ctx.size(SGD_LRS, [1e-1])}
    rows = []
    for opt, lrs in grids.items():
        for sched in SCHEDULES:
            for lr in lrs:
                cfg = ctx.config(defaults, f"optim.name={opt}", f"optim.lr={lr}", f"schedule.name={sched}")
                s = ctx.train(f"{opt}-{sched}/lr{lr:g}", cfg)
                rows.append({"optimizer": opt, "schedule": sched, "lr": lr, "best_val_acc": s["best_val_acc"],
                             "test_acc": s["test_acc"], "stop_reason": s["stop_reason"] or ""})
    cfg = ctx.config(defaults)
    setup = (f"trainlab's mlp (width {cfg['model']['width']}, 2 hidden layers) on {cfg['data']['name']}, batch "
             f"{cfg['train']['batch_size']}, {cfg['train']['epochs']} epochs, one seed. Adam (betas 0.9/0.999) over "
             f"{grids['adam']}, SGD+momentum (0.9) over {grids['momentum']}, each with `schedule.name=constant` and "
             "`cosine`. Rates are compared by validation accuracy; the claims read test accuracy of the best-on-"
             "validation weights.")
    return LabResult("Adam's defaults, Adam against SGD+momentum", setup,
                     ["optimizer", "schedule", "lr", "best_val_acc", "test_acc", "stop_reason"], rows,
                     adam_sgd_claims(rows), [plot_grid(rows, ctx.plot_path("adam_sgd"))])

"""``trainlab lab schedules``: constant, step, cosine, linear, inverse sqrt, warm-up and SGDR on the
same budget (same net, optimiser, base rate and number of updates).

The lecture: "Q: Which one of these learning rates is best to use? A: All of them! Start with
large learning rate and decay over time", and "Try cosine schedule, very few hyperparameters!".
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
    median,
    plot_curves,
)
from trainlab.plots import plt, save_figure
from trainlab.schedules import schedule_curve

# name → the schedule.* overrides that make it; every one runs the same epochs at the same base rate.
SCHEDULES = {
    "constant": ["schedule.name=constant"],
    "step": ["schedule.name=step", "schedule.milestones=[0.5,0.75]", "schedule.gamma=0.1"],
    "cosine": ["schedule.name=cosine"],
    "linear": ["schedule.name=linear"],
    "inv_sqrt": ["schedule.name=inv_sqrt"],
    "cosine + warm-up": ["schedule.name=cosine", "schedule.warmup_epochs=1"],
    "sgdr": ["schedule.name=sgdr", "schedule.cycle_epochs=5"],
}
DECAYING = ["step", "cosine", "linear", "inv_sqrt", "cosine + warm-up"]
# A small net (16 hidden units, so the training loss cannot reach 0) and small batches of 16 (noisy
# gradients): the regime where the rate's size shows in the loss. A 2 x 256 mlp on digits reaches
# ~1e-3 training loss with every schedule, the constant rate included (docs/lab.md).
DEFAULTS = ["model.name=mlp", "model.depth=1", "model.width=16", "optim.name=momentum", "optim.lr=0.1",
            "train.batch_size=16", "train.epochs=10"]
QUICK = ["data.subset=300", "train.epochs=2"]


def final_loss(steps: list[float], epochs: int) -> float:
    """Mean minibatch training loss over the last epoch's worth of updates."""
    tail = steps[-max(1, len(steps) // epochs):]
    return sum(tail) / len(tail)


def schedule_claims(rows: dict) -> list[dict]:
    const = rows["constant"]
    lower = [s for s in DECAYING if rows[s]["final_train_loss"] < const["final_train_loss"]]
    best = max(r["test_acc"] for r in rows.values())
    cosine = rows["cosine"]["test_acc"]
    return [
        claim("Which one of these learning rates is best to use? A: All of them! Start with large learning rate "
              "and decay over time", SLIDES,
              f"final training loss below constant's ({const['final_train_loss']:.3g}): {', '.join(lower) or 'none'} "
              f"of {len(DECAYING)} decaying schedules; test accuracy constant {const['test_acc']:.3f}, best decaying "
              f"{max(rows[s]['test_acc'] for s in DECAYING):.3f}",
              AGREES if len(lower) == len(DECAYING) else PARTLY if lower else DISAGREES),
        claim("Try cosine schedule, very few hyperparameters!", SLIDES,
              f"cosine test accuracy {cosine:.3f}, best of all schedules {best:.3f}",
              AGREES if cosine >= best - 0.005 else PARTLY if cosine >= best - 0.02 else DISAGREES),
    ]


def plot_rates(rates: dict[str, list[float]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for i, (name, curve) in enumerate(rates.items()):
        ax.plot(range(len(curve)), curve, color=f"C{i}", lw=1.5, label=name)
    ax.set(xlabel="update", ylabel="learning rate", title="The schedules (trainlab.schedules.schedule_curve)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@experiment("schedules", "constant, step, cosine, linear, inverse sqrt, warm-up and SGDR on the same budget")
def schedules(ctx: LabContext) -> LabResult:
    seeds = ctx.size(3, 1)
    defaults = DEFAULTS + ctx.size([], QUICK)
    rows, curves, rates = {}, {}, {}
    for name, keys in SCHEDULES.items():
        trials = [ctx.trial(f"{name.replace(' + ', '+')}/seed{s}", ctx.config(defaults, *keys, f"seed={s}"))
                  for s in range(seeds)]
        cfg = ctx.config(defaults, *keys)
        steps_per_epoch = len(trials[0].steps.loss) // cfg["train"]["epochs"]
        rates[name] = schedule_curve(cfg, steps_per_epoch)
        rows[name] = {"schedule": name, "seeds": seeds,
                      "final_train_loss": median([final_loss(t.steps.loss, cfg["train"]["epochs"]) for t in trials]),
                      "best_val_acc": median([t.summary["best_val_acc"] for t in trials]),
                      "test_acc": median([t.summary["test_acc"] for t in trials])}
        curves[f"train_loss/{name}"] = trials[0].steps.loss
    plots = [plot_rates(rates, ctx.plot_path("schedules_lr")),
             plot_curves({n: curves[f"train_loss/{n}"] for n in SCHEDULES}, ctx.plot_path("schedules_loss"),
                         "Training loss by schedule (seed 0)", "training loss", 20, log=True)]
    cfg = ctx.config(defaults)
    setup = (f"mlp ({cfg['model']['depth']} hidden layer of {cfg['model']['width']} relu units) on {cfg['data']['name']}, SGD+momentum 0.9, "
             f"base rate {cfg['optim']['lr']:g}, batch {cfg['train']['batch_size']}, {cfg['train']['epochs']} epochs for "
             f"every schedule (step: x0.1 at 50% and 75%; warm-up: 1 epoch in front of cosine; sgdr: 5-epoch cycles); "
             f"medians of {seeds} seed(s). `final_train_loss` is the mean minibatch loss over the last epoch.")
    return LabResult("learning-rate schedules on one budget", setup,
                     ["schedule", "seeds", "final_train_loss", "best_val_acc", "test_acc"], list(rows.values()),
                     schedule_claims(rows), plots, curves)

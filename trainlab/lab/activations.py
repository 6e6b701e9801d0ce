"""``trainlab lab activations``: sigmoid, tanh, relu, leaky relu, elu and maxout on one conv net.

The lecture: ReLU "converges much faster than sigmoid/tanh in practice (e.g. 6x)" — the 6x is
AlexNet's figure 1 (Krizhevsky et al. 2012): a 4-layer conv net reached 25% training error on
CIFAR-10 six times sooner with ReLU than with tanh, each at its own best learning rate. Here the
same measurement, iterations to 25% (and 10%) training error, on trainlab's convnet.
"""
from __future__ import annotations

import math

from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    SLIDES,
    LabContext,
    LabResult,
    Trial,
    claim,
    experiment,
    graded,
    median,
    plot_curves,
    ratio,
    steps_to_target,
    time_to_target,
    times,
)

ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "maxout"]
TARGETS = (0.25, 0.10)  # training error; 25% is AlexNet's
WINDOW = 20  # minibatches in the trailing mean of the training error
LRS = [0.01, 0.03, 0.1, 0.3]

# The same net and training for every activation: only model.activation changes. SGD with
# momentum and a constant rate, as in the AlexNet comparison; no norm (batch norm would hide
# the activations' differences); kaiming init for all (the default).
DEFAULTS = ["model.name=convnet", "model.width=16", "model.depth=2", "optim.name=momentum",
            "schedule.name=constant", "train.epochs=10", "train.batch_size=64"]
QUICK = ["data.subset=300", "train.epochs=1", "model.width=8"]


def _or_never(steps: int | None) -> str:
    """Iterations to the target, or 'never (within the run)' when it was not reached."""
    return "never (within the run)" if steps is None else str(steps)


def first_hit(trial: Trial, target: float) -> int | None:
    return steps_to_target(trial.steps.error, target, WINDOW)


def activation_claims(rows: dict) -> list[dict]:
    steps = {a: r[f"steps_to_{int(TARGETS[0] * 100)}pct_error"] for a, r in rows.items()}
    speedup = ratio(steps["tanh"], steps["relu"])
    vs_sigmoid = ratio(steps["sigmoid"], steps["relu"])
    acc = {a: r["test_acc"] for a, r in rows.items()}
    best = max(acc.values())
    relu_family = [a for a in ("relu", "leaky_relu", "elu", "maxout") if acc[a] >= best - 0.01]
    worst = min(acc, key=acc.get)
    tldr = (AGREES if worst == "sigmoid" and "relu" in relu_family
            else PARTLY if worst == "sigmoid" or "relu" in relu_family else DISAGREES)
    return [
        claim("[ReLU] Converges much faster than sigmoid/tanh in practice (e.g. 6x)", SLIDES,
              f"iterations to {TARGETS[0]:.0%} training error: relu {_or_never(steps['relu'])}, tanh {_or_never(steps['tanh'])}, "
              f"sigmoid {_or_never(steps['sigmoid'])} "
              f"(tanh needs {times(speedup)} relu's iterations; the lecture: about 6×)",
              graded(speedup, 4.0, 1.5)),
        claim("Use ReLU … Try out Leaky ReLU / Maxout / ELU … Try out tanh but don't expect much … Don't use sigmoid",
              SLIDES, "test accuracy: " + ", ".join(f"{a} {acc[a]:.3f}" for a in ACTIVATIONS)
              + f"; worst: {worst}; within 1 point of the best: {', '.join(relu_family) or 'none of the relu family'}"
              + ("; sigmoid never reaches the target" if vs_sigmoid == math.inf else ""),
              tldr),
    ]


@experiment("activations", "sigmoid, tanh, relu, leaky relu, elu, maxout on one conv net: iterations to a "
                           "target training error (the '6x faster' claim)")
def activations(ctx: LabContext) -> LabResult:
    lrs, seeds = ctx.size(LRS, [0.1]), ctx.size(3, 1)
    defaults = DEFAULTS + ctx.size([], QUICK)
    rows, curves = {}, {}
    for act in ACTIVATIONS:
        at = lambda lr, seed: ctx.config(defaults, f"model.activation={act}", f"optim.lr={lr}", f"seed={seed}")  # noqa: E731, B023  (called within this iteration)
        trials = ctx.tuned(act, at, lrs, seeds, time_to_target(TARGETS[0], WINDOW))
        row = {"activation": act, "lr": trials[0].lr, "seeds": len(trials),
               "params": trials[0].summary["params"]}
        for target in TARGETS:
            row[f"steps_to_{int(target * 100)}pct_error"] = median([first_hit(t, target) for t in trials])
        row["final_train_error"] = median([sum(t.steps.error[-WINDOW:]) / len(t.steps.error[-WINDOW:]) for t in trials])
        row["test_acc"] = median([t.summary["test_acc"] for t in trials])
        rows[act] = row
        curves[f"train_error/{act}"] = trials[0].steps.error
    columns = ["activation", "lr", "seeds", "params"] + [f"steps_to_{int(t * 100)}pct_error" for t in TARGETS] + \
              ["final_train_error", "test_acc"]
    plot = plot_curves({f"{a} (lr {rows[a]['lr']:g})": curves[f"train_error/{a}"] for a in ACTIVATIONS},
                       ctx.plot_path("activations_train_error"), "Training error by activation (seed 0, best rate)",
                       "training error", WINDOW, target=TARGETS[0])
    cfg = ctx.config(defaults)
    side = ctx.data(cfg).train_x.shape[-1]
    setup = (f"trainlab's convnet (width {cfg['model']['width']}, {cfg['model']['depth']} stages, kaiming init, no norm) "
             f"on {cfg['data']['name']}, SGD+momentum 0.9, constant rate, batch {cfg['train']['batch_size']}, "
             f"{cfg['train']['epochs']} epochs. Each activation gets its best rate from {lrs} (fewest iterations to "
             f"{TARGETS[0]:.0%} training error, seed 0), then runs with {seeds} seed(s); the table gives medians. "
             f"Training error is the mean over the last {WINDOW} minibatches. Scaled down from AlexNet's CIFAR-10 "
             f"experiment (a 4-layer conv net on 32x32 colour images) to a {2 * cfg['model']['depth']}-conv-layer net on "
             f"{side}x{side} {cfg['data']['name']} images.")
    return LabResult("activation functions compared", setup, columns, list(rows.values()), activation_claims(rows),
                     [plot], curves)

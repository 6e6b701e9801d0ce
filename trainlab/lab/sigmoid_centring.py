"""``trainlab lab sigmoid-centring``: the sigmoid's two problems taken apart.

The slides list the sigmoid's problems: "1. Saturated neurons “kill” the gradients" and "2.
Sigmoid outputs are not zero-centered" — when a neuron's inputs are all positive, the gradients on
its weights are "Always all positive or all negative :(", so updates zig-zag. tanh fixes the
second and keeps the first. Here σ(x) − ½ (``model.activation=sigmoid_centered``: the same curve,
the same saturation, only shifted to be zero-centred) stands between them, so the effect of
zero-centring alone is the difference between sigmoid and σ − ½.
"""
from __future__ import annotations

from trainlab.lab.common import (
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

ACTIVATIONS = ["sigmoid", "sigmoid_centered", "tanh"]
TARGET, WINDOW = 0.10, 20  # training error; trailing mean over minibatches
LRS = [0.03, 0.1, 0.3, 1.0, 3.0]  # 3.0 added after a first run put sigmoid's best at 1.0, the edge
# Plain SGD (no momentum to average the zig-zag away), constant rate, a 3-hidden-layer MLP so
# that every layer after the first sees the activation's outputs as its inputs.
DEFAULTS = ["model.name=mlp", "model.depth=3", "model.width=64", "optim.name=sgd", "schedule.name=constant",
            "train.epochs=20", "train.batch_size=32", "model.init=xavier"]
QUICK = ["data.subset=300", "train.epochs=1", "model.width=16"]


def hit(trial: Trial) -> int | None:
    return steps_to_target(trial.steps.error, TARGET, WINDOW)


def centring_claims(rows: dict) -> list[dict]:
    steps = {a: r["steps_to_10pct_error"] for a, r in rows.items()}
    centred = ratio(steps["sigmoid_centered"], steps["sigmoid"])  # < 1: zero-centring helps
    speedup = None if centred is None or centred == 0 else 1 / centred
    return [
        claim("Sigmoid outputs are not zero-centered … Always all positive or all negative :(", SLIDES,
              f"updates to {TARGET:.0%} training error, each at its best rate: sigmoid "
              f"{steps['sigmoid'] if steps['sigmoid'] is not None else 'never'}, σ−½ "
              f"{steps['sigmoid_centered'] if steps['sigmoid_centered'] is not None else 'never'}, tanh "
              f"{steps['tanh'] if steps['tanh'] is not None else 'never'}: zero-centring alone makes the sigmoid "
              f"{times(speedup)} as fast. Verdict rule: at least 1.5× agrees, 1.1× partly",
              graded(speedup, 1.5, 1.1)),
    ]


@experiment("sigmoid-centring", "sigmoid, sigmoid − ½ and tanh: zero-centred outputs separated from saturation")
def sigmoid_centring(ctx: LabContext) -> LabResult:
    lrs, seeds = ctx.size(LRS, [0.3]), ctx.size(3, 1)
    defaults = DEFAULTS + ctx.size([], QUICK)
    rows, curves = {}, {}
    for act in ACTIVATIONS:
        at = lambda lr, seed: ctx.config(defaults, f"model.activation={act}", f"optim.lr={lr}", f"seed={seed}")  # noqa: E731, B023  (called within this iteration)
        trials = ctx.tuned(act, at, lrs, seeds, time_to_target(TARGET, WINDOW))
        rows[act] = {"activation": act, "lr": trials[0].lr, "seeds": len(trials),
                     "steps_to_10pct_error": median([hit(t) for t in trials]),
                     "test_acc": median([t.summary["test_acc"] for t in trials])}
        curves[f"train_error/{act}"] = trials[0].steps.error
    plot = plot_curves({f"{a} (lr {rows[a]['lr']:g})": curves[f"train_error/{a}"] for a in ACTIVATIONS},
                       ctx.plot_path("sigmoid_centring"), "Training error: sigmoid, σ − ½, tanh (seed 0, best rate)",
                       "training error", WINDOW, target=TARGET)
    cfg = ctx.config(defaults)
    setup = (f"trainlab's mlp ({cfg['model']['depth']} hidden layers of {cfg['model']['width']}, Xavier init) on "
             f"{cfg['data']['name']}, plain SGD at a constant rate, batch {cfg['train']['batch_size']}, "
             f"{cfg['train']['epochs']} epochs. Each activation gets its best rate from {lrs} (fewest updates to "
             f"{TARGET:.0%} training error, seed 0), then runs with {seeds} seed(s); medians.")
    return LabResult("zero-centred outputs, separated from saturation", setup,
                     ["activation", "lr", "seeds", "steps_to_10pct_error", "test_acc"], list(rows.values()),
                     centring_claims(rows), [plot], curves)

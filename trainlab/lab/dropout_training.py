"""``trainlab lab dropout-training``: does dropout train more slowly and generalise better?

The 2017 lecture: "When you're using dropout, it typically takes longer to train, but you might
have a better generalization after it's converged." A wide MLP on a small training set, trained
long, with and without dropout.
"""
from __future__ import annotations

from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    TRANSCRIPT,
    LabContext,
    LabResult,
    claim,
    experiment,
    graded,
    median,
    plot_curves,
    ratio,
    steps_to_target,
    times,
)

TARGET, WINDOW = 0.02, 20  # training error ("converged"): trailing mean over minibatches
DROPOUTS = [0.0, 0.5]
DEFAULTS = ["model.name=mlp", "model.width=512", "data.per_class=50", "data.val_fraction=0.3", "train.epochs=60",
            "train.batch_size=32", "optim.lr=1e-3"]
QUICK = ["data.per_class=10", "train.epochs=2", "model.width=32"]


def dropout_claims(rows: dict) -> list[dict]:
    plain, drop = rows[0.0], rows[0.5]
    slower = ratio(drop["steps_to_2pct_error"], plain["steps_to_2pct_error"])
    gain = (drop["test_acc"] - plain["test_acc"]) * 100
    return [
        claim("When you're using dropout, it typically takes longer to train", TRANSCRIPT,
              f"updates to {TARGET:.0%} training error: p=0.5 {drop['steps_to_2pct_error']}, no dropout "
              f"{plain['steps_to_2pct_error']} ({times(slower)}). Verdict rule: at least 1.5× agrees, 1.1× partly",
              graded(slower, 1.5, 1.1)),
        claim("but you might have a better generalization after it's converged", TRANSCRIPT,
              f"test accuracy p=0.5 {drop['test_acc']:.4f}, no dropout {plain['test_acc']:.4f} ({gain:+.2f} points); "
              f"train−val gap {drop['gap']:.3f} vs {plain['gap']:.3f}. Verdict rule: +0.5 points or more agrees, "
              "better at all partly",
              AGREES if gain >= 0.5 else PARTLY if gain > 0 else DISAGREES),
    ]


@experiment("dropout-training", "dropout 0 vs 0.5 on a wide MLP: slower training, better generalisation?")
def dropout_training(ctx: LabContext) -> LabResult:
    seeds = ctx.size(3, 1)
    defaults = DEFAULTS + ctx.size([], QUICK)
    rows, curves = {}, {}
    for p in DROPOUTS:
        trials = [ctx.trial(f"p{p:g}/seed{s}", ctx.config(defaults, f"model.dropout={p}", f"seed={s}")) for s in range(seeds)]
        rows[p] = {"dropout": p, "seeds": seeds,
                   "steps_to_2pct_error": median([steps_to_target(t.steps.error, TARGET, WINDOW) for t in trials]),
                   "final_train_acc": median([t.summary["train_acc"] for t in trials]),
                   "best_val_acc": median([t.summary["best_val_acc"] for t in trials]),
                   "gap": median([t.summary["train_acc"] - t.summary["best_val_acc"] for t in trials]),
                   "test_acc": median([t.summary["test_acc"] for t in trials])}
        curves[f"train_error/p{p:g}"] = trials[0].steps.error
    plot = plot_curves({f"dropout {p:g}": curves[f"train_error/p{p:g}"] for p in DROPOUTS},
                       ctx.plot_path("dropout_training"), "Training error with and without dropout (seed 0)",
                       "training error", WINDOW, log=True, target=TARGET)
    cfg = ctx.config(defaults)
    data = ctx.data(cfg)
    setup = (f"trainlab's mlp (2 hidden layers of {cfg['model']['width']}) on {len(data.train_y)} {cfg['data']['name']} "
             f"training images ({cfg['data']['per_class']} per class before the validation split), adam "
             f"{cfg['optim']['lr']:g}, cosine, batch {cfg['train']['batch_size']}, {cfg['train']['epochs']} epochs, "
             f"medians of {seeds} seed(s). Training error is the mean over the last {WINDOW} minibatches (with "
             "dropout on, as training sees it).")
    return LabResult("dropout: slower training, better generalisation", setup,
                     ["dropout", "seeds", "steps_to_2pct_error", "final_train_acc", "best_val_acc", "gap", "test_acc"],
                     list(rows.values()), dropout_claims(rows), [plot], curves)

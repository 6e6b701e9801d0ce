"""``trainlab lab search-budget``: random against grid search at an equal budget, and which
hyperparameter matters most (Optuna's fANOVA importances).

The 2017 lecture: "random search is maybe a little bit nicer in theory because in the situation
where your performance might be more sensitive, with respect to one hyperparameter than other,
and random search lets you cover that space a little bit better". Two hyperparameters, the
learning rate (which matters) and dropout (which matters little here): a 3×3 grid against 9
random draws, both with the same short trials; then a random study over four hyperparameters,
read by fANOVA to see whether one of them dominates.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution

from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    TRANSCRIPT,
    LabContext,
    LabResult,
    claim,
    experiment,
)
from trainlab.plots import plt, save_figure

LR_RANGE, DROPOUT_RANGE = (1e-4, 1e-1), (0.0, 0.5)
PER_AXIS = 3  # grid points per axis: 9 trials, and 9 random draws
IMPORTANCE_TRIALS = 30
DEFAULTS = ["model.name=mlp", "model.width=64", "train.epochs=2", "train.batch_size=64", "schedule.name=constant"]
QUICK = ["data.subset=300", "train.epochs=1", "model.width=16"]


def grid(per_axis: int) -> list[dict]:
    """Evenly spaced in decades for the rate, linearly for dropout, ends included (search.grid_points)."""
    lo, hi = (math.log10(v) for v in LR_RANGE)
    lrs = [10 ** (lo + (hi - lo) * i / (per_axis - 1)) for i in range(per_axis)]
    drops = [DROPOUT_RANGE[0] + (DROPOUT_RANGE[1] - DROPOUT_RANGE[0]) * i / (per_axis - 1) for i in range(per_axis)]
    return [{"optim.lr": lr, "model.dropout": d} for lr in lrs for d in drops]


def draws(n: int, seed: int) -> list[dict]:
    """``n`` random (log-uniform rate, uniform dropout) points."""
    rng = random.Random(seed)
    lo, hi = (math.log10(v) for v in LR_RANGE)
    return [{"optim.lr": 10 ** rng.uniform(lo, hi), "model.dropout": rng.uniform(*DROPOUT_RANGE)} for _ in range(n)]


def importances(trials: list[tuple[dict, float]]) -> dict[str, float]:
    """fANOVA importances (Hutter et al. 2014, Optuna's evaluator) of a finished random study."""
    dists = {"optim.lr": FloatDistribution(1e-4, 1e-1, log=True), "optim.weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
             "model.dropout": FloatDistribution(0.0, 0.5), "model.width": IntDistribution(16, 256, log=True)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for params, value in trials:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    return optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))


def search_claims(rows: list[dict], weights: dict[str, float]) -> list[dict]:
    comparisons = [r for r in rows if r["kind"] == "comparison"]
    wins = sum(r["random_best"] >= r["grid_best"] for r in comparisons)
    mean_gain = sum(r["random_best"] - r["grid_best"] for r in comparisons) / len(comparisons) * 100
    top, share = max(weights.items(), key=lambda kv: kv[1])
    return [
        claim("random search is maybe a little bit nicer in theory because in the situation where your performance "
              "might be more sensitive, with respect to one hyperparameter than other, and random search lets you cover "
              "that space a little bit better", TRANSCRIPT,
              f"best validation accuracy of {comparisons[0]['trials_each']} random trials ≥ the grid's "
              f"({comparisons[0]['trials_each']} points) in {wins} of {len(comparisons)} seeds, "
              f"mean {mean_gain:+.2f} points. Verdict rule: random at least level in ≥ 75% of seeds with a positive mean "
              "agrees, in ≥ 50% partly",
              AGREES if wins >= 0.75 * len(comparisons) and mean_gain > 0 else
              PARTLY if wins >= 0.5 * len(comparisons) else DISAGREES),
        claim("your performance might be more sensitive, with respect to one hyperparameter than other", TRANSCRIPT,
              "fANOVA importances over a random study: " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items())
              + f". Verdict rule: one hyperparameter ({top} here) with ≥ 0.5 of the variance agrees, ≥ 0.35 partly",
              AGREES if share >= 0.5 else PARTLY if share >= 0.35 else DISAGREES),
    ]


def plot_points(points: dict[str, list[tuple[dict, float]]], path: Path) -> Path:

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, xlabel, log in ((axes[0], "optim.lr", "learning rate", True), (axes[1], "model.dropout", "dropout", False)):
        for i, (label, trials) in enumerate(points.items()):
            ax.scatter([p[key] for p, _ in trials], [v for _, v in trials], s=25, color=f"C{i}", label=label, alpha=0.8)
        ax.set(xlabel=xlabel, ylabel="validation accuracy", xscale="log" if log else "linear")
    axes[0].legend(fontsize=8)
    fig.suptitle("Grid against random search (seed 0): what each tried")
    return save_figure(fig, path)


@experiment("search-budget", "random vs grid search at an equal budget; fANOVA importance of four hyperparameters")
def search_budget(ctx: LabContext) -> LabResult:
    seeds, n_importance, per_axis = ctx.size(5, 1), ctx.size(IMPORTANCE_TRIALS, 4), ctx.size(PER_AXIS, 2)
    defaults = DEFAULTS + ctx.size([], QUICK)

    def run(name: str, point: dict, seed: int) -> float:
        cfg = ctx.config(defaults, *(f"{k}={v}" for k, v in point.items()), f"seed={seed}")
        return ctx.train(name, cfg)["best_val_acc"]

    rows, seen = [], {}
    for s in range(seeds):
        tried = {"grid": [(p, run(f"seed{s}/grid{i}", p, s)) for i, p in enumerate(grid(per_axis))],
                 "random": [(p, run(f"seed{s}/random{i}", p, s)) for i, p in enumerate(draws(per_axis**2, s))]}
        seen = seen or tried
        best = {k: max(tried[k], key=lambda pv: pv[1]) for k in tried}
        rows.append({"kind": "comparison", "seed": s, "trials_each": per_axis**2, "grid_best": best["grid"][1], "grid_best_lr": best["grid"][0]["optim.lr"],
                     "random_best": best["random"][1], "random_best_lr": best["random"][0]["optim.lr"]})
    rng = random.Random(1000)
    study = []
    for i in range(n_importance):
        point = {"optim.lr": 10 ** rng.uniform(-4, -1), "optim.weight_decay": 10 ** rng.uniform(-6, -2),
                 "model.dropout": rng.uniform(0.0, 0.5), "model.width": int(round(2 ** rng.uniform(4, 8)))}
        study.append((point, run(f"importance/trial{i}", point, 0)))
    weights = importances(study)
    rows += [{"kind": "importance", "seed": None, "hyperparameter": k, "importance": v} for k, v in weights.items()]
    cfg = ctx.config(defaults)
    setup = (f"trainlab's mlp (width {cfg['model']['width']}) on {cfg['data']['name']}, adam at a constant rate, "
             f"{cfg['train']['epochs']} epochs per trial, scored by best validation accuracy. Comparison: for each of "
             f"{seeds} seeds, the {per_axis}×{per_axis} grid over lr {LR_RANGE} (log) × dropout {DROPOUT_RANGE} against "
             f"{per_axis**2} random draws (the seed draws the points and trains both). Importance: {n_importance} random "
             "trials over lr [1e-4, 1e-1], weight decay [1e-6, 1e-2], dropout [0, 0.5], width [16, 256] (log), read by "
             "Optuna's FanovaImportanceEvaluator.")
    return LabResult("random vs grid search, and which hyperparameter matters", setup,
                     ["kind", "seed", "trials_each", "grid_best", "grid_best_lr", "random_best", "random_best_lr", "hyperparameter",
                      "importance"], rows, search_claims(rows, weights),
                     [plot_points(seen, ctx.plot_path("search_budget"))])

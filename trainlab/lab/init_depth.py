"""``trainlab lab init-depth``: does initialisation matter more the deeper the network?

The 2017 lecture, on Xavier and MSRA initialisation: "this kind of gets more and more important
and more and more critical as your networks get deeper and deeper because as your network gets
deeper, you're multiplying by those weight matrices over and over again". The same tanh MLP at
three depths, with the slides' small Gaussian N(0, 0.01²) and with Xavier, trained the same way.
"""
from __future__ import annotations

from pathlib import Path

from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    TRANSCRIPT,
    LabContext,
    LabResult,
    claim,
    experiment,
    median,
)
from trainlab.plots import plt, save_figure

DEPTHS = [2, 4, 8]
INITS = {"small_gaussian": ["model.init=small_gaussian", "model.init_std=0.01"], "xavier": ["model.init=xavier"]}
# tanh, as in the slides' activation statistics; SGD+momentum, which (unlike Adam) does not rescale
# each weight's update by its gradient's size and so feels vanishing gradients in full.
DEFAULTS = ["model.name=mlp", "model.width=64", "model.activation=tanh", "optim.name=momentum", "optim.lr=0.05",
            "train.epochs=10", "train.batch_size=64"]
QUICK = ["data.subset=300", "train.epochs=1", "model.width=16"]


def init_depth_claims(rows: list[dict]) -> list[dict]:
    gap = {r["depth"]: r["xavier_minus_small"] for r in rows}
    shallow, deep = gap[min(gap)], gap[max(gap)]
    growth = (deep - shallow) * 100
    return [
        claim("this kind of gets more and more important and more and more critical as your networks get deeper and "
              "deeper", TRANSCRIPT,
              "test accuracy, Xavier minus N(0, 0.01²): " + ", ".join(f"depth {d} {g * 100:+.1f}" for d, g in gap.items())
              + f" points. Verdict rule: the gap at depth {max(gap)} at least 10 points larger than at depth {min(gap)} "
              "agrees, larger at all partly",
              AGREES if growth >= 10 else PARTLY if growth > 0 else DISAGREES),
    ]


def plot_depths(rows: list[dict], path: Path) -> Path:

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, init in enumerate(INITS):
        ax.plot([r["depth"] for r in rows], [r[f"{init}_test_acc"] for r in rows], "o-", color=f"C{i}", label=init)
    ax.set(xlabel="hidden layers", ylabel="test accuracy", title="tanh MLP: initialisation against depth", ylim=(0, 1.02))
    ax.set_xticks([r["depth"] for r in rows])
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@experiment("init-depth", "small Gaussian vs Xavier initialisation of a tanh MLP at depths 2, 4, 8")
def init_depth(ctx: LabContext) -> LabResult:
    seeds = ctx.size(2, 1)
    defaults = DEFAULTS + ctx.size([], QUICK)
    rows = []
    for depth in DEPTHS:
        row = {"depth": depth, "seeds": seeds}
        for init, keys in INITS.items():
            summaries = [ctx.train(f"depth{depth}-{init}/seed{s}", ctx.config(defaults, *keys, f"model.depth={depth}",
                                                                             f"seed={s}")) for s in range(seeds)]
            row[f"{init}_test_acc"] = median([s["test_acc"] for s in summaries])
            row[f"{init}_train_acc"] = median([s["train_acc"] for s in summaries])
        row["xavier_minus_small"] = row["xavier_test_acc"] - row["small_gaussian_test_acc"]
        rows.append(row)
    cfg = ctx.config(defaults)
    setup = (f"trainlab's mlp (width {cfg['model']['width']}, tanh) with {DEPTHS} hidden layers on "
             f"{cfg['data']['name']}, SGD+momentum 0.9 at {cfg['optim']['lr']:g}, cosine, batch "
             f"{cfg['train']['batch_size']}, {cfg['train']['epochs']} epochs, medians of {seeds} seed(s); "
             "`model.init=small_gaussian` (std 0.01) against `xavier`.")
    columns = ["depth", "seeds", "small_gaussian_train_acc", "small_gaussian_test_acc", "xavier_train_acc",
               "xavier_test_acc", "xavier_minus_small"]
    return LabResult("initialisation against depth", setup, columns, rows, init_depth_claims(rows),
                     [plot_depths(rows, ctx.plot_path("init_depth"))])

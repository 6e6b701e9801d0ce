"""``trainlab lab ensemble``: how much do independent models averaged at test time add?

The 2016 slides: "Train multiple independent models" · "At test time average their results" ·
"Enjoy 2% extra performance"; the 2017 lecture: "tend to improve performance a little bit,
typically by a couple percent". Five MLPs that differ only in their seed, on a small training set
(so that single models leave errors to fix), their probabilities averaged.
"""
from __future__ import annotations

from pathlib import Path

from trainlab.evaluate import evaluate
from trainlab.lab.common import (
    SLIDES_2016,
    LabContext,
    LabResult,
    claim,
    experiment,
    graded,
)
from trainlab.plots import plt, save_figure

MEMBERS = 5
DEFAULTS = ["model.name=mlp", "model.width=128", "data.per_class=40", "train.epochs=30", "train.batch_size=32",
            "model.dropout=0.2"]
QUICK = ["data.per_class=10", "train.epochs=1", "model.width=16"]


def ensemble_claims(rows: list[dict]) -> list[dict]:
    ens = next(r for r in rows if r["model"] == "ensemble (mean of probabilities)")
    singles = [r for r in rows if r["model"].startswith("seed")]
    best = max(r["test_acc"] for r in singles)
    mean = sum(r["test_acc"] for r in singles) / len(singles)
    over_best, over_mean = (ens["test_acc"] - best) * 100, (ens["test_acc"] - mean) * 100
    return [
        claim("Train multiple independent models … At test time average their results … Enjoy 2% extra performance",
              SLIDES_2016,
              f"ensemble of {len(singles)}: test {ens['test_acc']:.4f}; {over_best:+.2f} points over the best member, "
              f"{over_mean:+.2f} over the average member. Verdict rule (as docs/ensembles.md): the gain over the best "
              "member from 1.5 points agrees, from 0.5 partly",
              graded(over_best, 1.5, 0.5)),
    ]


def plot_members(rows: list[dict], path: Path) -> Path:

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(rows)), [r["test_acc"] for r in rows], color=["C0"] * (len(rows) - 1) + ["C3"])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["model"].replace(" (mean of probabilities)", "") for r in rows])
    low = min(r["test_acc"] for r in rows)
    ax.set(ylim=(max(0.0, low - 0.05), min(1.0, max(r["test_acc"] for r in rows) + 0.02)), ylabel="test accuracy",
           title="Independent members and their ensemble")
    return save_figure(fig, path)


@experiment("ensemble", "five independently seeded MLPs against their averaged prediction (the '2%' claim)")
def ensemble(ctx: LabContext) -> LabResult:
    members = ctx.size(MEMBERS, 2)
    defaults = DEFAULTS + ctx.size([], QUICK)
    trials = [ctx.trial(f"seed{s}", ctx.config(defaults, f"seed={s}")) for s in range(members)]
    data = ctx.data(ctx.config(defaults))  # the test split is the same for every seed (digits' is fixed)
    x, y = data.test_x.cpu(), data.test_y.cpu()
    models = [t.load_model() for t in trials]
    rows = [{"model": f"seed {t.seed}", "test_acc": evaluate(m, x, y, data.num_classes)["acc"]} for t, m in zip(trials, models)]
    rows.append({"model": "ensemble (mean of probabilities)", "test_acc": evaluate(models, x, y, data.num_classes)["acc"]})
    cfg = ctx.config(defaults)
    m = cfg["model"]
    net = (f"mlp (2 hidden layers of {m['width']}" if m["name"] == "mlp"
           else f"{m['name']} (depth {m['depth']}, width {m['width']}, norm {m['norm'] or 'none'}")
    setup = (f"trainlab's {net}, dropout {m['dropout']}) on "
             f"{len(data.train_y)} {cfg['data']['name']} training images ({cfg['data']['per_class']} per class before the "
             f"validation split), {cfg['optim']['name']}, {cfg['schedule']['name']}, {cfg['train']['epochs']} epochs, batch "
             f"{cfg['train']['batch_size']}; {members} members with seeds 0.."
             f"{members - 1} (the seed draws the initial weights, the batches, and which {cfg['data']['per_class']} images per "
             "class train), each tested with its best-on-validation weights on the same test split, then their "
             "softmax outputs averaged.")
    return LabResult("independent models averaged at test time", setup, ["model", "test_acc"], rows,
                     ensemble_claims(rows), [plot_members(rows, ctx.plot_path("ensemble"))])

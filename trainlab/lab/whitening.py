"""``trainlab lab whitening``: PCA and whitening against standardising, for images.

The slides, after the image preprocessing recipes (mean image, per-channel mean, per-channel mean
and std): "Not common to do PCA or whitening". The same MLP on inputs standardised, projected on
the principal components (99% of the variance), PCA-whitened and ZCA-whitened.
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
)
from trainlab.plots import plt, save_figure

PREPROCESSORS = ["standardize", "pca", "pca_whiten", "zca"]
DEFAULTS = ["model.name=mlp", "model.width=128", "train.epochs=20", "train.batch_size=64"]
QUICK = ["data.subset=300", "train.epochs=1", "model.width=16"]


def whitening_claims(rows: list[dict]) -> list[dict]:
    acc = {r["preprocess"]: r["test_acc"] for r in rows}
    best_other = max((p for p in PREPROCESSORS if p != "standardize"), key=acc.get)
    lead = (acc[best_other] - acc["standardize"]) * 100
    return [
        claim("Not common to do PCA or whitening", SLIDES,
              "test accuracy: " + ", ".join(f"{p} {acc[p]:.4f}" for p in PREPROCESSORS)
              + f"; the best of PCA/whitening ({best_other}) {lead:+.2f} points over standardising. Verdict rule "
              "(nothing gained by whitening images): at most +0.5 points agrees, at most +1.5 partly",
              AGREES if lead <= 0.5 else PARTLY if lead <= 1.5 else DISAGREES),
    ]


def plot_preprocessors(rows: list[dict], path: Path) -> Path:

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(rows)), [r["test_acc"] for r in rows], color=[f"C{i}" for i in range(len(rows))])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["preprocess"] for r in rows])
    low = min(r["test_acc"] for r in rows)
    ax.set(ylim=(max(0.0, low - 0.05), 1.0), ylabel="test accuracy (median)", title="Standardising against PCA and whitening")
    return save_figure(fig, path)


@experiment("whitening", "standardising against PCA, PCA whitening and ZCA whitening on one MLP")
def whitening(ctx: LabContext) -> LabResult:
    seeds = ctx.size(3, 1)
    defaults = DEFAULTS + ctx.size([], QUICK)
    rows = []
    for pre in PREPROCESSORS:
        summaries = [ctx.train(f"{pre}/seed{s}", ctx.config(defaults, f"preprocess.name={pre}", f"seed={s}"))
                     for s in range(seeds)]
        rows.append({"preprocess": pre, "seeds": seeds,
                     "best_val_acc": median([s["best_val_acc"] for s in summaries]),
                     "test_acc": median([s["test_acc"] for s in summaries])})
    cfg = ctx.config(defaults)
    setup = (f"trainlab's mlp (2 hidden layers of {cfg['model']['width']}) on {cfg['data']['name']}, adam, cosine, "
             f"{cfg['train']['epochs']} epochs, batch {cfg['train']['batch_size']}, medians of {seeds} seed(s). "
             f"Preprocessing fitted on the training split: `preprocess.name` in {PREPROCESSORS} (pca keeps 99% of "
             "the variance; whitening adds ε = 1e-5 to the eigenvalues).")
    return LabResult("PCA and whitening against standardising", setup,
                     ["preprocess", "seeds", "best_val_acc", "test_acc"], rows, whitening_claims(rows),
                     [plot_preprocessors(rows, ctx.plot_path("whitening"))])

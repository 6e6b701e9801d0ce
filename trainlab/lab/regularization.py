"""``trainlab lab regularization``: none, L2, dropout, DropConnect, fractional max pooling, data
augmentation, batch norm, cutout and mixup on a small training set — the train/validation gap and
the test accuracy of each — and stochastic depth on a small ResNet against the same ResNet without it.

The lecture: "Huge train / val gap means overfitting! Increase regularization, get more data";
"Try cutout and mixup especially for small classification datasets"; "Batch normalization and
data augmentation almost always a good idea"; of batch norm: "Acts as regularization during
training"; and the slides' pattern for DropConnect, fractional pooling and stochastic depth:
training adds randomness, testing uses (or averages over) all of it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from trainlab.evaluate import evaluate
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


def augmentation_sizes(side: int) -> tuple[int, int]:
    """(crop padding, cutout hole side) in pixels for images ``side`` pixels wide: the usual
    strengths scaled to the image, crops shifting by an eighth of it (1 px on 8x8 digits, 3 px on
    28x28 MNIST-sized images) and a hole half its side (DeVries and Taylor's 16 px on 32 px CIFAR)."""
    return max(1, side // 8), max(1, side // 2)


def regularisers(side: int) -> dict[str, list[str]]:
    """name → config overrides, for images ``side`` pixels wide (:func:`augmentation_sizes`)."""
    crop, hole = augmentation_sizes(side)
    return {
        "none": [],
        "L2 (1e-3)": ["reg.penalty=l2", "reg.strength=1e-3"],
        "dropout 0.5": ["model.dropout=0.5"],
        "fractional pooling": ["model.fractional_pool=true", "model.fractional_eval_sets=4"],
        "augmentation (crop)": ["augment.names=[crop]", f"augment.crop_padding={crop}"],
        "batch norm": ["model.norm=batch"],
        "cutout": ["augment.names=[cutout]", f"augment.cutout_size={hole}"],
        "mixup": ["augment.names=[mixup]", "augment.mix_alpha=1.0"],
    }


# 30 images per class, a third of them held out for validation: 200 to train on. A net big enough
# to memorise them, trained long enough (100 epochs) for the regularised runs to fit too: at 60
# epochs and width 16 the augmented runs were still under-fitting (train accuracy ~0.9).
DEFAULTS = ["model.name=convnet", "model.width=32", "model.depth=2", "data.per_class=30", "data.val_fraction=0.34",
            "train.epochs=100", "train.batch_size=32"]
QUICK = ["data.per_class=10", "train.epochs=3", "model.width=8"]
# DropConnect drops weights of the mlp's hidden layers and stochastic depth drops residual blocks,
# so each is measured on the architecture it belongs to, with and without it: the mlp (2 x 256) and
# the smallest ResNet (depth 8, one block per stage). Each pair is compared within itself only.
MLP = ["model.name=mlp"]
RESNET = ["model.name=resnet", "model.depth=8", "model.width=16"]
PAIRS = {
    "mlp": MLP,
    "mlp, DropConnect 0.5": [*MLP, "model.dropconnect=0.5"],
    "resnet-8": RESNET,
    "resnet-8, stochastic depth 0.5": [*RESNET, "model.stochastic_depth=0.5"],
}
RANDOMNESS_CLAIMS = {  # row → the slide's words (Training / Testing) and the row it is compared with
    "mlp, DropConnect 0.5": ("Training: Drop connections between neurons (set weights to 0)” · “Testing: Use all "
                             "the connections", "mlp"),
    "fractional pooling": ("Training: Use randomized pooling regions” · “Testing: Average predictions from several "
                           "regions", "none"),
    "resnet-8, stochastic depth 0.5": ("Training: Skip some layers in the network” · “Testing: Use all the layer",
                                       "resnet-8"),
}


def clean_train_acc(trial, data) -> float:
    """Accuracy on the (un-augmented) training split in eval mode: the side of the gap the
    training log cannot give when augmentation or mixup changed every training batch."""
    return evaluate(trial.load_model(), data.train_x.cpu(), data.train_y.cpu(), data.num_classes)["acc"]


def randomness_claim(rows: dict, name: str) -> dict:
    """A regulariser that adds randomness in training against its baseline. Verdict rule (written
    before the run): a narrower train−val gap and a higher test accuracy agrees, one of the two
    partly."""
    words, baseline = RANDOMNESS_CLAIMS[name]
    gap = rows[name]["gap"] - rows[baseline]["gap"]
    acc = rows[name]["test_acc"] - rows[baseline]["test_acc"]
    return claim(words, SLIDES, f"{name} vs {baseline}: train−val gap {gap:+.3f}, test accuracy {acc:+.3f}",
                 AGREES if gap < 0 and acc > 0 else PARTLY if gap < 0 or acc > 0 else DISAGREES)


def regularization_claims(rows: dict) -> list[dict]:
    none = rows["none"]
    others = [r for n, r in rows.items() if n != "none" and n not in PAIRS]
    narrower = [r["regulariser"] for r in others if r["gap"] < none["gap"]]
    better = lambda n: rows[n]["test_acc"] - none["test_acc"]  # noqa: E731
    small_data = [better("cutout"), better("mixup")]
    aug = better("augmentation (crop)")
    bn = better("batch norm")
    bn_gap = rows["batch norm"]["gap"] - none["gap"]
    return [
        claim("Huge train / val gap means overfitting! Increase regularization, get more data", SLIDES,
              f"gap without regularisation {none['gap']:.3f}; narrower with {', '.join(narrower) or 'none'} "
              f"({len(narrower)}/{len(others)})",
              AGREES if len(narrower) == len(others) else PARTLY if narrower else DISAGREES),
        claim("Try cutout and mixup especially for small classification datasets", SLIDES,
              f"test accuracy vs none: cutout {small_data[0]:+.3f}, mixup {small_data[1]:+.3f}",
              AGREES if min(small_data) > 0.005 else PARTLY if max(small_data) > 0.005 else DISAGREES),
        claim("Batch normalization and data augmentation almost always a good idea", SLIDES,
              f"test accuracy vs none: batch norm {bn:+.3f}, crop augmentation {aug:+.3f}. Verdict rule: both more "
              "than +0.005 agrees, one of them partly",
              AGREES if min(aug, bn) > 0.005 else PARTLY if max(aug, bn) > 0.005 else DISAGREES),
        claim("Acts as regularization during training", SLIDES,
              f"batch norm (no other regulariser) vs none: train−val gap {bn_gap:+.3f}, test accuracy {bn:+.3f}. "
              "Verdict rule: a narrower gap and a higher test accuracy agrees, one of the two partly",
              AGREES if bn_gap < 0 and bn > 0 else PARTLY if bn_gap < 0 or bn > 0 else DISAGREES),
        *(randomness_claim(rows, name) for name in RANDOMNESS_CLAIMS),
    ]


def plot_gaps(rows: dict, path: Path) -> Path:
    names = list(rows)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for i, (key, label) in enumerate((("train_acc", "train (clean, eval mode)"), ("best_val_acc", "validation"),
                                      ("test_acc", "test"))):
        ax.bar(x + (i - 1) * 0.27, [rows[n][key] for n in names], 0.27, label=label, color=f"C{i}")
    ax.set(xticks=x, ylabel="accuracy", title="Regularisers on a small training set",
           ylim=(min(r["test_acc"] for r in rows.values()) - 0.1, 1.01))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


@experiment("regularization", "none, L2, dropout, DropConnect, fractional pooling, augmentation, cutout, mixup on a "
                              "small training set, and stochastic depth on a ResNet: train/val gap and test accuracy")
def regularization(ctx: LabContext) -> LabResult:
    seeds = ctx.size(2, 1)
    defaults = DEFAULTS + ctx.size([], QUICK)
    cfg = ctx.config(defaults)
    data = ctx.data(cfg)
    side = data.train_x.shape[-1]
    crop, hole = augmentation_sizes(side)
    rows = {}
    for name, keys in {**regularisers(side), **PAIRS}.items():
        cfgs = [ctx.config(defaults, *keys, f"seed={s}") for s in range(seeds)]
        tag = re.sub(r"[^\w.]+", "-", name.split(" (")[0])
        trials = [ctx.trial(f"{tag}/seed{s}", c) for s, c in enumerate(cfgs)]
        train = [clean_train_acc(t, ctx.data(c)) for t, c in zip(trials, cfgs)]
        val = [t.summary["best_val_acc"] for t in trials]
        rows[name] = {"regulariser": name, "train_acc": median(train), "best_val_acc": median(val),
                      "gap": median([a - b for a, b in zip(train, val)]),
                      "test_acc": median([t.summary["test_acc"] for t in trials])}
    setup = (f"trainlab's convnet (width {cfg['model']['width']}, {cfg['model']['depth']} stages) trained on "
             f"{len(data.train_y)} {cfg['data']['name']} images ({cfg['data']['per_class']} per class, a third held out "
             f"for validation: {len(data.val_y)}), adam, cosine, {cfg['train']['epochs']} epochs, batch "
             f"{cfg['train']['batch_size']}, medians of {seeds} seed(s); test on the full test split "
             f"({len(data.test_y)} images). Crops shift by up to {crop} px, the cutout hole is "
             f"{hole}x{hole} px, half the image side. `train_acc` is measured on the clean training images in eval mode; "
             f"`gap` = train_acc − best_val_acc. The mlp rows (2 hidden layers of 256) and the resnet-8 rows "
             f"(trainlab's ResNet, depth 8, width 16, one block per stage) are the same set-up with and without "
             f"DropConnect and stochastic depth, each pair compared within itself.")
    return LabResult("regularisers on a small training set", setup,
                     ["regulariser", "train_acc", "best_val_acc", "gap", "test_acc"], list(rows.values()),
                     regularization_claims(rows), [plot_gaps(rows, ctx.plot_path("regularization"))])

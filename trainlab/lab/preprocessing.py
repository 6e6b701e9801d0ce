"""``trainlab lab preprocessing``: un-centred inputs make the loss sensitive to the weights.

The lecture (slides, "Data Preprocessing"): "Before normalization: classification loss very
sensitive to changes in weight matrix; hard to optimize" · "After normalization: less sensitive to
small changes in weights; easier to optimize". The same small net is trained on raw, centred
(mean image subtracted) and standardised inputs — and, to reproduce the lecture's picture of a
data cloud "far away from the origin", on raw inputs shifted away from zero. Measured: how much
a small random change of the first layer's weights raises the trained model's loss, and how
many updates plain SGD needs to reach a target training error at its best rate.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    SLIDES,
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
    time_to_target,
    times,
)

TARGET, WINDOW = 0.10, 20
LRS = [0.01, 0.03, 0.1, 0.3, 1.0]
SHIFT = 5.0  # added to every raw pixel (values in [0, 1]) for the "far from the origin" cloud
EPSILON = 0.05  # size of the weight perturbation, relative to the weights' norm
DRAWS = 20
SENSITIVITY_IMAGES = 5000  # training images the loss is measured on (all of digits'; a fifth of MNIST's)

# name → (preprocess.name, shift of the raw pixels)
FAR = f"raw + {SHIFT:g} (far from origin)"
VARIANTS = {
    "raw": ("none", 0.0),
    FAR: ("none", SHIFT),
    "centred (mean image)": ("mean_image", 0.0),
    "standardised": ("standardize", 0.0),
}
# Plain SGD: momentum and adaptive rates partly undo a badly scaled problem, which would hide
# what the lecture is pointing at. A one-hidden-layer net keeps the first layer close to the
# lecture's linear classifier.
DEFAULTS = ["model.name=mlp", "model.depth=1", "model.width=64", "optim.name=sgd", "schedule.name=constant",
            "train.epochs=15", "train.batch_size=32"]
QUICK = ["data.subset=300", "train.epochs=1"]


def shifted(data, shift: float):
    """The data bundle with ``shift`` added to every image (train, val and test alike)."""
    if not shift:
        return data
    move = lambda x: None if x is None else x + shift  # noqa: E731, B023  (called within this iteration)
    return dataclasses.replace(data, train_x=move(data.train_x), val_x=move(data.val_x), test_x=move(data.test_x))


@torch.no_grad()
def loss_sensitivity(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float = EPSILON,
                     draws: int = DRAWS, seed: int = 0) -> float:
    """Mean rise of the loss when the first linear layer's weights W get a random change δ of
    norm ε‖W‖ ("as we wiggle that line a little bit"), over ``draws`` directions."""
    layer = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    weight = layer.weight.detach().clone()
    gen = torch.Generator().manual_seed(seed)
    base = F.cross_entropy(model(x), y)
    rises = []
    try:
        for _ in range(draws):
            delta = torch.randn(weight.shape, generator=gen)
            layer.weight.copy_(weight + delta * (epsilon * weight.norm() / delta.norm()))
            rises.append(float(F.cross_entropy(model(x), y) - base))
    finally:
        layer.weight.copy_(weight)
    return sum(rises) / len(rises)


def preprocessing_claims(rows: dict) -> list[dict]:
    raw, far, std = rows["raw"], rows[FAR], rows["standardised"]
    centred = rows["centred (mean image)"]
    sens = ratio(far["loss_sensitivity"], std["loss_sensitivity"])
    sens_raw = ratio(raw["loss_sensitivity"], std["loss_sensitivity"])
    slower = ratio(far["steps_to_10pct_error"], std["steps_to_10pct_error"])
    slower_raw = ratio(raw["steps_to_10pct_error"], std["steps_to_10pct_error"])
    gap = abs(centred["test_acc"] - std["test_acc"])
    return [
        claim("Before normalization: classification loss very sensitive to changes in weight matrix … After "
              "normalization: less sensitive to small changes in weights", f"{SLIDES}; {TRANSCRIPT}",
              f"loss rise for a {EPSILON:.0%} weight change, relative to standardised: far-from-origin "
              f"{times(sens)}, raw {times(sens_raw)}",
              # the claim is about data "far away from the origin", but plain raw pixels must show it too
              AGREES if graded(sens, 2.0, 1.2) == AGREES and graded(sens_raw, 1.2, 1.2) == AGREES
              else PARTLY if graded(sens, 2.0, 1.2) != DISAGREES else DISAGREES),
        claim("[un-normalised data is] hard to optimize … [normalised is] easier to optimize", SLIDES,
              f"updates to {TARGET:.0%} training error at each one's best SGD rate, relative to standardised: "
              f"far-from-origin {times(slower)}, raw {times(slower_raw)}",
              graded(slower, 2.0, 1.2)),
        claim("TLDR: In practice for Images: center only", SLIDES,
              f"test accuracy centred {centred['test_acc']:.3f} vs standardised {std['test_acc']:.3f}",
              AGREES if gap <= 0.01 else PARTLY if gap <= 0.03 else DISAGREES),
    ]


@experiment("preprocessing", "raw vs centred vs standardised inputs: loss sensitivity to the weights and SGD speed")
def preprocessing(ctx: LabContext) -> LabResult:
    lrs, seeds = ctx.size(LRS, [0.1]), ctx.size(3, 1)
    defaults = DEFAULTS + ctx.size([], QUICK)
    rows, curves, series = {}, {}, {}
    for label, (name, shift) in VARIANTS.items():
        data = shifted(ctx.data(ctx.config(defaults)), shift)
        at = lambda lr, seed: ctx.config(defaults, f"preprocess.name={name}", f"optim.lr={lr}", f"seed={seed}")  # noqa: E731, B023  (called within this iteration)
        tag = f"{name}-shift{shift:g}" if shift else name
        trials = ctx.tuned(tag, at, lrs, seeds, time_to_target(TARGET, WINDOW), data)
        x, y = data.train_x[:SENSITIVITY_IMAGES].cpu(), data.train_y[:SENSITIVITY_IMAGES].cpu()
        rows[label] = {
            "inputs": label, "preprocess.name": name, "pixel_mean": float(data.train_x.mean()), "lr": trials[0].lr,
            "loss_sensitivity": median([loss_sensitivity(t.load_model(), x, y) for t in trials]),
            "steps_to_10pct_error": median([steps_to_target(t.steps.error, TARGET, WINDOW) for t in trials]),
            "test_acc": median([t.summary["test_acc"] for t in trials]),
        }
        curves[f"train_error/{tag}"] = trials[0].steps.error
        series[f"{label} (lr {trials[0].lr:g})"] = trials[0].steps.error
    plot = plot_curves(series, ctx.plot_path("preprocessing_train_error"), "Training error by input preprocessing (seed 0)",
                       "training error", WINDOW, target=TARGET)
    cfg = ctx.config(defaults)
    setup = (f"mlp with one hidden layer of {cfg['model']['width']} relu units on {cfg['data']['name']}, plain SGD, "
             f"constant rate, batch {cfg['train']['batch_size']}, {cfg['train']['epochs']} epochs; each input variant "
             f"gets its best rate from {lrs} (fewest updates to {TARGET:.0%} training error), {seeds} seed(s), medians. "
             f"`loss_sensitivity`: mean rise of the training loss of the trained model when the first layer's weights "
             f"get a random change of {EPSILON:.0%} of their norm ({DRAWS} directions). The far-from-origin variant adds "
             f"{SHIFT:g} to every raw pixel (values in [0, 1]) to reproduce the lecture's picture.")
    return LabResult("input preprocessing and loss sensitivity", setup,
                     ["inputs", "preprocess.name", "pixel_mean", "lr", "loss_sensitivity", "steps_to_10pct_error",
                      "test_acc"], list(rows.values()), preprocessing_claims(rows), [plot], curves)

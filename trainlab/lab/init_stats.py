"""``trainlab lab init-stats``: activation statistics of the lecture's deep stack under each initialisation.

The slides' experiment, at its full size: "Forward pass for a 6-layer … net with hidden size 4096",
16 inputs x ~ N(0, 1), no training — for tanh with W ~ N(0, 0.01²) ("All activations tend to zero
for deeper network layers"), N(0, 0.05²) ("All activations saturate"), Xavier ("Just right"),
and relu with Xavier ("Activations collapse to zero again") and Kaiming ("Just right"). The
net is trainlab's mlp (biases start at 0, so it is the slides' ``x = f(x.dot(W))``) and the
statistics come from the training monitors' :func:`activation_stats`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainlab.babysit.monitors import activation_stats
from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    SLIDES,
    LabContext,
    LabResult,
    claim,
    experiment,
)
from trainlab.models import build_model
from trainlab.plots import plt, save_figure

# label → (model.* overrides, the slide's words for it)
CONFIGS = {
    "tanh, N(0, 0.01²)": (["model.activation=tanh", "model.init=small_gaussian", "model.init_std=0.01"],
                          "All activations tend to zero for deeper network layers"),
    "tanh, N(0, 0.05²)": (["model.activation=tanh", "model.init=small_gaussian", "model.init_std=0.05"],
                          "All activations saturate"),
    "tanh, Xavier": (["model.activation=tanh", "model.init=xavier"],
                     "“Just right”: Activations are nicely scaled for all layers!"),
    "relu, Xavier": (["model.activation=relu", "model.init=xavier"],
                     "Xavier assumes zero centered activation function … Activations collapse to zero again"),
    "relu, Kaiming": (["model.activation=relu", "model.init=kaiming"],
                      "ReLU correction: std = sqrt(2 / Din) … “Just right”: Activations are nicely scaled for all layers!"),
}
DEPTH, WIDTH, INPUTS, BINS = 6, 4096, 16, 40


def stack_stats(cfg: dict, width: int, seed: int) -> list[dict]:
    """Per-layer statistics of a freshly initialised ``DEPTH`` x ``width`` mlp on ``INPUTS``
    standard-normal inputs (the slides' ``x = np.random.randn(16, dims[0])``)."""
    torch.manual_seed(seed)
    model = build_model(cfg["model"], (width,), 10).eval()
    x = torch.randn(INPUTS, width, generator=torch.Generator().manual_seed(seed))
    return activation_stats(model, x, BINS)


def verdict_for(label: str, layers: list[dict]) -> tuple[str, str]:
    """(measured, verdict) for one configuration, from the std of the first and last layer and
    the saturated fraction of the deeper layers."""
    first, last = layers[0]["std"], layers[-1]["std"]
    shrink = last / first if first else 0.0
    saturated = np.mean([l["saturated_fraction"] or 0.0 for l in layers[1:]])
    measured = f"std layer 1 → {len(layers)}: {first:.3g} → {last:.3g} (×{shrink:.3g})"
    if label.startswith("tanh"):
        measured += f"; saturated (|h| > 0.99) in layers 2–{len(layers)}: {saturated:.1%}"
    if label == "tanh, N(0, 0.01²)":
        return measured, AGREES if shrink < 0.2 else PARTLY if shrink < 0.5 else DISAGREES
    if label == "tanh, N(0, 0.05²)":
        return measured, AGREES if saturated >= 0.5 else PARTLY if saturated >= 0.2 else DISAGREES
    if label == "relu, Xavier":
        return measured, AGREES if shrink <= 0.25 else PARTLY if shrink <= 0.5 else DISAGREES
    # "just right": the scale holds through the stack (within a factor 3 for tanh, whose
    # squashing shrinks it a little each layer; within a factor 2 for relu + Kaiming)
    band = (1 / 3, 3) if label.startswith("tanh") else (0.5, 2)
    healthy = band[0] <= shrink <= band[1] and saturated < 0.1
    return measured, AGREES if healthy else PARTLY if 0.1 <= shrink <= 10 else DISAGREES


def plot_histograms(stats: dict[str, list[dict]], path: Path) -> Path:
    rows, cols = len(stats), max(len(v) for v in stats.values())
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 1.6 * rows), squeeze=False)
    for r, (label, layers) in enumerate(stats.items()):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            h = layer["hist"]
            edges = np.linspace(h["lo"], h["hi"], len(h["counts"]) + 1)
            ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color=f"C{r}")
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            ax.set_title(f"layer {c + 1}: μ {layer['mean']:.2g}, σ {layer['std']:.2g}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("Activation histograms at initialisation, per layer (rows: activation and init)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_stds(stats: dict[str, list[dict]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, layers) in enumerate(stats.items()):
        ax.semilogy(range(1, len(layers) + 1), [max(l["std"], 1e-12) for l in layers], "o-", color=f"C{i}", label=label)
    ax.set(xlabel="layer", ylabel="activation std", title="Activation std through the stack")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@experiment("init-stats", "activation mean/std/histograms of the 6-layer, 4096-wide stack under each "
                          "initialisation (tanh 0.01, 0.05, Xavier; relu Xavier, Kaiming)")
def init_stats(ctx: LabContext) -> LabResult:
    width = ctx.size(WIDTH, 256)
    stats, rows, claims = {}, [], []
    for label, (keys, words) in CONFIGS.items():
        ctx.say(f"  {label}")
        cfg = ctx.config(["model.name=mlp", f"model.depth={DEPTH}", f"model.width={width}"], *keys)
        layers = stack_stats(cfg, width, cfg["seed"])
        stats[label] = layers
        rows += [{"config": label, "layer": i + 1, "mean": l["mean"], "std": l["std"],
                  "saturated_fraction": l["saturated_fraction"], "dead_fraction": l["dead_fraction"]}
                 for i, l in enumerate(layers)]
        measured, verdict = verdict_for(label, layers)
        claims.append(claim(f"[{label}] {words}", SLIDES, measured, verdict))
    curves = {f"std/{label}": [l["std"] for l in layers] for label, layers in stats.items()}
    setup = (f"trainlab's mlp with {DEPTH} hidden layers of {width} units (input {width}, biases 0), "
             f"{INPUTS} inputs x ~ N(0, 1), no training; statistics of each activation's output from "
             "trainlab.babysit.monitors.activation_stats (saturated: |tanh| > 0.99; dead: a relu unit that is 0 for "
             "all 16 inputs). " + ("The slides' exact sizes: nothing is scaled down." if width == WIDTH
                                  else f"Quick mode: width {width} instead of the slides' {WIDTH}."))
    plots = [plot_histograms(stats, ctx.plot_path("init_histograms")), plot_stds(stats, ctx.plot_path("init_std"))]
    return LabResult("activation statistics at initialisation", setup,
                     ["config", "layer", "mean", "std", "saturated_fraction", "dead_fraction"], rows, claims, plots,
                     curves)

"""``trainlab lab optimizers``: the lecture's update rules on its 2-D toy losses.

sgd, momentum, nesterov, adagrad, rmsprop and adam — trainlab's :data:`OPTIMIZERS` entries, so
torch's update rules — each minimise four 2-D functions drawn in the lecture: the ill-conditioned
quadratic ("taco shell"), the same quadratic turned by 45°, a saddle point, and the quadratic with
noisy gradients. Each optimiser gets its own learning rate from a grid (the lecture: "probably you
should have separately turned [sic: tuned] the learning rates per algorithm"); the table gives the steps each
needs to come within a tolerance of the minimum.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from trainlab.config import defaults
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
    ratio,
    times,
)
from trainlab.optim import OPTIMIZERS
from trainlab.plots import moving_average, plt, save_figure

OPTIMISERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]
# Log-spaced, wide enough that every optimiser's best rate is inside (sgd is stable below
# 2/curvature = 0.2 on the taco shell; adagrad and adam want rates near the distance to travel).
LR_GRID = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
QUICK_LR_GRID = [0.01, 0.1, 1.0]
DIVERGED = 1e6  # |f| above this: the rate is too high, the path is dropped


@dataclass(frozen=True)
class Surface:
    """A 2-D loss f(p) with its minimum value, start point, plot extent and gradient noise."""

    name: str
    title: str
    f: Callable[[Tensor], Tensor]
    minimum: float
    start: tuple[float, float]
    extent: tuple[float, float, float, float]
    tolerance: float
    noise: float = 0.0


def taco(p: Tensor) -> Tensor:
    """f = ½(0.1 x² + 10 y²): Hessian diag(0.1, 10), condition number 100 — "loss changes quickly
    in one direction and slowly in another"."""
    return 0.5 * (0.1 * p[0] ** 2 + 10.0 * p[1] ** 2)


_C, _S = math.cos(math.pi / 4), math.sin(math.pi / 4)


def rotate(p: Tensor) -> Tensor:
    """p turned by −45°: the taco shell's axes are then the diagonals, not x and y."""
    return torch.stack([_C * p[0] + _S * p[1], -_S * p[0] + _C * p[1]])


def unrotate(u: float, v: float) -> tuple[float, float]:
    """The point that :func:`rotate` maps to (u, v)."""
    return _C * u - _S * v, _S * u + _C * v


def tilted_taco(p: Tensor) -> Tensor:
    """The taco shell turned by 45° ("if that taco shell is kind of tilted and is not axis aligned")."""
    return taco(rotate(p))


def saddle(p: Tensor) -> Tensor:
    """f = x² + ¼y⁴ − ½y²: a saddle at the origin (curvature +2 along x, −1 along y), minima
    f = −¼ at (0, ±1)."""
    return p[0] ** 2 + 0.25 * p[1] ** 4 - 0.5 * p[1] ** 2


TACO_START = (-9.0, 1.2)
SURFACES = [
    Surface("taco", "ill-conditioned quadratic (taco shell)", taco, 0.0, TACO_START, (-10, 10, -2, 2), 1e-3),
    # Same start on the turned shell (same loss, same distance to travel).
    Surface("tilted", "taco shell turned by 45°", tilted_taco, 0.0, unrotate(*TACO_START), (-10, 10, -8, 8), 1e-3),
    # Tolerance 0.05 (f ≤ −0.2): the question is how long the path lingers at the saddle, not how
    # precisely it then settles in the minimum.
    Surface("saddle", "saddle point", saddle, -0.25, (1.5, 1e-4), (-2, 2, -1.5, 1.5), 0.05),
    Surface("noisy", "taco shell, noisy gradients (σ = 1)", taco, 0.0, TACO_START, (-10, 10, -2, 2), 0.05,
            noise=1.0),
]


def run_path(surface: Surface, optimiser: str, lr: float, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions (steps+1, 2) and gaps f − f* (steps+1,) of ``optimiser`` from the surface's start.

    The noisy surface adds N(0, σ²) to each gradient component, as minibatches would ("I've just
    added random uniform noise to the gradient at every point"; Gaussian here). Stops early,
    padding with NaN, when the loss blows up.
    """
    p = torch.tensor(surface.start, dtype=torch.float64, requires_grad=True)
    opt = OPTIMIZERS.get(optimiser)([p], defaults()["optim"], lr)
    gen = torch.Generator().manual_seed(seed)
    path = np.full((steps + 1, 2), np.nan)
    gaps = np.full(steps + 1, np.nan)
    for t in range(steps + 1):
        loss = surface.f(p)
        value = float(loss.detach())
        path[t], gaps[t] = p.detach().numpy(), value - surface.minimum
        if not abs(value) < DIVERGED or t == steps:
            break
        opt.zero_grad()
        loss.backward()
        if surface.noise:
            p.grad += surface.noise * torch.randn(2, generator=gen, dtype=p.dtype)
        opt.step()
    return path, gaps


NOISE_WINDOW = 25  # steps averaged before asking whether a noisy path is within tolerance


def steps_within(gaps: np.ndarray, tolerance: float, noisy: bool = False) -> int | None:
    """The first step t after which f − f* stays ≤ ``tolerance`` to the end, or None.

    "Stays" so that a path that flies through the minimum and oscillates around it (rmsprop at a
    high constant rate) does not count as converged. A noisy path never stays below any level, so
    there its trailing mean over :data:`NOISE_WINDOW` steps is what must stay below.
    """
    if np.isnan(gaps).any():
        return None
    level = moving_average(gaps, NOISE_WINDOW) if noisy else gaps
    above = np.nonzero(level > tolerance)[0]
    if len(above) == 0:
        return 0
    return None if above[-1] == len(level) - 1 else int(above[-1]) + 1


def tail_gap(gaps: np.ndarray) -> float:
    """Mean f − f* over the last fifth of the steps: where a noisy path settles (inf if it diverged)."""
    if np.isnan(gaps).any():
        return math.inf
    return float(np.mean(gaps[-max(1, len(gaps) // 5):]))


def meander(path: np.ndarray) -> float:
    """Path length / straight-line distance from start to end: 1 for a straight path."""
    length = np.linalg.norm(np.diff(path, axis=0), axis=1).sum()
    return float(length / max(np.linalg.norm(path[-1] - path[0]), 1e-12))


def score(surface: Surface, optimiser: str, lr: float, steps: int, seeds: int) -> dict:
    """Median over seeds of steps-to-tolerance, settled gap and meander for one (optimiser, lr)."""
    runs = [run_path(surface, optimiser, lr, steps, seed) for seed in range(seeds)]
    return {"lr": lr, "steps": median([steps_within(g, surface.tolerance, bool(surface.noise)) for _, g in runs]),
            "settled_gap": float(np.median([tail_gap(g) for _, g in runs])),
            "meander": float(np.median([meander(p) for p, _ in runs])), "path": runs[0][0], "gaps": runs[0][1]}


def best_rate(surface: Surface, optimiser: str, grid: list[float], steps: int, seeds: int) -> dict:
    """The grid rate that reaches the tolerance in the fewest steps (noise-free surfaces), or
    that settles lowest (noisy surface, where "fewest steps" rewards lucky paths)."""
    scored = [score(surface, optimiser, lr, steps, seeds) for lr in grid]
    if surface.noise:
        return min(scored, key=lambda s: s["settled_gap"])
    return min(scored, key=lambda s: (s["steps"] if s["steps"] is not None else math.inf, s["settled_gap"]))


def plot_paths(surface_runs: dict, plot: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (surface, runs) in zip(axes.flat, surface_runs.items()):
        x0, x1, y0, y1 = surface.extent
        gx, gy = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
        grid = torch.tensor(np.stack([gx, gy]))
        z = surface.f(grid).numpy() - surface.minimum
        ax.contour(gx, gy, np.log10(z + 1e-3), levels=15, cmap="Greys", linewidths=0.6)
        for i, (name, run) in enumerate(runs.items()):
            path = run["path"][~np.isnan(run["path"]).any(1)]
            ax.plot(path[:, 0], path[:, 1], "-", lw=1.2, color=f"C{i}", label=f"{name} (lr {run['lr']:g})")
        ax.plot(*surface.start, "k*", ms=10)
        ax.set(xlim=(x0, x1), ylim=(y0, y1), title=surface.title)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Optimiser paths, each with its best learning rate from the grid")
    return save_figure(fig, plot)


def plot_gaps(surface_runs: dict, plot: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for ax, (surface, runs) in zip(axes.flat, surface_runs.items()):
        for i, (name, run) in enumerate(runs.items()):
            ax.semilogy(np.maximum(run["gaps"], 1e-12), color=f"C{i}", lw=1.2, label=name)
        ax.axhline(surface.tolerance, color="k", ls=":", lw=1, label="tolerance")
        ax.set(title=surface.title, xlabel="step", ylabel="f − f*")
        ax.legend(fontsize=7)
    return save_figure(fig, plot)


def optimiser_claims(table: dict) -> list[dict]:
    """The lecture's claims about each toy problem against the steps measured."""
    steps = lambda s, o: table[s][o]["steps"]  # noqa: E731
    taco_speedup = ratio(steps("taco", "sgd"), steps("taco", "momentum"))
    adaptive = ["adagrad", "rmsprop", "adam"]
    slowdowns = [ratio(steps("tilted", o), steps("taco", o)) for o in adaptive]
    slowdown = float(np.median([math.inf if s is None else s for s in slowdowns]))
    saddle_speedup = ratio(steps("saddle", "sgd"), steps("saddle", "momentum"))
    noisy_sgd, noisy_mom = table["noisy"]["sgd"], table["noisy"]["momentum"]
    return [
        claim("Very slow progress along shallow dimension, jitter along steep direction … Adding momentum here "
              "can actually help us with this high condition number problem", f"{SLIDES}; {TRANSCRIPT}",
              f"taco shell: sgd {steps('taco', 'sgd')} steps, momentum {steps('taco', 'momentum')} "
              f"(momentum {times(taco_speedup)} faster)", graded(taco_speedup, 2.0, 1.2)),
        claim("if that taco shell is kind of tilted and is not axis aligned … Adam or any of these other "
              "algorithms really can't address that", TRANSCRIPT,
              "steps tilted / axis-aligned: " + ", ".join(f"{o} {times(r)}" for o, r in zip(adaptive, slowdowns))
              + f"; sgd, momentum, nesterov {times(ratio(steps('tilted', 'sgd'), steps('taco', 'sgd')))} "
              "(rotation cannot matter to them)", graded(slowdown, 2.0, 1.2)),
        claim("Zero gradient, gradient descent gets stuck … we have this velocity vector … That can hopefully "
              "carry us through the saddle point", f"{SLIDES}; {TRANSCRIPT}",
              f"saddle (start 1e-4 off the ridge, steps until f ≤ −0.2): sgd {steps('saddle', 'sgd')} steps, momentum "
              f"{steps('saddle', 'momentum')}, adam {steps('saddle', 'adam')}", graded(saddle_speedup, 2.0, 1.2)),
        claim("if there's noise in your gradient estimates, then vanilla SGD kind of meanders around the space "
              "… [with momentum] the noise kind of gets averaged out", TRANSCRIPT,
              f"noisy taco shell: path length / displacement sgd {noisy_sgd['meander']:.1f}, momentum "
              f"{noisy_mom['meander']:.1f}; settled f − f* sgd {noisy_sgd['settled_gap']:.3g}, momentum "
              f"{noisy_mom['settled_gap']:.3g}",
              AGREES if noisy_mom["meander"] < noisy_sgd["meander"] and noisy_mom["settled_gap"] <= noisy_sgd["settled_gap"]
              else PARTLY if noisy_mom["meander"] < noisy_sgd["meander"] or noisy_mom["settled_gap"] < noisy_sgd["settled_gap"]
              else DISAGREES),
    ]


@experiment("optimizers", "sgd, momentum, nesterov, adagrad, rmsprop, adam on 2-D taco-shell, tilted, saddle "
                          "and noisy losses: paths and steps to a tolerance")
def optimizers(ctx: LabContext) -> LabResult:
    grid = ctx.size(LR_GRID, QUICK_LR_GRID)
    steps = ctx.size(600, 150)
    seeds = ctx.size(5, 2)
    surface_runs, table, rows = {}, {}, []
    for surface in SURFACES:
        ctx.say(f"  {surface.title}")
        runs = {o: best_rate(surface, o, grid, steps, seeds if surface.noise else 1) for o in OPTIMISERS}
        surface_runs[surface], table[surface.name] = runs, runs
        rows += [{"loss": surface.name, "optimizer": o, "lr": r["lr"], "steps_to_tolerance": r["steps"],
                  "tolerance": surface.tolerance, "settled_gap": r["settled_gap"], "meander": r["meander"]}
                 for o, r in runs.items()]
    plots = [plot_paths(surface_runs, ctx.plot_path("optimizer_paths")),
             plot_gaps(surface_runs, ctx.plot_path("optimizer_gaps"))]
    curves = {f"gap/{s.name}/{o}": list(r["gaps"]) for s, runs in surface_runs.items() for o, r in runs.items()}
    setup = (f"Each optimiser (trainlab's OPTIMIZERS, torch update rules, default momentum 0.9, betas (0.9, 0.999), "
             f"rmsprop alpha 0.99) runs {steps} steps from the star on each loss, with the learning rate from "
             f"{grid} that reaches the tolerance soonest (noisy loss: that settles lowest, median of {seeds} "
             "gradient-noise seeds). `settled_gap` is the mean f − f* over the last fifth of the steps; "
             "`meander` is path length / distance travelled. These are the lecture's toy problems at full size.")
    return LabResult("optimiser paths on 2-D losses", setup,
                     ["loss", "optimizer", "lr", "steps_to_tolerance", "tolerance", "settled_gap", "meander"],
                     rows, optimiser_claims(table), plots, curves)

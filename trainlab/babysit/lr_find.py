"""Learning-rate range test (lecture, step 3: "find a learning rate that makes the loss drop
significantly within ~100 iterations"; Smith 2017, *Cyclical Learning Rates for
Training Neural Networks*).

A fresh model (the user's run is never touched) is trained for ``steps`` iterations while the
rate grows exponentially from ``min_lr`` to ``max_lr``:

    lr_i = min_lr · (max_lr / min_lr)^(i / (steps − 1))

The loss is smoothed with a bias-corrected exponential moving average (β = 0.9: about ten
iterations, one fifth of a decade of rates at the default 100 steps over 8 decades):

    m_i = β m_(i−1) + (1 − β) L_i,   L̂_i = m_i / (1 − β^(i+1))

and the sweep stops early once L̂ exceeds 4x its best value or is NaN ("the loss explodes").

Suggested rate: the rate of the smoothed loss's minimum divided by 10. At the minimum the rate
is already at the edge of stability (just past it the loss turns up); a tenth of it sits on the
steep, steadily falling part of the curve — the rate that "makes the loss drop significantly".

    trainlab lr-find                                        # the default config
    trainlab lr-find optim.name=sgd --out runs/lr --steps 200
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import torch

from trainlab.config import dump_config
from trainlab.errors import UserError
from trainlab.io import write_json
from trainlab.log import say as say_info
from trainlab.optim import optimizer_base_lr
from trainlab.plots import plt, save_figure
from trainlab.run import build_trainer, prepare
from trainlab.train import Callback, StepInfo, Trainer

MIN_LR, MAX_LR, STEPS = 1e-7, 10.0, 100
SMOOTHING = 0.9
DIVERGED = 4.0  # stop when the smoothed loss exceeds 4x its best
SUGGESTION_FACTOR = 10.0  # suggested rate = rate at the smoothed minimum / 10
# "Loss barely changes": below the first rate at which the smoothed loss is 10% under its start
# (the same 10% that diagnosis.BARELY_CHANGED uses for a whole run).
BARELY_CHANGES = 0.10


def sweep_rates(min_lr: float, max_lr: float, steps: int) -> list[float]:
    """lr_i = min_lr · (max_lr / min_lr)^(i / (steps − 1)), i = 0 .. steps − 1."""
    return [min_lr * (max_lr / min_lr) ** (i / max(steps - 1, 1)) for i in range(steps)]


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average; once a loss is NaN/inf, so is the rest."""
    out, m = [], 0.0
    for i, loss in enumerate(losses):
        m = beta * m + (1 - beta) * loss
        out.append(m / (1 - beta ** (i + 1)))
    return out


class RangeRecorder(Callback):
    """Records (lr, loss) per step and stops the sweep once the smoothed loss explodes."""

    name = "lr_range"

    def __init__(self):
        self.lrs, self.losses, self.best = [], [], math.inf

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        loss = float(step.loss)
        self.lrs.append(step.lr)
        self.losses.append(loss)
        smoothed = smooth(self.losses)[-1]
        if not math.isfinite(smoothed):
            trainer.request_stop(f"the loss became {loss} at lr {step.lr:.3g}")
        elif smoothed > DIVERGED * self.best:
            trainer.request_stop(f"the smoothed loss exceeded {DIVERGED:g}x its best at lr {step.lr:.3g}")
        else:
            self.best = min(self.best, smoothed)


def analyse(lrs: list[float], losses: list[float], configured_lr: float) -> dict:
    """Suggested rate, the "too low" and "too high" regions, and a verdict on ``configured_lr``."""
    smoothed = smooth(losses)
    finite = [i for i, s in enumerate(smoothed) if math.isfinite(s)]
    if not finite:
        return {"smoothed": smoothed, "suggested_lr": None, "verdict": "the loss was NaN from the first step: "
                "bad initialization or broken data (run `trainlab check`)"}
    best = min(finite, key=lambda i: smoothed[i])
    start = smoothed[finite[0]]
    falling = next((i for i in finite if smoothed[i] <= (1 - BARELY_CHANGES) * start), None)
    steepest = min(finite[1:], key=lambda i: (smoothed[i] - smoothed[i - 1]) / math.log(lrs[i] / lrs[i - 1]),
                   default=best)
    result = {"smoothed": smoothed, "min_loss_lr": lrs[best], "min_loss": smoothed[best], "steepest_lr": lrs[steepest],
              "too_low_below": lrs[falling] if falling is not None else None, "too_high_above": lrs[best]}
    if falling is None:
        result.update(suggested_lr=None, verdict=f"loss barely changes: rate too low over the whole sweep (up to "
                      f"{lrs[-1]:.3g}) — or a bad initialization: run `trainlab check`")
        return result
    result["suggested_lr"] = max(lrs[best] / SUGGESTION_FACTOR, lrs[falling])
    if configured_lr < lrs[falling]:
        verdict = (f"optim.lr={configured_lr:g}: loss barely changes: rate too low (the loss only starts to fall "
                   f"above {lrs[falling]:.2g})")
    elif configured_lr > lrs[best]:
        verdict = (f"optim.lr={configured_lr:g}: loss explodes or NaN: rate too high (the loss turns up above "
                   f"{lrs[best]:.2g})")
    else:
        verdict = f"optim.lr={configured_lr:g} is in the range where the loss falls"
    result["verdict"] = verdict
    return result


def plot_lr_find(result: dict, path: Path) -> Path:
    """Loss (points) and smoothed loss (line) against the rate on a log axis, with the regions."""
    lrs, losses, smoothed = result["lrs"], result["losses"], result["smoothed"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(lrs, losses, s=8, alpha=0.35, label="loss per step")
    ax.plot(lrs, smoothed, color="C3", lw=2, label=f"smoothed (EMA β={SMOOTHING})")
    if result.get("too_low_below"):
        ax.axvspan(lrs[0], result["too_low_below"], color="C0", alpha=0.08, label="loss barely changes: too low")
    if result.get("too_high_above"):
        ax.axvspan(result["too_high_above"], lrs[-1], color="C1", alpha=0.10, label="loss turns up / explodes: too high")
    if result.get("suggested_lr"):
        ax.axvline(result["suggested_lr"], color="C2", lw=2, label=f"suggested {result['suggested_lr']:.2g}")
    ax.axvline(result["configured_lr"], color="k", ls=":", label=f"optim.lr {result['configured_lr']:.2g}")
    finite = [s for s in smoothed if math.isfinite(s)]
    if finite:
        low, start = min(finite), finite[0]
        ax.set_ylim(low * 0.9 if low > 0 else low - 0.1, max(start, low) * DIVERGED * 1.05)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss", title="Learning-rate range test")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def lr_find(cfg: dict, out: str | Path, say: Callable[[str], None] = say_info, steps: int = STEPS,
            min_lr: float = MIN_LR, max_lr: float = MAX_LR) -> dict:
    """Run the range test for the setup ``cfg`` describes; writes ``out/lr_find.json``
    (``suggested_lr``, ``lrs``, ``losses``, ``smoothed``, regions, verdict) and ``out/plots/lr_find.png``."""
    if not 0 < min_lr < max_lr:
        raise UserError(f"lr-find needs 0 < min_lr < max_lr, got {min_lr:g} and {max_lr:g}")
    if steps < 2:
        raise UserError(f"lr-find needs at least 2 steps to sweep a range, got {steps}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    dump_config(cfg, out / "config.yaml")
    p = prepare(cfg, lambda msg: None)
    rates = sweep_rates(min_lr, max_lr, steps)

    def sweep(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        # Each group keeps its own multiplier (fine-tuning): the sweep scales the base rate.
        scale = [r / optimizer_base_lr(optimizer) for r in rates]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: scale[min(i, len(scale) - 1)])

    recorder = RangeRecorder()
    trainer = build_trainer(p, [recorder], scheduler=sweep, evaluate=lambda m: {},
                            epochs=math.ceil(steps / len(p.loader)), max_steps=steps, accelerated=False)
    optimizer = trainer.optimizer
    say(f"lr-find: {cfg['model']['name']} on {cfg['data']['name']}, {optimizer.__class__.__name__}, "
        f"lr {min_lr:g} → {max_lr:g} over {steps} steps")
    state = trainer.fit()
    result = {"suggested_lr": None, "lrs": recorder.lrs, "losses": recorder.losses,
              "configured_lr": cfg["optim"]["lr"], "min_lr": min_lr, "max_lr": max_lr, "steps": len(recorder.lrs),
              "smoothing": SMOOTHING, "stopped": state.stop_reason,
              "rule": f"suggested_lr = (lr at the minimum of the smoothed loss) / {SUGGESTION_FACTOR:g}"}
    result.update(analyse(recorder.lrs, recorder.losses, cfg["optim"]["lr"]))
    write_json(out / "lr_find.json", result)
    plot_lr_find(result, out / "plots" / "lr_find.png")
    suggestion = f"{result['suggested_lr']:.3g}" if result["suggested_lr"] else "none"
    say(f"suggested optim.lr={suggestion} (smoothed loss lowest at lr {result.get('min_loss_lr', float('nan')):.3g}); "
        f"{result['verdict']}")
    say(f"wrote {out / 'lr_find.json'} and {out / 'plots' / 'lr_find.png'}")
    return result

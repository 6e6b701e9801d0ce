"""``trainlab lab adaptive``: Adam's bias correction, and AdaGrad's step size against RMSProp's.

The slides ask two questions of the adaptive methods. Of AdaGrad: "Q2: What happens to the step
size over long time? Decays to zero" — its sum of squared gradients only grows — and RMSProp, the
"Leaky AdaGrad", forgets old gradients so its step does not. Of Adam without bias correction ("Adam
(almost)"): "Q: What happens at first timestep?" — the 2017 lecture: "We're making a very, very
large step at the beginning", because both moments start at zero; the fix is "Bias correction for
the fact that first and second moment estimates start at zero".

Both are read off real training runs on the same MLP: the size of the first updates (update-to-
weight ratio of the first layer) for Adam and ``adam_uncorrected``, and each parameter's effective
step lr / (√(accumulated g²) + ε) over training for AdaGrad and RMSProp.
"""
from __future__ import annotations

import torch

from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    SLIDES,
    LabContext,
    LabResult,
    claim,
    experiment,
    graded,
    plot_curves,
)
from trainlab.train import Callback

DEFAULTS = ["model.name=mlp", "model.width=64", "schedule.name=constant", "train.batch_size=64"]
QUICK = ["data.subset=300", "model.width=16"]
FIRST_STEPS = 20  # updates whose size is compared for the bias correction
ADAM_LR = 1e-3
# AdaGrad and RMSProp at one rate each, the same, over a long run: the claim is about the step's
# trend over time, not about which rate is best.
ADAPTIVE_LR, ADAPTIVE_EPOCHS = 1e-2, 30


def first_weight(model: torch.nn.Module) -> torch.nn.Parameter:
    """The first trainable weight matrix (the first hidden layer)."""
    return next(p for p in model.parameters() if p.dim() > 1 and p.requires_grad)


class UpdateRatioRecorder(Callback):
    """‖ΔW‖ / ‖W‖ of the first weight matrix at each of the first ``steps`` updates."""

    name = "lab_update_ratio"

    def __init__(self, steps: int):
        self.steps, self.ratios, self.before = steps, [], None

    def on_train_start(self, trainer) -> None:
        self.before = first_weight(trainer.model).detach().clone()

    def on_step_end(self, trainer, step) -> None:
        if len(self.ratios) >= self.steps:
            return
        w = first_weight(trainer.model).detach()
        self.ratios.append(float((w - self.before).norm() / self.before.norm()))
        self.before = w.clone()


class EffectiveStepRecorder(Callback):
    """Median over the first weight matrix of lr / (√acc + ε) after every update, acc being the
    optimiser's accumulated squared gradients (AdaGrad's ``sum``, RMSProp's ``square_avg``), over
    the weights that have had a gradient; and the minibatch loss."""

    name = "lab_effective_step"

    def __init__(self):
        self.steps: list[float] = []
        self.loss: list[float] = []

    def on_step_end(self, trainer, step) -> None:
        self.loss.append(float(step.loss))
        w = first_weight(trainer.model)
        group = next(g for g in trainer.optimizer.param_groups if any(p is w for p in g["params"]))
        state = trainer.optimizer.state[w]
        acc = state.get("sum", state.get("square_avg"))
        acc = acc[acc > 0]  # weights of always-blank input pixels never get a gradient: not steps
        self.steps.append(float((group["lr"] / (acc.sqrt() + group["eps"])).median()) if acc.numel() else float("nan"))


def adaptive_claims(rows: dict) -> list[dict]:
    adam, raw = rows["adam"], rows["adam_uncorrected"]
    first = raw["first_update_ratio"] / adam["first_update_ratio"]
    ada, rms = rows["adagrad"], rows["rmsprop"]
    ada_fall, rms_fall = ada["step_end_over_start"], rms["step_end_over_start"]
    return [
        claim("Q: What happens at first timestep? … Bias correction for the fact that first and second moment "
              "estimates start at zero", SLIDES,
              f"first update of the first layer: ‖ΔW‖/‖W‖ {raw['first_update_ratio']:.2e} without bias correction, "
              f"{adam['first_update_ratio']:.2e} with it ({first:.2f}×; the formula gives (1−β1)/√(1−β2) = 3.16×); "
              f"largest of the first {FIRST_STEPS}: {raw['max_early_ratio']:.2e} vs {adam['max_early_ratio']:.2e}. "
              f"Verdict rule: the uncorrected first step at least 2× Adam's agrees, 1.2× partly",
              graded(first, 2.0, 1.2)),
        claim("Q2: What happens to the step size over long time? Decays to zero", SLIDES,
              f"median effective step lr/(√acc+ε) of the first layer, end of training over step 10: AdaGrad "
              f"{ada_fall:.3f}, RMSProp {rms_fall:.3f}; final training loss AdaGrad {ada['final_train_loss']:.4f}, "
              f"RMSProp {rms['final_train_loss']:.4f}. Verdict rule: AdaGrad's step falls to ≤ 0.2 of its early "
              "value while RMSProp's stays ≥ 3× AdaGrad's ratio agrees; AdaGrad's falls to ≤ 0.5 partly",
              AGREES if ada_fall <= 0.2 and rms_fall >= 3 * ada_fall else PARTLY if ada_fall <= 0.5 else DISAGREES),
    ]


@experiment("adaptive", "Adam with and without bias correction (first steps); AdaGrad's step size decaying "
                        "against RMSProp's")
def adaptive(ctx: LabContext) -> LabResult:
    defaults = DEFAULTS + ctx.size([], QUICK)
    epochs = ctx.size(ADAPTIVE_EPOCHS, 2)
    rows, curves, steps = {}, {}, {}
    for name in ("adam", "adam_uncorrected"):
        recorder = UpdateRatioRecorder(FIRST_STEPS)
        cfg = ctx.config(defaults, f"optim.name={name}", f"optim.lr={ADAM_LR}", "train.epochs=1")
        summary = ctx.train(name, cfg, [recorder])
        rows[name] = {"optimizer": name, "lr": ADAM_LR, "epochs": 1, "first_update_ratio": recorder.ratios[0],
                      "max_early_ratio": max(recorder.ratios), "final_train_loss": None,
                      "step_end_over_start": None, "test_acc": summary["test_acc"]}
        curves[f"update_ratio/{name}"] = recorder.ratios
    for name in ("adagrad", "rmsprop"):
        recorder = EffectiveStepRecorder()
        cfg = ctx.config(defaults, f"optim.name={name}", f"optim.lr={ADAPTIVE_LR}", f"train.epochs={epochs}")
        summary = ctx.train(name, cfg, [recorder])
        early = recorder.steps[min(9, len(recorder.steps) - 1)]
        rows[name] = {"optimizer": name, "lr": ADAPTIVE_LR, "epochs": epochs, "first_update_ratio": None,
                      "max_early_ratio": None,
                      "final_train_loss": sum(recorder.loss[-20:]) / len(recorder.loss[-20:]),
                      "step_end_over_start": recorder.steps[-1] / early, "test_acc": summary["test_acc"]}
        steps[name] = recorder.steps
        curves[f"effective_step/{name}"] = recorder.steps
    plots = [
        plot_curves({n: curves[f"update_ratio/{n}"] for n in ("adam", "adam_uncorrected")},
                    ctx.plot_path("adam_first_steps"), f"First {FIRST_STEPS} updates: ‖ΔW‖/‖W‖ of the first layer",
                    "update ratio", window=1, log=True),
        plot_curves(steps, ctx.plot_path("effective_step"), "Median effective step lr/(√acc+ε), first layer",
                    "effective step", window=1, log=True),
    ]
    cfg = ctx.config(defaults)
    setup = (f"trainlab's mlp (width {cfg['model']['width']}, 2 hidden layers) on {cfg['data']['name']}, batch "
             f"{cfg['train']['batch_size']}, constant rate. Bias correction: Adam and the slides' \"Adam (almost)\" "
             f"(`optim.name=adam_uncorrected`) at lr {ADAM_LR:g}, betas 0.9/0.999, the first {FIRST_STEPS} updates. "
             f"Step size: AdaGrad and RMSProp (decay 0.99) both at lr {ADAPTIVE_LR:g} for {epochs} epochs; the "
             "effective step is the median over the first layer's weights. One seed.")
    cols = ["optimizer", "lr", "epochs", "first_update_ratio", "max_early_ratio", "step_end_over_start",
            "final_train_loss", "test_acc"]
    return LabResult("adaptive methods: bias correction and decaying steps", setup, cols, list(rows.values()),
                     adaptive_claims(rows), plots, curves)


__all__ = ["adaptive", "adaptive_claims", "UpdateRatioRecorder", "EffectiveStepRecorder"]

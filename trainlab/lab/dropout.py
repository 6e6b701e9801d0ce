"""``trainlab lab dropout``: one deterministic test-time pass against Monte-Carlo averaging.

Dropout makes the output random, y = f(x, z); at test time the lecture wants E_z[f(x, z)].
"Monte Carlo approximation: do many forward passes with different dropout masks, average all
predictions" — or, cheaply, one pass with every unit on and activations scaled so that "output at
test time = expected output at training time" (inverted dropout does the scaling in training,
so "test time is unchanged"). A net trained with trainlab's inverted :class:`Dropout` is
evaluated both ways, and once with the scaling forgotten.
"""
from __future__ import annotations

from pathlib import Path

import torch

from trainlab.evaluate import predict_probs
from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    SLIDES,
    SLIDES_2016,
    LabContext,
    LabResult,
    claim,
    experiment,
)
from trainlab.plots import plt, save_figure
from trainlab.regularization import Dropout

P = 0.5  # "0.5 is common"
MC_PASSES = [1, 10, 100, 1000]
# 1000 forward passes over a whole MNIST test split would take minutes on a CPU; the first 2000
# test images (all of digits' 360) measure agreement to within about a percent.
TEST_IMAGES = 2000
DEFAULTS = ["model.name=mlp", "model.depth=2", "model.width=512", f"model.dropout={P}", "train.epochs=40"]
QUICK = ["data.subset=300", "train.epochs=2", "model.width=64"]


def dropout_layers(model: torch.nn.Module) -> list[Dropout]:
    return [m for m in model.modules() if isinstance(m, Dropout)]


@torch.no_grad()
def mc_probs(model: torch.nn.Module, x: torch.Tensor, passes: int, seed: int = 0) -> torch.Tensor:
    """Mean softmax over ``passes`` forward passes, each with fresh dropout masks (only the
    dropout layers are put in training mode)."""
    torch.manual_seed(seed)
    model.eval()
    for layer in dropout_layers(model):
        layer.train()
    try:
        return sum(torch.softmax(model(x), 1) for _ in range(passes)) / passes
    finally:
        model.eval()


@torch.no_grad()
def unscaled_probs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Test-time softmax with the scaling forgotten: every dropout layer's output multiplied by
    1/(1−p), i.e. "using all inputs in the forward pass would inflate the activations" by the
    factor training never saw (2x for p = 0.5)."""
    hooks = [m.register_forward_hook(lambda mod, inp, out: out / (1.0 - mod.p)) for m in dropout_layers(model)]
    try:
        return torch.softmax(model.eval()(x), 1)
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def expected_train_output(model: torch.nn.Module, x: torch.Tensor, passes: int, seed: int = 0) -> tuple[float, float]:
    """Mean |first dropout layer's output| in training (averaged over ``passes`` masks) and at
    test time: the lecture's E[a] during training against a at test time."""
    layer = dropout_layers(model)[0]
    seen = []
    hook = layer.register_forward_hook(lambda mod, inp, out: seen.append(out.abs().mean()))
    try:
        mc_probs(model, x, passes, seed)
        train_mean = float(sum(seen) / len(seen))
        seen.clear()
        model.eval()(x)
        return train_mean, float(seen[0])
    finally:
        hook.remove()


def compare(probs: torch.Tensor, reference: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy, test loss (mean −log p_y: it sees over-confidence that accuracy does not),
    agreement of the predicted class with the reference's, and the mean total variation distance
    ½‖p − p_ref‖₁ between the two predictive distributions."""
    return {"test_acc": float((probs.argmax(1) == y).float().mean()),
            "test_loss": float(-probs[torch.arange(len(y)), y].clamp_min(1e-12).log().mean()),
            "agreement_with_mc": float((probs.argmax(1) == reference.argmax(1)).float().mean()),
            "tv_distance_to_mc": float(0.5 * (probs - reference).abs().sum(1).mean())}


def dropout_claims(rows: dict, train_vs_test: tuple[float, float]) -> list[dict]:
    scaled, mc = rows["test-time scaling (inverted dropout)"], rows[f"Monte Carlo, {MC_PASSES[-1]} masks"]
    unscaled = rows["scaling forgotten"]
    acc_gap = abs(scaled["test_acc"] - mc["test_acc"])
    train_mean, test_mean = train_vs_test
    inflation = test_mean / (1.0 - P) / train_mean  # the unscaled test pass against the training expectation
    return [
        claim("Can in fact do this with a single forward pass! (approximately) … this can be shown to be an "
              "approximation to evaluating the whole ensemble", SLIDES_2016,
              f"one scaled pass agrees with the {MC_PASSES[-1]}-mask average on {scaled['agreement_with_mc']:.1%} of test "
              f"images; accuracy {scaled['test_acc']:.3f} vs {mc['test_acc']:.3f}",
              AGREES if scaled["agreement_with_mc"] >= 0.97 and acc_gap <= 0.01
              else PARTLY if scaled["agreement_with_mc"] >= 0.9 else DISAGREES),
        claim("output at test time = expected output at training time", f"{SLIDES}; {SLIDES_2016}",
              f"mean |activation| after the first dropout: {train_mean:.4g} in training (average over "
              f"{MC_PASSES[-1]} masks) vs {test_mean:.4g} at test time",
              AGREES if abs(train_mean / test_mean - 1) <= 0.02 else PARTLY if abs(train_mean / test_mean - 1) <= 0.1
              else DISAGREES),
        claim("With p=0.5, using all inputs in the forward pass would inflate the activations by 2x from what the "
              "network was \"used to\" during training! => Have to compensate by scaling the activations back down",
              SLIDES_2016,
              f"without the scaling, activations are {inflation:.2f}x the training expectation; test accuracy "
              f"{unscaled['test_acc']:.3f} (scaled: {scaled['test_acc']:.3f}), test loss {unscaled['test_loss']:.3g} "
              f"(scaled: {scaled['test_loss']:.3g}), agreement with Monte Carlo {unscaled['agreement_with_mc']:.1%}",
              graded_forgotten(inflation, scaled, unscaled)),
    ]


def graded_forgotten(inflation: float, scaled: dict, unscaled: dict) -> str:
    """Agrees when the inflation is the predicted 1/(1−p) and it costs accuracy (> 1 point) or test
    loss (> 10%); partly when only the inflation shows (a relu net's argmax survives scaling)."""
    if abs(inflation * (1.0 - P) - 1.0) > 0.05:
        return DISAGREES
    hurts = unscaled["test_acc"] < scaled["test_acc"] - 0.01 or unscaled["test_loss"] > 1.1 * scaled["test_loss"]
    return AGREES if hurts else PARTLY


def plot_mc(rows: dict, path: Path) -> Path:
    mc = [rows[f"Monte Carlo, {k} masks"] for k in MC_PASSES]
    scaled = rows["test-time scaling (inverted dropout)"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.semilogx(MC_PASSES, [r["test_acc"] for r in mc], "o-", label="Monte Carlo average")
    a1.axhline(scaled["test_acc"], color="C1", ls="--", label="one pass, test-time scaling")
    a1.axhline(rows["scaling forgotten"]["test_acc"], color="C3", ls=":", label="one pass, scaling forgotten")
    a1.set(xlabel="forward passes (dropout masks)", ylabel="test accuracy", title="Accuracy")
    a1.legend(fontsize=8)
    a2.loglog(MC_PASSES[:-1], [r["tv_distance_to_mc"] for r in mc[:-1]], "o-", label="Monte Carlo, k masks")
    a2.axhline(scaled["tv_distance_to_mc"], color="C1", ls="--", label="one pass, test-time scaling")
    a2.axhline(rows["scaling forgotten"]["tv_distance_to_mc"], color="C3", ls=":", label="one pass, scaling forgotten")
    a2.set(xlabel="forward passes (dropout masks)", ylabel="TV distance",
           title=f"Distance to a {MC_PASSES[-1]}-mask average")
    a2.legend(fontsize=8)
    return save_figure(fig, path)


@experiment("dropout", "test-time scaling (inverted dropout) vs Monte-Carlo averaging over many masks: "
                       "agreement and accuracy")
def dropout(ctx: LabContext) -> LabResult:
    cfg = ctx.config(DEFAULTS + ctx.size([], QUICK))
    trial = ctx.trial("mlp-dropout", cfg)
    model, data = trial.load_model(), ctx.data(cfg)
    x, y = data.test_x[:TEST_IMAGES].cpu(), data.test_y[:TEST_IMAGES].cpu()
    reference = mc_probs(model, x, MC_PASSES[-1], seed=1)  # its own masks: not the row it is compared with
    rows = {"test-time scaling (inverted dropout)": {"passes": 1, **compare(predict_probs(model, x), reference, y)}}
    for k in MC_PASSES:
        rows[f"Monte Carlo, {k} masks"] = {"passes": k, **compare(mc_probs(model, x, k), reference, y)}
    rows["scaling forgotten"] = {"passes": 1, **compare(unscaled_probs(model, x), reference, y)}
    for method, row in rows.items():
        row["method"] = method
    train_vs_test = expected_train_output(model, x, MC_PASSES[-1])
    plot = plot_mc(rows, ctx.plot_path("dropout_mc"))
    setup = (f"mlp, {cfg['model']['depth']} hidden layers of {cfg['model']['width']} relu units, inverted dropout "
             f"p = {P} after each, trained {cfg['train']['epochs']} epochs on {cfg['data']['name']} (adam, cosine). "
             f"The best checkpoint is then evaluated on {len(y)} test images: one pass in eval mode (what trainlab does), "
             f"Monte-Carlo averages of the softmax over k random masks, and one pass with every dropout output "
             f"multiplied by 1/(1−p). Agreement and TV distance are against a separate {MC_PASSES[-1]}-mask average.")
    return LabResult("dropout at test time: scaling vs Monte Carlo", setup,
                     ["method", "passes", "test_acc", "test_loss", "agreement_with_mc", "tv_distance_to_mc"], list(rows.values()),
                     dropout_claims(rows, train_vs_test), [plot])

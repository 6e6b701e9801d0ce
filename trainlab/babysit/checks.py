"""Sanity checks before training (lecture, "Choosing hyperparameters"):

    Step 1: check initial loss — "turn off weight decay, sanity check loss at initialization,
            e.g. log(C) for softmax with C classes"; then switch regularisation on: it must go up.
    Step 2: overfit a small sample — "try to train to 100% training accuracy on a small sample
            of training data"; "loss not going down? LR too low, bad initialization; loss
            explodes to Inf or NaN? LR too high, bad initialization".
    Gradient checking — backprop's gradient against centred differences (see gradcheck.py).

:func:`run_checks` runs all of them on the model, data, loss and optimiser a config describes
(built by :func:`trainlab.run.prepare`, exactly as ``trainlab train`` would), prints a table and
writes ``checks.json``: ``[{name, passed, value, expected, advice, details}]``.

    trainlab check                              # the default config
    trainlab check -c my.yaml model.head_scale=100 --out runs/check
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import torch

from trainlab.babysit.gradcheck import GRADCHECK_TOLERANCE, gradcheck_module
from trainlab.callbacks import DivergenceGuard
from trainlab.classifier import make_loss, make_penalty
from trainlab.config import dump_config
from trainlab.data import load_data
from trainlab.data.loader import TensorLoader
from trainlab.evaluate import evaluate
from trainlab.io import write_json
from trainlab.log import say as say_info
from trainlab.optim import is_full_batch
from trainlab.run import build_trainer, prepare
from trainlab.train import Callback, Trainer

# Logits with standard deviation s at initialisation give an expected cross-entropy of about
# ln C + s²/2 (second-order expansion of log-sum-exp around equal logits). Half a nat of excess
# is s ≈ 1: beyond it the untrained softmax already strongly prefers some classes, which the
# lecture's check is there to catch. (It is 22% of ln 10 and 11% of ln 100.)
INITIAL_LOSS_TOLERANCE = 0.5
INITIAL_LOSS_SAMPLES = 1024
# Regularisation switched on for the check when the config has none: the lecture's "good weight
# decay to try: 1e-4" (it adds 1e-4·ΣW², ~0.1 nat for the default MLP: plainly visible).
CHECK_REG_STRENGTH = 1e-4
# The small sample: 5 minibatches of 20 images (the slides: "a small sample of training data
# (~5-10 minibatches)"; 5 keeps the check quick), fitted to ≥ 99% train accuracy within 300
# updates (60 passes).
OVERFIT_BATCHES, OVERFIT_BATCH_SIZE = 5, 20
OVERFIT_TARGET = 0.99
OVERFIT_STEPS = 300
# Gradient check: a few samples keep the float64 forward passes cheap.
GRADCHECK_SAMPLES = 4


def check(name: str, passed: bool, value, expected: str, advice: str, **details) -> dict:
    return {"name": name, "passed": bool(passed), "value": value, "expected": expected,
            "advice": "" if passed else advice, "details": details}


def sanity_config(cfg: dict) -> dict:
    """``cfg`` with every regulariser off: penalty, label smoothing, dropout, DropConnect,
    stochastic depth, augmentation (the lecture's "turn off weight decay")."""
    cfg = copy.deepcopy(cfg)
    cfg["reg"]["penalty"], cfg["reg"]["label_smoothing"] = "none", 0.0
    cfg["optim"]["weight_decay"] = 0.0
    for key in ("dropout", "dropconnect", "stochastic_depth"):
        cfg["model"][key] = 0.0
    cfg["augment"]["names"] = []
    return cfg


@torch.no_grad()
def mean_loss(model, loss_fn: Callable, penalty: Callable | None, x: torch.Tensor, y: torch.Tensor,
              batch_size: int) -> float:
    """The loss the first training steps see: train mode, minibatches of the training size."""
    model.train()
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        loss = loss_fn(model(xb), yb) + (penalty() if penalty is not None else 0.0)
        total += float(loss) * len(xb)
    return total / len(x)


def check_initial_loss(cfg: dict, data, say) -> list[dict]:
    """(a) data loss at initialisation, regularisation off, within INITIAL_LOSS_TOLERANCE of ln C;
    (b) the same model's loss with a weight penalty switched on is higher."""
    off = sanity_config(cfg)
    p = prepare(off, say, data=data)
    x, y = p.data.train_x[:INITIAL_LOSS_SAMPLES], p.data.train_y[:INITIAL_LOSS_SAMPLES]
    batch, chance = cfg["train"]["batch_size"], math.log(p.data.num_classes)
    loss = mean_loss(p.model, make_loss(off), None, x, y, batch)
    excess = loss - chance
    first = check("initial_loss", abs(excess) <= INITIAL_LOSS_TOLERANCE, loss,
                  f"ln({p.data.num_classes}) = {chance:.3f} ± {INITIAL_LOSS_TOLERANCE}",
                  f"The loss at initialisation is {loss:.3f}, {excess:+.3f} from ln C: "
                  + ("the untrained network is confidently wrong. The last layer's initial weights are too large "
                     "(model.head_scale, model.init): at initialisation the logits should be small, so the softmax "
                     "is nearly uniform and the loss is about ln C." if excess > 0 else
                     "lower than chance before any training: the labels may leak into the inputs, or the loss is "
                     "not the softmax cross-entropy over C classes."),
                  chance_loss=chance, excess=excess, samples=len(x))
    on = copy.deepcopy(off)
    if cfg["reg"]["penalty"] != "none" and cfg["reg"]["strength"] > 0:
        on["reg"] = copy.deepcopy(cfg["reg"])
    else:
        on["reg"].update(penalty="l2", strength=CHECK_REG_STRENGTH)
    with_reg = mean_loss(p.model, make_loss(off), make_penalty(on, p.model), x, y, batch)
    second = check("loss_rises_with_regularisation", with_reg > loss * (1 + 1e-6), with_reg,
                   f"> {loss:.4f} (the loss without regularisation)",
                   f"Switching on reg.penalty={on['reg']['penalty']} (strength {on['reg']['strength']:g}) did not raise "
                   "the loss: the penalty does not reach the loss (does the model have any ≥ 2-D trainable weights?).",
                   penalty=on["reg"]["penalty"], strength=on["reg"]["strength"], loss_without=loss)
    return [first, second]


class StopWhenFit(Callback):
    """Stops the overfitting run as soon as the sample is fitted."""

    name = "stop_when_fit"

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        if epoch.get("sample_acc", 0.0) >= OVERFIT_TARGET:
            trainer.request_stop("fitted")


def check_overfit_small_sample(cfg: dict, data, say) -> dict:
    """Train a fresh model, regularisation off and at a constant rate, on OVERFIT_BATCHES
    minibatches of OVERFIT_BATCH_SIZE training images: it must reach OVERFIT_TARGET accuracy on
    them within OVERFIT_STEPS updates."""
    off = sanity_config(cfg)
    p = prepare(off, say, data=data)
    gen = torch.Generator().manual_seed(cfg["seed"])
    pick = torch.randperm(len(p.data.train_y), generator=gen)[:OVERFIT_BATCHES * OVERFIT_BATCH_SIZE].to(p.data.train_y.device)
    xs, ys = p.data.train_x[pick], p.data.train_y[pick]
    full_batch = is_full_batch(off)
    loader = TensorLoader(xs, ys, len(xs) if full_batch else OVERFIT_BATCH_SIZE, seed=cfg["seed"])
    # A constant rate and no penalty (sanity_config turned it off): the lecture's plain fit.
    trainer = build_trainer(p, [DivergenceGuard(), StopWhenFit()], cfg=off, loader=loader, scheduler=lambda o: None,
                            evaluate=lambda m: {f"sample_{k}": v for k, v in evaluate(m, xs, ys, p.data.num_classes).items()
                                                if k in ("loss", "acc")},
                            epochs=math.ceil(OVERFIT_STEPS / len(loader)), max_steps=OVERFIT_STEPS, accelerated=False)
    state = trainer.fit()
    last = state.history[-1] if state.history else {"sample_acc": 0.0, "sample_loss": float("nan")}
    first_loss = state.history[0]["train_loss"] if state.history else float("nan")
    acc, loss = last["sample_acc"], last["sample_loss"]
    exploded = (state.stop_reason or "").startswith("diverged") or not math.isfinite(loss)
    if exploded:
        advice = (f"{state.stop_reason or 'the loss became NaN/inf'}. Loss explodes to Inf or NaN? LR too high, bad "
                  "initialization: lower optim.lr (try 10x smaller).")
    elif loss > 0.5 * first_loss:
        advice = (f"The loss went from {first_loss:.3g} to only {loss:.3g}. Loss not going down? LR too low, bad "
                  "initialization: raise optim.lr (try 10x larger) and check the initial-loss and monitor verdicts.")
    else:
        advice = (f"The loss fell ({first_loss:.3g} → {loss:.3g}) but {acc:.1%} of the sample is fitted after "
                  f"{state.step} updates: fiddle with architecture, learning rate, weight initialization — a bigger "
                  "model, a larger optim.lr, or a different optimiser.")
    return check("overfit_small_sample", acc >= OVERFIT_TARGET, acc,
                 f">= {OVERFIT_TARGET} train accuracy on {len(xs)} images within {OVERFIT_STEPS} updates", advice,
                 steps=state.step, sample_loss=loss, images=len(xs), optimizer=off["optim"]["name"], lr=off["optim"]["lr"])


def check_gradients(cfg: dict, data, say) -> dict:
    """Gradient check of the model and the loss (with the configured penalty) on a few images."""
    p = prepare(cfg, say, data=data)
    x, y = p.data.train_x[:GRADCHECK_SAMPLES], p.data.train_y[:GRADCHECK_SAMPLES]
    data_loss = make_loss(cfg)

    def loss_fn(out, module):
        penalty = make_penalty(cfg, module)
        return data_loss(out, y) + (penalty() if penalty is not None else 0.0)

    reports = gradcheck_module(p.model, (x,), loss_fn, seed=cfg["seed"], check_inputs=False)
    worst = max((r["max_relative_error"] for r in reports), default=0.0)
    failed = [r["name"] for r in reports if not r["passed"]]
    return check("gradient_check", not failed, worst, f"relative error < {GRADCHECK_TOLERANCE:g} on every tensor",
                 f"Backprop disagrees with the numerical gradient for {', '.join(failed[:5])}"
                 f"{' ...' if len(failed) > 5 else ''}: a custom layer's backward is wrong, or the forward uses an "
                 "operation autograd cannot differentiate. Check the layer alone with "
                 "trainlab.babysit.gradcheck.gradcheck_module.",
                 tensors=len(reports), coordinates=sum(r["checked"] for r in reports),
                 kinks=sum(r["kinks"] for r in reports), per_tensor=reports)


def format_table(results: list[dict]) -> str:
    rows = [("check", "result", "value", "expected")]
    for r in results:
        value = f"{r['value']:.4g}" if isinstance(r["value"], float) else str(r["value"])
        rows.append((r["name"], "pass" if r["passed"] else "FAIL", value, r["expected"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        if not r["passed"]:
            lines.append(f"\n{r['name']} FAILED: {r['advice']}")
    return "\n".join(lines)


def run_checks(cfg: dict, out: str | Path, say: Callable[[str], None] = say_info) -> list[dict]:
    """Every sanity check on the setup ``cfg`` describes; writes ``out/checks.json`` and prints a table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    data = load_data(cfg)
    quiet = lambda msg: None  # noqa: E731  (prepare's notes would repeat for every check)
    say(f"sanity checks: {cfg['model']['name']} on {cfg['data']['name']} ({data.num_classes} classes)")
    results = check_initial_loss(cfg, data, quiet)
    results.append(check_overfit_small_sample(cfg, data, quiet))
    results.append(check_gradients(cfg, data, quiet))
    write_json(out / "checks.json", results)
    say(format_table(results))
    say(f"wrote {out / 'checks.json'}")
    return results

"""Curve diagnosis: verdicts with their evidence and the lectures' advice (docs/design.md §4, codes in §8).

After every run :func:`diagnose` reads the run's own records — ``metrics.jsonl`` (logged steps,
epochs, monitor records) and the trainer's history and stop reason — and returns verdicts
``{code, message, evidence}``. Each rule is one small function below, with the rule in its
docstring; every threshold is a named constant with the reason for its value. ``healthy`` is
returned only when no rule fires. During training, :class:`trainlab.babysit.monitors.Monitors`
applies :func:`monitor_verdicts` to each monitor record and prints what it finds at once.

    for v in diagnose(run_dir, summary, trainer.state, cfg):
        print(v["code"], v["message"], v["evidence"])
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from trainlab.errors import ConfigError
from trainlab.io import read_jsonl
from trainlab.optim import base_lr

# --- thresholds -----------------------------------------------------------------------------------

# Update-to-weight ratio ‖ΔW‖/‖W‖ of one step: about 1e-3 is healthy. The rule of thumb is from
# the CS231n course notes (Neural Networks Part 3, section on the ratio of weights to updates), not from the
# lecture files in shared/reference. It is a rough rule — Adam's first steps on a freshly initialised MLP give ~1e-2 and
# train well — so only a ratio 100× away from it, i.e. outside [1e-5, 1e-1], is called a problem.
HEALTHY_UPDATE_RATIO = 1e-3
UPDATE_RATIO_LOW = HEALTHY_UPDATE_RATIO / 100
UPDATE_RATIO_HIGH = HEALTHY_UPDATE_RATIO * 100
# Update ratios are judged only at steps whose rate is at least half the configured base rate
# (warm-up and a decayed schedule make updates small on purpose), and never at step 1: Adam's
# first update is lr·sign(g) (bias-corrected moments of a single gradient), 10x its later size.
FULL_RATE = 0.5

# "Loss barely changing: learning rate is probably too low": the loss of the last epoch is less
# than 10% below where it started (see start_loss). Every working configuration we measured
# (digits, mlp/convnet, sgd/adam at sane rates) cuts the loss by more than half within a few epochs.
BARELY_CHANGED = 0.10
# ... and "the loss went up": the last epoch's loss is 25% above where it started, more than
# the ±10% by which one batch's loss differs from the mean.
GOT_WORSE = 0.25

# Train accuracy and loss here are ``train_acc``/``train_loss`` of the epoch records: the weights
# at the epoch's end in eval mode on a fixed training subset (trainlab.run.make_evaluator), so the
# gap compares the same model on both splits, as the lectures' curves do. (The running average
# over an epoch, ``train_acc_running``, lags far behind: 0.86 against 0.99 validation after one
# MNIST epoch.)
# "Huge train / val gap means overfitting": final train accuracy exceeds validation accuracy by
# more than 10 points. A well-regularised model usually stays within a few points (the default
# digits run: 2 points), so 10 is a gap no one would call noise on a validation split of ≥ 100.
OVERFIT_GAP = 0.10
# ... or more than 5 points once the training set is memorised (train accuracy ≥ 99%): all of
# the remaining validation error is then generalisation gap. (Digits: the full training set
# leaves 2 points; 200 training images, 7.)
MEMORISED_ACC, MEMORISED_GAP = 0.99, 0.05
# ... or validation loss has risen 25% above its best while the training loss kept falling: the
# curves have crossed over from learning to memorising.
OVERFIT_VAL_LOSS_RISE = 0.25

# "No gap between train / val means underfitting": training accuracy below 90% with validation
# within 5 points of it (or above it). A model with enough capacity fits its training set almost
# perfectly (the sanity check asks for 100% on a small sample).
UNDERFIT_TRAIN_ACC = 0.90
UNDERFIT_GAP = 0.05

# "Loss was still going down when learning rate dropped, you decayed too early": the rate has
# fallen to ≤ 30% of its peak (a step drop, or a cosine/linear schedule past two thirds), the
# loss was still falling there at ≥ 25% of its average pace since the start (the curve had not
# begun to flatten: a converging curve falls at a few % of its average pace by then), and after
# the drop it fell at most half as fast as just before (the drop, not convergence, flattened it).
DECAYED = 0.30
STILL_FALLING = 0.25
FLATTENED = 0.5
# ... and before the drop the loss had fallen by at least 1% of where it started: a loss flat at
# ln C (every unit dead, nothing learnt) drifting by 1e-6 per epoch was never "still falling".
LEARNT_SOMETHING = 0.01

# "Decay later or less", in the keys of the schedule the run used (a cosine run has no milestones).
DECAY_ADVICE = {
    "step": "decay later (schedule.milestones, or more train.epochs) or less (schedule.gamma closer to 1)",
    "exponential": "decay more slowly (a smaller schedule.decay) or train longer (train.epochs)",
    "inv_t": "decay more slowly (a smaller schedule.decay) or train longer (train.epochs)",
    "cosine": "train longer (more train.epochs: cosine spreads its decay over the whole run) or keep a higher "
              "floor (schedule.min_scale)",
    "linear": "train longer (more train.epochs: the decay is spread over the whole run) or keep a higher floor "
              "(schedule.min_scale)",
    "inv_sqrt": "train longer (train.epochs) or warm up longer (schedule.warmup_epochs)",
    "sgdr": "use longer cycles (schedule.cycle_epochs, schedule.cycle_mult) or a higher floor (schedule.min_scale)",
    "cyclic": "use longer cycles (schedule.cycle_epochs) or a higher floor (schedule.min_scale)",
    "onecycle": "train longer (more train.epochs) or peak later (a larger schedule.peak_fraction)",
}

# Plateau: at a rate that has not been decayed (≥ 50% of its peak), the training loss changed by
# less than 2% over the last third of training (at least 3 epochs), while the training accuracy
# is still below 99% (a fit that is finished is not stuck).
PLATEAU_CHANGE = 0.02
PLATEAU_MIN_EPOCHS = 3
CONVERGED_ACC = 0.99

# Dead ReLUs: more than half of a layer's units never fire on the whole probe batch (256 varied
# images by default): that layer has lost most of its capacity. A healthy kaiming-initialised
# 10-layer MLP has at most ~20% of a layer inactive on the probe at initialisation.
DEAD_UNITS_FRACTION = 0.5
# Saturation: ≥ 30% of a tanh/sigmoid layer's outputs in the flat tails, where they pass back ≤ 2%
# of the gradient. Xavier-initialised tanh/sigmoid stacks have ~1%; sigmoid with N(0, 1) weights 60%.
SATURATED_FRACTION = 0.30
# Vanishing activations: the deepest probed layer's activation std is < 1/10 of the first
# layer's. Xavier tanh (10 layers) keeps 1/3 of it and kaiming relu ~90%; the lecture's
# small-Gaussian tanh stack and xavier relu stack fall by 10^7 and 25× (measured on digits).
VANISHING_RATIO = 0.10


# --- verdicts --------------------------------------------------------------------------------------

def verdict(code: str, message: str, **evidence) -> dict:
    return {"code": code, "message": message, "evidence": evidence}


def _round(x, digits: int = 4):
    return None if x is None else float(f"{x:.{digits}g}")


def weight_update_ratios(record: dict) -> list[float]:
    """The update ratios of the weight tensors (≥ 2-D: not biases or norm parameters, whose
    norm can be ~0) in one monitor record."""
    return [p["update_ratio"] for p in record.get("params", []) if len(p["shape"]) >= 2 and p["update_ratio"]]


def judges_update_ratio(record: dict, base_lr: float) -> bool:
    """Whether a monitor record's update ratios say something about the base rate (see FULL_RATE)."""
    return record["step"] > 1 and record.get("lr") is not None and record["lr"] >= FULL_RATE * base_lr


def full_rate_ratio(records: list[dict], base_lr: float) -> float | None:
    """Median weight update ratio over monitor records taken at (nearly) the full base rate."""
    ratios = [x for r in records if judges_update_ratio(r, base_lr) for x in weight_update_ratios(r)]
    return statistics.median(ratios) if ratios else None


def dead_units(record: dict) -> dict | None:
    """ReLU layers where ≥ DEAD_UNITS_FRACTION of the units never fire on the probe batch."""
    bad = {layer["name"]: _round(layer["dead_fraction"], 3) for layer in record["layers"]
           if layer.get("dead_fraction") is not None and layer["dead_fraction"] >= DEAD_UNITS_FRACTION}
    if not bad:
        return None
    worst = max(bad, key=bad.get)
    return verdict("dead_units",
                   f"{len(bad)} ReLU layer(s) have ≥ {DEAD_UNITS_FRACTION:.0%} dead units, never active on the probe "
                   f"batch ({worst}: {bad[worst]:.0%}). A dead ReLU will never activate, so it never updates. Start the "
                   "biases at 0 or slightly positive (model.bias_init=0.01), use kaiming initialisation, lower the "
                   "learning rate (a too-large update can knock units dead), or use leaky_relu / prelu / elu, which "
                   "do not die.",
                   step=record["step"], dead_fraction=bad)


def saturated_units(record: dict) -> dict | None:
    """tanh/sigmoid layers with ≥ SATURATED_FRACTION of their outputs in the flat tails."""
    bad = {layer["name"]: _round(layer["saturated_fraction"], 3) for layer in record["layers"]
           if layer.get("saturated_fraction") is not None and layer["saturated_fraction"] >= SATURATED_FRACTION}
    if not bad:
        return None
    worst = max(bad, key=bad.get)
    return verdict("saturated_units",
                   f"{len(bad)} tanh/sigmoid layer(s) have ≥ {SATURATED_FRACTION:.0%} of their outputs saturated "
                   f"({worst}: {bad[worst]:.0%}). "
                   "Saturated neurons kill the gradients: local gradients are all zero, no learning. The initial "
                   "weights are too large: use xavier initialisation (std = 1/sqrt(Din)), add batch normalisation "
                   "(model.norm=batch), or use relu.",
                   step=record["step"], saturated_fraction=bad)


def vanishing_activations(record: dict) -> dict | None:
    """The activation std of the deepest probed layer is < VANISHING_RATIO × the first layer's."""
    stds = [layer["std"] for layer in record["layers"]]
    if len(stds) < 2 or not stds[0] or stds[0] <= 0 or stds[-1] is None:
        return None
    ratio = stds[-1] / stds[0]
    if ratio >= VANISHING_RATIO:
        return None
    return verdict("vanishing_activations",
                   f"Activation std falls from {stds[0]:.3g} in the first layer to {stds[-1]:.3g} in the last "
                   f"({ratio:.2g}x): all activations tend to zero for deeper layers, so the gradients dL/dW are all "
                   "near zero, no learning. Use xavier initialisation for tanh/sigmoid (std = 1/sqrt(Din)) and "
                   "kaiming for relu (std = sqrt(2/Din)), or add batch normalisation (model.norm=batch).",
                   step=record["step"], std_per_layer=[_round(s, 3) for s in stds], last_over_first=_round(ratio, 3))


def update_ratio_verdict(ratio: float | None, step: int | None = None) -> dict | None:
    """lr_too_high / lr_too_low when the median weight update ratio is ≥ 100× away from 1e-3."""
    if ratio is None:
        return None
    evidence = {"median_update_ratio": _round(ratio, 3), "healthy": HEALTHY_UPDATE_RATIO}
    if step is not None:
        evidence["step"] = step
    if ratio > UPDATE_RATIO_HIGH:
        return verdict("lr_too_high", f"Each update changes the weights by {ratio:.2g} of their size, "
                       f"{ratio / HEALTHY_UPDATE_RATIO:.0f}x the healthy ~1e-3: the learning rate is probably too "
                       "high. Lower optim.lr, or run `trainlab lr-find`.", **evidence)
    if ratio < UPDATE_RATIO_LOW:
        return verdict("lr_too_low", f"Each update changes the weights by only {ratio:.2g} of their size, "
                       f"{HEALTHY_UPDATE_RATIO / ratio:.0f}x below the healthy ~1e-3: the learning rate is probably "
                       "too low. Raise optim.lr, or run `trainlab lr-find`.", **evidence)
    return None


def monitor_verdicts(record: dict, base_lr: float) -> list[dict]:
    """What one monitor record shows on its own (used live, during training). Tiny updates
    next to dead, saturated or vanishing units are explained by them (no gradient flows back
    through such units), not by the rate: then no lr_too_low."""
    found = [v for v in (dead_units(record), saturated_units(record), vanishing_activations(record)) if v]
    if judges_update_ratio(record, base_lr):
        ratios = weight_update_ratios(record)
        v = update_ratio_verdict(statistics.median(ratios) if ratios else None, record["step"])
        if v is not None and not (found and v["code"] == "lr_too_low"):
            found.append(v)
    return found


def diverged(stop_reason: str | None, history: list[dict], lr: float | None = None,
             optimizer: str | None = None) -> dict | None:
    """The divergence guard stopped the run (NaN/inf loss, or one that exploded)."""
    if not (stop_reason or "").startswith("diverged"):
        return None
    kept = f"the end of epoch {len(history)}" if history else "initialisation (no epoch finished)"
    return verdict("diverged",
                   f"{stop_reason}. Loss explodes to Inf or NaN? LR too high, bad initialization: lower optim.lr "
                   "(try 10x smaller) or run `trainlab lr-find`; linear warm-up (schedule.warmup_epochs) or gradient "
                   f"clipping (train.clip_grad) help when it blows up early. checkpoints/last.pt holds the state at "
                   f"{kept}; `trainlab train` exits with status 1.",
                   stop_reason=stop_reason, lr=lr, optimizer=optimizer,
                   epochs_completed=len(history))


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def lr_too_high(first_loss: float, steps: list[dict], history: list[dict], ratio: float | None) -> dict | None:
    """The loss became NaN/inf or ended more than GOT_WORSE above where it started (runs that
    were not stopped: train.nan_policy=continue), or the update ratio is ≥ 100x the healthy 1e-3."""
    bad_steps = [r["step"] for r in steps if not _finite(r.get("loss"))]
    last = history[-1]["train_loss"] if history else None
    if bad_steps or (history and not _finite(last)):
        return verdict("lr_too_high", "The loss became NaN or inf. Loss explodes to Inf or NaN? LR too high, bad "
                       "initialization: lower optim.lr (try 10x smaller) or run `trainlab lr-find`.",
                       first_nonfinite_step=bad_steps[0] if bad_steps else None, first_loss=_round(first_loss))
    if _finite(last) and last >= (1 + GOT_WORSE) * first_loss:
        return verdict("lr_too_high", f"The training loss ended at {last:.3g}, higher than it started ({first_loss:.3g}): "
                       "the updates overshoot. The learning rate is probably too high: lower optim.lr (try 10x "
                       "smaller) or run `trainlab lr-find`.", first_loss=_round(first_loss), last_epoch_loss=_round(last),
                       median_update_ratio=_round(ratio, 3))
    v = update_ratio_verdict(ratio)
    return v if v is not None and v["code"] == "lr_too_high" else None


def lr_too_low(first_loss: float, history: list[dict], ratio: float | None, explained: bool,
               step_limited: bool = False) -> dict | None:
    """The last epoch's training loss is less than BARELY_CHANGED below where it started, or the
    update ratio is ≥ 100x below the healthy 1e-3 — unless ``explained`` by the monitors: dead,
    saturated or vanishing units stall the loss and the updates whatever the rate ("bad
    initialization"). A run cut short by ``train.max_steps`` (``step_limited``) had too few
    updates for its loss to say anything: only the update ratio is read then."""
    if not history or not _finite(history[-1]["train_loss"]) or first_loss <= 0:
        return None
    last = history[-1]["train_loss"]
    fall = (first_loss - last) / first_loss
    if explained:
        return None
    if fall >= BARELY_CHANGED or step_limited:
        v = update_ratio_verdict(ratio)
        return v if v is not None and v["code"] == "lr_too_low" else None
    return verdict("lr_too_low", f"Loss barely changing ({first_loss:.3g} → {last:.3g}, {fall:.1%} lower): the learning "
                   "rate is probably too low. Loss not going down? LR too low, bad initialization: raise optim.lr "
                   "(try 10x larger) or run `trainlab lr-find`; if the update ratios are near 1e-3, check the "
                   "initialisation (`trainlab check`).",
                   first_loss=_round(first_loss), last_epoch_loss=_round(last), relative_fall=_round(fall, 3),
                   epochs=len(history), median_update_ratio=_round(ratio, 3))


def _gap(epoch: dict) -> float | None:
    return epoch["train_acc"] - epoch["val_acc"] if epoch.get("val_acc") is not None else None


def overfitting(history: list[dict]) -> dict | None:
    """Final train accuracy − validation accuracy > OVERFIT_GAP (> MEMORISED_GAP once train
    accuracy ≥ MEMORISED_ACC), or validation loss risen OVERFIT_VAL_LOSS_RISE above its best
    while the training loss fell after that best."""
    if not history or _gap(history[-1]) is None:
        return None
    last, gap = history[-1], _gap(history[-1])
    val_losses = [h["val_loss"] if _finite(h.get("val_loss")) else math.inf for h in history]
    best = min(range(len(history)), key=val_losses.__getitem__)
    measured = math.isfinite(val_losses[best]) and _finite(last.get("val_loss"))
    rise = last["val_loss"] / val_losses[best] - 1 if measured else 0.0
    train_fell = last["train_loss"] < history[best]["train_loss"]
    memorised = last["train_acc"] >= MEMORISED_ACC and gap > MEMORISED_GAP
    if gap <= OVERFIT_GAP and not memorised and not (rise > OVERFIT_VAL_LOSS_RISE and train_fell):
        return None
    rose = f"; validation loss {rise:.0%} above its best (epoch {history[best]['epoch']})" if rise > 0 else ""
    return verdict("overfitting", f"Train accuracy {last['train_acc']:.3f} vs validation {last['val_acc']:.3f} "
                   f"(gap {gap:.3f}){rose}. Huge train/val gap means overfitting! Increase regularization "
                   "(reg.penalty / optim.weight_decay, model.dropout, augment.names), get more data, or keep the "
                   "best-on-validation weights (best.pt, train.early_stopping).",
                   train_acc=_round(last["train_acc"]), val_acc=_round(last["val_acc"]), gap=_round(gap, 3),
                   val_loss_rise=_round(rise, 3), best_val_loss_epoch=history[best]["epoch"])


def underfitting(history: list[dict]) -> dict | None:
    """Train accuracy < UNDERFIT_TRAIN_ACC and validation within UNDERFIT_GAP of it (or above)."""
    if not history or _gap(history[-1]) is None:
        return None
    last, gap = history[-1], _gap(history[-1])
    if last["train_acc"] >= UNDERFIT_TRAIN_ACC or gap > UNDERFIT_GAP:
        return None
    return verdict("underfitting", f"Train accuracy {last['train_acc']:.3f}, validation {last['val_acc']:.3f}: no gap "
                   "between train/val means underfitting: train longer (train.epochs), use a bigger model "
                   "(model.width, model.depth), or regularise less.",
                   train_acc=_round(last["train_acc"]), val_acc=_round(last["val_acc"]), gap=_round(gap, 3),
                   epochs=len(history))


def _fall_per_epoch(losses: list[float], a: int, b: int) -> float:
    return (losses[a] - losses[b]) / (b - a)


def decayed_too_early(first_loss: float, history: list[dict], schedule: str = "step",
                      explained: bool = False) -> dict | None:
    """At the first epoch d whose rate is ≤ DECAYED × the peak so far, the loss was still
    falling at ≥ STILL_FALLING × its average pace since the start (having fallen by at least
    LEARNT_SOMETHING of its start), and over the epochs after d it fell at most FLATTENED × as
    fast as just before. Not when ``explained`` by dead, saturated or vanishing units: their
    flat loss is not the schedule's doing. The advice names the keys of ``schedule``."""
    lrs = [h["lr"] for h in history]
    losses = [first_loss] + [h["train_loss"] for h in history]  # losses[e]: after e epochs
    if explained or len(history) < 3 or not all(_finite(x) for x in losses):
        return None
    d = next((e for e in range(1, len(lrs)) if lrs[e - 1] <= DECAYED * max(lrs[:e])), None)
    # lrs[e - 1] is the rate at the end of epoch e, so epochs 1..e ran (mostly) before the drop
    if d is None or d < 2 or d >= len(history):
        return None
    window = max(1, min(d - 1, len(history) - d, 2))
    before = _fall_per_epoch(losses, d - window, d)
    after = _fall_per_epoch(losses, d, d + window)
    average = _fall_per_epoch(losses, 0, d)
    if (average <= 0 or losses[0] - losses[d] < LEARNT_SOMETHING * losses[0] or before < STILL_FALLING * average
            or after > FLATTENED * before):
        return None
    pace = "faster than" if before > 1.1 * average else "about as fast as" if before > 0.9 * average else "slower than, but not far from,"
    advice = DECAY_ADVICE.get(schedule, "decay later or less (the schedule.* keys of your schedule, or more train.epochs)")
    return verdict("decayed_too_early", f"The loss was still falling by {before:.3g} per epoch ({pace} its average "
                   f"{average:.3g} per epoch since the start) when the learning rate dropped to {lrs[d - 1]:.2g} at "
                   f"epoch {d}; afterwards it fell by only {after:.3g} per epoch. Loss was still going down when "
                   f"learning rate dropped, you decayed too early! With schedule.name={schedule}: {advice}.",
                   decay_epoch=d, lr_at_decay=_round(lrs[d - 1]), peak_lr=_round(max(lrs[:d])), schedule=schedule,
                   fall_per_epoch_before=_round(before), fall_per_epoch_after=_round(after),
                   average_fall_per_epoch=_round(average))


def plateau(history: list[dict]) -> dict | None:
    """Over the last third of training (≥ PLATEAU_MIN_EPOCHS epochs) at an undecayed rate, the
    training loss changed by < PLATEAU_CHANGE while train accuracy stayed below CONVERGED_ACC."""
    span = max(PLATEAU_MIN_EPOCHS, len(history) // 3)
    if len(history) <= span:
        return None
    tail, peak = history[-span - 1:], max(h["lr"] for h in history)
    start, end = tail[0]["train_loss"], tail[-1]["train_loss"]
    if not (_finite(start) and _finite(end)) or start <= 0:
        return None
    change = abs(start - end) / start
    if (change >= PLATEAU_CHANGE or tail[-1]["train_acc"] >= CONVERGED_ACC
            or min(h["lr"] for h in tail) < FULL_RATE * peak):
        return None
    return verdict("plateau", f"The training loss has stayed at {end:.3g} (changed {change:.1%}) for the last {span} "
                   f"epochs at an undecayed learning rate, with train accuracy {tail[-1]['train_acc']:.3f}. The loss "
                   "plateaus: decay the learning rate here (schedule.name=step or cosine) — the loss typically drops "
                   "again when it is decayed — or try a different update rule (momentum, adam).",
                   epochs=span, loss_change=_round(change, 3), train_loss=_round(end),
                   train_acc=_round(tail[-1]["train_acc"]))


def unit_verdicts(records: list[dict]) -> list[dict]:
    """Dead units, saturation and vanishing activations at the end of training (the last monitor
    record) or, failing that, at the start (the first, step 0: the initialisation). A problem of
    the initialisation is reported even when training later works around it."""
    found = []
    for rule in (dead_units, saturated_units, vanishing_activations):
        v = next((v for r in (records[-1:] + records[:1]) if r["layers"] and (v := rule(r))), None)
        if v is not None:
            found.append(v)
    return found


def start_loss(steps: list[dict], history: list[dict], summary: dict) -> float:
    """Where the loss started: the larger of the step-1 loss (one batch, before any update) and
    the first epoch's mean training loss. One batch can sit ±10% off the mean, and the first
    epoch's mean already includes that epoch's progress; the larger of the two errs towards
    "the loss fell", so no verdict fires on that noise. Without either, ln C."""
    candidates = [r["loss"] for r in steps if r["step"] == 1 and _finite(r.get("loss"))]
    if history and _finite(history[0]["train_loss"]):
        candidates.append(history[0]["train_loss"])
    return max(candidates) if candidates else math.log(max(summary.get("num_classes") or 2, 2))


# Keys every epoch record must have for diagnose_history; val_loss, val_acc and lr are optional.
EPOCH_KEYS = ("train_loss", "train_acc")


def diagnose_history(history: list[dict], steps: list[dict] = (), monitors: list[dict] = (),
                     stop_reason: str | None = None, base_lr: float | None = None, num_classes: int | None = None,
                     best_val_acc: float | None = None, optimizer: str | None = None,
                     lr: float | None = None, max_steps: int | None = None, schedule: str = "step") -> list[dict]:
    """Verdicts ``{code, message, evidence}`` for the curves of any training loop, healthy only
    when nothing else fires.

    history: one dict per epoch with ``train_loss`` and ``train_acc`` (fractions), and when
    measured ``val_loss``, ``val_acc`` and ``lr`` (the rate at the epoch's end; the decay and
    plateau rules need it). steps: ``{step, loss}`` records (the step-1 loss is where the loss
    started; a NaN there is "rate too high"). monitors: probe records (see
    :func:`trainlab.babysit.monitors.attach_monitors`). base_lr: the undecayed rate, by default
    the highest one the monitors saw. optimizer, lr: named in a divergence verdict (lr: the
    configured rate, by default base_lr). max_steps: the run's step limit, if any (a run cut short
    by it has not shown that its rate is too low). schedule: the schedule's name, for the keys the
    decay advice names.
    """
    history = [dict(h) for h in history]
    for i, h in enumerate(history):
        missing = [k for k in EPOCH_KEYS if k not in h]
        if missing:
            raise ConfigError(f"epoch record {i} has no {', '.join(missing)}: each epoch needs "
                              f"{', '.join(EPOCH_KEYS)} (and, when measured, val_loss, val_acc, lr)")
        h.setdefault("epoch", i + 1)
    steps, monitors = list(steps), list(monitors)
    if base_lr is None:
        base_lr = max((r["lr"] for r in monitors if r.get("lr") is not None), default=None)
    first = start_loss(steps, history, {"num_classes": num_classes})
    ratio = full_rate_ratio(monitors, base_lr) if base_lr is not None else None
    units = unit_verdicts(monitors)
    lr = lr if lr is not None else base_lr
    found = [diverged(stop_reason, history, lr, optimizer)]
    found.append(lr_too_high(first, steps, history, ratio))
    if found[-1] is None and found[0] is None:
        step_limited = bool(max_steps) and bool(history) and history[-1].get("step", 0) >= max_steps
        found.append(lr_too_low(first, history, ratio, explained=bool(units), step_limited=step_limited))
    has_lr = all("lr" in h for h in history)
    found.append(decayed_too_early(first, history, schedule, explained=bool(units)) if has_lr else None)
    # Underfitting and plateau are symptoms: when a cause is already named, their advice
    # ("train longer, bigger model", "decay the rate") would point the wrong way.
    caused = units or any(v is not None for v in found)
    # The curves of an unstable run (diverged, rate too high) say nothing about capacity either.
    unstable = any(v is not None and v["code"] in ("diverged", "lr_too_high") for v in found)
    found += [None if unstable else overfitting(history), None if caused else underfitting(history),
              None if caused or not has_lr else plateau(history)]
    found = [v for v in found if v is not None] + units
    if best_val_acc is None:
        best_val_acc = max((h["val_acc"] for h in history if h.get("val_acc") is not None), default=None)
    return found or [verdict("healthy", "No problem found: the loss fell, training and validation accuracy stay close, "
                             "and the monitors saw no dead, saturated or vanishing units.",
                             epochs=len(history), train_acc=_round(history[-1]["train_acc"]) if history else None,
                             best_val_acc=_round(best_val_acc))]


def diagnose(run_dir: Path, summary: dict, state, cfg: dict, base_rate: float | None = None) -> list[dict]:
    """Verdicts for a finished run (docs/design.md §8 codes), from its metrics.jsonl and trainer state.
    ``base_rate``: the undecayed rate, read from the optimiser when there is one
    (:func:`trainlab.optim.optimizer_base_lr`); without one it follows from the config."""
    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    return diagnose_history(state.history, steps=[r for r in records if r.get("kind") == "step"],
                            monitors=[r for r in records if r.get("kind") == "monitor"],
                            stop_reason=state.stop_reason, base_lr=base_lr(cfg) if base_rate is None else base_rate,
                            num_classes=summary.get("num_classes"),
                            best_val_acc=summary.get("best_val_acc"), optimizer=cfg["optim"]["name"],
                            lr=cfg["optim"]["lr"], max_steps=cfg["train"]["max_steps"],
                            schedule=cfg["schedule"]["name"])

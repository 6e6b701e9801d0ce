"""The extensions that hook into :class:`trainlab.train.Trainer`: each one technique, one class.

Order matters: each class's ``order`` (see :class:`trainlab.train.Callback`) puts callbacks that add
to an epoch's record (EMA) before the ones that write it out (logger, checkpointer), and the
checkpointer last so the state it saves includes every other callback's update for that epoch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from trainlab.checkpoint import model_state, save_checkpoint, unwrap_model
from trainlab.errors import UserError
from trainlab.io import append_jsonl
from trainlab.log import say as say_info
from trainlab.schedules import annealed_momentum, momentum_anneal_steps
from trainlab.train import Callback, StepInfo, Trainer


def ema_warmup_decay(decay: float, t: int) -> float:
    """The EMA decay at the t-th average (t ≥ 1): d_t = min(decay, (1 + t) / (10 + t)).

    A fixed decay of 0.999 keeps 0.999^t of the random initial weights after t updates (37%
    after 1,000 steps): a short run's average is mostly initialisation. The warm-up (timm's,
    TensorFlow's ``num_updates``) averages over roughly the last t/10 … t updates until the
    fixed decay takes over at t = (10·decay − 1)/(1 − decay) (8,999 for 0.999).
    """
    return min(decay, (1.0 + t) / (10.0 + t))


def ema_warmup_multi_avg_fn(decay: float):
    """``AveragedModel``'s averaging function for θ̄ ← d_t·θ̄ + (1 − d_t)·θ with
    d_t = :func:`ema_warmup_decay` (t = the number of models averaged so far)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        d = ema_warmup_decay(decay, int(num_averaged))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (batch norm's num_batches_tracked): lerp needs floats
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


class EMA(Callback):
    """Polyak/exponential moving average of the weights: θ̄ ← d_t·θ̄ + (1−d_t)·θ after every
    update, with the warm-up d_t = min(decay, (1 + t)/(10 + t)) (:func:`ema_warmup_decay`).

    Uses ``torch.optim.swa_utils.AveragedModel``; batch-norm buffers are averaged too. Each
    epoch the averaged weights are evaluated beside the raw ones (``val_acc_ema``).
    """

    name = "ema"
    order = 20

    def __init__(self, decay: float):
        self.decay, self.model, self._resumed = decay, None, None

    def on_train_start(self, trainer: Trainer) -> None:
        if self.model is None:
            self.model = AveragedModel(unwrap_model(trainer.model), multi_avg_fn=ema_warmup_multi_avg_fn(self.decay), use_buffers=True)
        if self._resumed is not None:  # resume: the average continues where it stopped
            self.model.load_state_dict(self._resumed)
            self._resumed = None

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        self.model.update_parameters(trainer.model)

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        for key, value in trainer.evaluate(self.model.module).items():
            epoch[f"{key}_ema"] = value

    def state_dict(self) -> dict:
        return self.model.state_dict() if self.model is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._resumed = state or None


# The update rules with a momentum (ρ) or a first-moment decay (β1) to anneal.
ANNEALABLE = ("momentum", "nesterov", "adam", "adamw", "adam_uncorrected")


class MomentumAnnealing(Callback):
    """Sets every parameter group's momentum ρ (SGD momentum/nesterov) or β1 (Adam family) before
    each update to :func:`trainlab.schedules.annealed_momentum`: ``start`` → ``end`` over
    ``steps`` updates. Stateless: on resume the value follows from the trainer's step count.
    """

    name = "momentum_annealing"
    order = 15

    def __init__(self, start: float, end: float, steps: int):
        self.start, self.end, self.steps = start, end, steps

    def set(self, trainer: Trainer, step: int) -> None:
        rho = annealed_momentum(step, self.steps, self.start, self.end)
        for group in trainer.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (rho, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = rho

    def on_train_start(self, trainer: Trainer) -> None:
        self.set(trainer, trainer.state.step)

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        self.set(trainer, step.step)  # step.step updates are done: this is the next one's value


def momentum_annealing(cfg: dict, steps_per_epoch: int) -> MomentumAnnealing | None:
    """The annealing callback for ``optim.momentum_anneal_epochs`` > 0, ending at the configured
    ρ (``optim.momentum``) or β1 (``optim.betas[0]``); None when it is off."""
    o = cfg["optim"]
    if o.get("momentum_anneal_epochs", 0.0) <= 0:
        return None
    if o["name"] not in ANNEALABLE:
        raise UserError(f"optim.momentum_anneal_epochs={o['momentum_anneal_epochs']} anneals a momentum, but "
                        f"optim.name={o['name']} has none; use one of {', '.join(ANNEALABLE)} or set it to 0")
    end = o["betas"][0] if "betas" in o and o["name"].startswith("adam") else o["momentum"]
    return MomentumAnnealing(o["momentum_start"], end, momentum_anneal_steps(cfg, steps_per_epoch))


MODES = ("max", "min")


def check_mode(monitor: str, mode: str) -> float:
    """+1 for mode "max", −1 for "min": scores are multiplied by it so that higher is always better."""
    if mode not in MODES:
        raise UserError(f"monitor {monitor!r} has mode={mode!r}; use 'max' (higher is better, e.g. val_acc) "
                        "or 'min' (lower is better, e.g. val_loss)")
    return 1.0 if mode == "max" else -1.0


class EarlyStopping(Callback):
    """Stop when the epoch metric ``monitor`` (validation accuracy by default) has not improved
    for ``patience`` epochs; ``mode`` "max" when higher is better, "min" when lower is."""

    name = "early_stopping"
    order = 20

    def __init__(self, patience: int, monitor: str = "val_acc", mode: str = "max"):
        self.sign = check_mode(monitor, mode)
        self.patience, self.monitor, self.mode = patience, monitor, mode
        self.best, self.bad_epochs = -math.inf, 0  # best is sign × the metric: higher is better

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        if self.monitor not in epoch:
            return
        score = self.sign * epoch[self.monitor]
        if score > self.best:
            self.best, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                what = "validation accuracy" if self.monitor == "val_acc" else self.monitor
                trainer.request_stop(f"early stopping: {what} has not improved for {self.patience} epochs "
                                     f"(best {self.sign * self.best:.4f})")

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


class DivergenceGuard(Callback):
    """Stop on a NaN/inf loss or one that explodes past ``factor`` × the first loss.

    The weights after such a step are garbage, so the half-finished epoch is never
    checkpointed: ``last.pt`` stays the last good state (the slides: "Loss explodes to Inf or NaN?
    LR too high, bad initialization"). The ``factor`` (4× the first loss) is trainlab's own
    threshold, not the lectures'.
    """

    name = "divergence_guard"
    order = 10  # first: later callbacks see a diverged step's stop reason

    def __init__(self, factor: float = 4.0, every: int = 1):
        self.factor, self.every, self.first = factor, every, None

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if step.step % self.every:
            return
        loss = float(step.loss)
        if self.first is None:
            self.first = loss
        if not math.isfinite(loss):
            trainer.request_stop(f"diverged: the loss became {loss} at step {step.step}")
        elif step.step > 10 and loss > self.factor * max(self.first, 1e-3):
            trainer.request_stop(f"diverged: the loss exploded to {loss:.3g} at step {step.step} "
                                 f"(more than {self.factor:g}x the first loss {self.first:.3g})")

    def state_dict(self) -> dict:
        return {"first": self.first}

    def load_state_dict(self, state: dict) -> None:
        self.first = state["first"]


class MetricsLogger(Callback):
    """Appends one JSON object per logged step and per epoch to ``metrics.jsonl``; mirrors them to TensorBoard."""

    name = "metrics_logger"
    order = 70  # after everything that adds to an epoch's record

    def __init__(self, run_dir: Path, every: int, tensorboard: bool = True):
        self.path, self.every = Path(run_dir) / "metrics.jsonl", every
        self.tb_dir = Path(run_dir) / "tensorboard" if tensorboard else None
        self.writer = None

    def on_train_start(self, trainer: Trainer) -> None:
        if self.tb_dir is not None and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.tb_dir))

    def log(self, record: dict) -> None:
        """Append ``record`` (a dict with ``kind`` and ``step``) to metrics.jsonl: the one writer of
        that file during training, for other callbacks' records too (the monitors')."""
        append_jsonl(self.path, record)

    def write(self, record: dict) -> None:
        """:meth:`log` a step or epoch record and mirror its numbers to TensorBoard."""
        self.log(record)
        if self.writer is not None:
            kind, step = record["kind"], record["step"]
            for key, value in record.items():
                if key not in ("kind", "step", "epoch") and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if step.step % self.every == 0 or step.step == 1:
            self.write({"kind": "step", "step": step.step, "epoch": step.epoch, "loss": float(step.loss),
                        "acc": float(step.correct) / step.batch_size, "lr": step.lr})

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        self.write({"kind": "epoch", **epoch})

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ProgressBar(Callback):
    """One line per epoch (loss, accuracy, rate, images/s) through ``say`` (default: the
    ``trainlab`` logger), and, when ``bar`` is on, a tqdm bar during the epoch (loss, accuracy,
    images/s, ETA). The bar is for terminals: written into a file it would leave a fragment per
    epoch, so the run turns it off when stdout is not one (and when train.progress=false or under
    ``trainlab -q``); the epoch lines stay."""

    name = "progress"
    order = 75

    def __init__(self, every: int = 10, bar: bool = True, say=say_info):
        self.every, self.bar_on, self.say = every, bar, say
        self.bar, self.seen = None, 0

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if not self.bar_on:
            return
        if self.bar is None:
            self.bar = tqdm(total=len(trainer.loader), desc=f"epoch {step.epoch + 1}/{trainer.epochs}",
                            unit="batch", leave=False, dynamic_ncols=True)
            self.seen = 0
        self.bar.update(1)
        self.seen += step.batch_size
        if step.step % self.every == 0:
            rate = self.seen / max(self.bar.format_dict["elapsed"], 1e-9)
            memory = {"mem": f"{torch.cuda.max_memory_allocated(trainer.device) / 2**20:.0f}MB"} if trainer.device.type == "cuda" else {}
            self.bar.set_postfix(loss=f"{float(step.loss):.4f}", acc=f"{float(step.correct) / step.batch_size:.3f}",
                                 img_s=f"{rate:.0f}", **memory, refresh=False)

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        self.close()
        val = f"  val_loss {epoch['val_loss']:.4f}  val_acc {epoch['val_acc']:.4f}" if "val_acc" in epoch else ""
        self.say(f"epoch {epoch['epoch']:>3}/{trainer.epochs}  train_loss {epoch['train_loss']:.4f}  "
                 f"train_acc {epoch['train_acc']:.4f}{val}  lr {epoch['lr']:.3g}  "
                 f"{epoch['images_per_second']:.0f} img/s")

    def on_train_end(self, trainer: Trainer) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Checkpointer(Callback):
    """Writes ``last.pt`` (everything needed to resume) every epoch and ``best.pt`` (weights with
    the best ``monitor`` so far: validation accuracy by default, ties broken by the lower
    validation loss; ``mode`` "max" when higher is better, "min" when lower is; without a
    validation split the ``train_`` metric stands in). Both atomically: a crash mid-write never
    leaves a broken file where a good one was.

    Mid-epoch, ``last.pt`` is also written every ``every`` steps, or, when ``every`` is None,
    whenever ``every_seconds`` of training have passed since the last write (so only long epochs
    pay for it); ``every=0`` writes at epoch ends only. Such a checkpoint holds the loader's
    position and the epoch's running sums, and ``--resume`` continues from that very step.

    ``meta`` (config, class names, input shape) goes in both, so either loads on its own.
    """

    name = "checkpointer"
    order = 100  # last: it saves every other callback's state
    AUTO_SECONDS = 600.0  # "about 10 minutes": an interruption loses at most that much work

    def __init__(self, run_dir: Path, meta: dict, every: int | None = 0, every_seconds: float | None = None,
                 monitor: str = "val_acc", mode: str = "max"):
        self.sign, self.monitor = check_mode(monitor, mode), monitor
        self.dir = Path(run_dir) / "checkpoints"
        self.meta, self.best = meta, (-math.inf, -math.inf)
        self.every, self.last_write = every, time.monotonic()
        self.every_seconds = self.AUTO_SECONDS if every_seconds is None else every_seconds
        self.saved = {"epoch": 0, "step": 0}  # where the last.pt on disk stands (for the interrupt message)

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if trainer.state.stop_reason is not None:
            return  # a step that diverged (or asked to stop) is not worth resuming from
        due = (step.step % self.every == 0) if self.every else (
            self.every is None and time.monotonic() - self.last_write >= self.every_seconds)
        if due:
            self.save_last(trainer)

    def save_last(self, trainer: Trainer) -> None:
        state = trainer.state_dict()
        save_checkpoint({**self.meta, **state}, self.dir / "last.pt")
        self.saved = {"epoch": state.get("epoch"), "step": state.get("step"), "mid_epoch": state.get("running") is not None}
        self.last_write = time.monotonic()

    def on_train_start(self, trainer: Trainer) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "last.pt").exists():  # a good state to fall back on if epoch 1 diverges
            self.save_last(trainer)
        else:  # resumed from it
            self.saved = {"epoch": trainer.state.epoch, "step": trainer.state.step}

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        score = self.score(epoch)
        if score is not None and score > self.best:
            self.best = score
            save_checkpoint({**self.meta, "model": model_state(trainer.model), "epoch": epoch["epoch"],
                             "step": epoch["step"], "metrics": epoch}, self.dir / "best.pt")
        self.save_last(trainer)

    def score(self, epoch: dict) -> tuple[float, float] | None:
        """(sign × the monitored metric, tie-break), higher is better; None when the epoch lacks it."""
        fallback = "train_" + self.monitor.removeprefix("val_")
        value = epoch.get(self.monitor, epoch.get(fallback))
        if value is None:
            return None
        # Accuracy first; on a small validation set many epochs tie, and the lower loss breaks the tie.
        tie = -epoch.get("val_loss", epoch["train_loss"]) if self.monitor == "val_acc" else 0.0
        return self.sign * value, tie

    def state_dict(self) -> dict:
        return {"best": list(self.best)}

    def load_state_dict(self, state: dict) -> None:
        self.best = tuple(state["best"])

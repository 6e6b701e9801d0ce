"""The extensions that hook into :class:`trainlab.train.Trainer`: each one technique, one class.

Order matters only in one way: callbacks that add to an epoch's record (EMA) come before the
ones that write it out (logger, checkpointer), and the checkpointer comes last so the state it
saves includes every other callback's update for that epoch.
"""
from __future__ import annotations

import math
from pathlib import Path

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from trainlab.checkpoint import save_checkpoint
from trainlab.io import append_jsonl
from trainlab.train import Callback, StepInfo, Trainer


class EMA(Callback):
    """Polyak/exponential moving average of the weights: θ̄ ← d·θ̄ + (1−d)·θ after every update.

    Uses ``torch.optim.swa_utils.AveragedModel``; batch-norm buffers are averaged too. Each
    epoch the averaged weights are evaluated beside the raw ones (``val_acc_ema``).
    """

    name = "ema"

    def __init__(self, decay: float):
        self.decay, self.model, self._resumed = decay, None, None

    def on_train_start(self, trainer: Trainer) -> None:
        if self.model is None:
            self.model = AveragedModel(trainer.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
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


class EarlyStopping(Callback):
    """Stop when validation accuracy has not improved for ``patience`` epochs."""

    name = "early_stopping"

    def __init__(self, patience: int):
        self.patience, self.best, self.bad_epochs = patience, -math.inf, 0

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        if "val_acc" not in epoch:
            return
        if epoch["val_acc"] > self.best:
            self.best, self.bad_epochs = epoch["val_acc"], 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                trainer.request_stop(f"early stopping: validation accuracy has not improved for {self.patience} epochs "
                                     f"(best {self.best:.4f})")

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


class DivergenceGuard(Callback):
    """Stop on a NaN/inf loss or one that explodes past ``factor`` × the first loss.

    The weights after such a step are garbage, so the half-finished epoch is never
    checkpointed: ``last.pt`` stays the last good state (the lectures' "cost: NaN almost always
    means high learning rate").
    """

    name = "divergence_guard"

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

    def __init__(self, run_dir: Path, every: int, tensorboard: bool = True):
        self.path, self.every = Path(run_dir) / "metrics.jsonl", every
        self.tb_dir = Path(run_dir) / "tensorboard" if tensorboard else None
        self.writer = None

    def on_train_start(self, trainer: Trainer) -> None:
        if self.tb_dir is not None and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.tb_dir))

    def write(self, record: dict) -> None:
        append_jsonl(self.path, record)
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
    """One line per epoch (loss, accuracy, rate, images/s) through ``say``, and, when ``bar`` is
    on, a tqdm bar during the epoch (loss, accuracy, images/s, ETA). The bar is for terminals:
    written into a file it would leave a fragment per epoch, so the run turns it off when stdout
    is not one (and when train.progress=false); the epoch lines stay."""

    name = "progress"

    def __init__(self, every: int = 10, bar: bool = True, say=print):
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
            self.bar.set_postfix(loss=f"{float(step.loss):.4f}", acc=f"{float(step.correct) / step.batch_size:.3f}",
                                 img_s=f"{rate:.0f}", refresh=False)

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
    the best validation accuracy so far, ties broken by the lower validation loss). Both atomically: a crash mid-write never leaves a
    broken file where a good one was.

    ``meta`` (config, class names, input shape) goes in both, so either loads on its own.
    """

    name = "checkpointer"

    def __init__(self, run_dir: Path, meta: dict):
        self.dir = Path(run_dir) / "checkpoints"
        self.meta, self.best = meta, (-math.inf, -math.inf)

    def on_train_start(self, trainer: Trainer) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "last.pt").exists():  # a good state to fall back on if epoch 1 diverges
            save_checkpoint({**self.meta, **trainer.state_dict()}, self.dir / "last.pt")

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        # Accuracy first; on a small validation set many epochs tie, and the lower loss breaks the tie.
        score = (epoch.get("val_acc", epoch["train_acc"]), -epoch.get("val_loss", epoch["train_loss"]))
        if score > self.best:
            self.best = score
            save_checkpoint({**self.meta, "model": trainer.model.state_dict(), "epoch": epoch["epoch"],
                             "step": epoch["step"], "metrics": epoch}, self.dir / "best.pt")
        save_checkpoint({**self.meta, **trainer.state_dict()}, self.dir / "last.pt")

    def state_dict(self) -> dict:
        return {"best": list(self.best)}

    def load_state_dict(self, state: dict) -> None:
        self.best = tuple(state["best"])

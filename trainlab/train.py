"""The training loop: sample a batch, forward, loss + regularisation, backward, clip, update.

The loop is deliberately small enough to hold in one's head (nanoGPT style). Everything else —
logging, checkpoints, EMA, early stopping, monitors, diagnosis, progress bars — is a
:class:`Callback` that hooks into four events::

    train_start → (step_end)* → epoch_end → ... → train_end

A callback may call ``trainer.request_stop(reason)``; the loop finishes the current step and
stops at the next safe point.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from trainlab.checkpoint import load_model_state, model_state


class Callback:
    """Base class: override any of the events. ``state_dict`` is saved in checkpoints.

    ``order``: the trainer calls callbacks by ascending order (ties keep the order they were
    given in). Those that stop a diverged run come first (10), those that add to an epoch's
    record (EMA, 20) before those that read it (user callbacks, 50) and write it out (logger, 70),
    and the checkpointer last (100), so the state it saves includes every other callback's update.
    """

    name = "callback"
    order = 50

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class StepInfo:
    """What one update produced. ``loss`` and ``correct`` stay tensors: no device sync per step."""

    step: int
    epoch: int
    loss: torch.Tensor
    correct: torch.Tensor
    batch_size: int
    lr: float


@dataclass
class TrainerState:
    """Where the loop is. Saved in checkpoints so that a resumed run continues exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # updates done
    stop_reason: str | None = None
    history: list = field(default_factory=list)  # one dict per finished epoch
    # (images seen, loss sum, correct sum) of the epoch under way: a checkpoint taken mid-epoch
    # carries them, so the resumed epoch's record is the one the uninterrupted run would write.
    running: tuple | None = None


class Trainer:
    """Trains ``model`` on batches from ``loader``; ``evaluate(model) -> dict`` runs each epoch.

    Args:
        loss_fn: ``(logits, target) -> loss`` (the data loss; ``penalty`` adds regularisation).
        penalty: ``() -> Tensor`` regularisation term added to the loss, or None.
        closure_step: True for optimisers that re-evaluate the loss (L-BFGS).
        amp: the autocast dtype of the forward passes (training and evaluation), or None for
            float32; float16 adds a GradScaler. Weights, loss, metrics and checkpoints stay float32.
        compile: train through ``torch.compile(model)``. Only the training forward is compiled:
            ``self.model`` stays the plain module that evaluation, EMA, monitors and checkpoints see.
        data_parallel: a :class:`trainlab.distributed.DataParallel` when this process is one rank
            of a data-parallel job: the forward/backward pass goes through its DDP wrapper, the
            loss is weighted by this rank's share of the global batch, and each step's loss and
            counts are reduced over the ranks. ``self.model`` stays the plain module (state dicts
            without a ``module.`` prefix, callbacks, evaluation).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, loader,
                 loss_fn: Callable, evaluate: Callable[[nn.Module], dict], epochs: int,
                 penalty: Callable[[], torch.Tensor] | None = None, clip_grad: float = 0.0,
                 max_steps: int | None = None, amp: torch.dtype | None = None, device: torch.device | None = None,
                 callbacks: list[Callback] = (), closure_step: bool = False, compile: bool = False,
                 data_parallel=None):
        self.model, self.optimizer, self.scheduler, self.loader = model, optimizer, scheduler, loader
        self.loss_fn, self.epochs, self.penalty = loss_fn, epochs, penalty
        self.clip_grad, self.max_steps, self.closure_step = clip_grad, max_steps, closure_step
        self.device = device or next(model.parameters()).device
        self.amp = amp
        # float16's 5-bit exponent underflows small gradients, so the loss is scaled; bfloat16 has float32's range.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == torch.float16)
        self.dp = data_parallel
        net = model if data_parallel is None else data_parallel.wrap(model)
        self.forward = torch.compile(net) if compile else net  # the one place a model is compiled

        def evaluate_under_autocast(m: nn.Module) -> dict:  # evaluation sees the numerics training sees
            with self.autocast():
                return evaluate(m)

        self.evaluate = evaluate_under_autocast
        self.callbacks = sorted(callbacks, key=lambda cb: cb.order)  # stable: equal orders keep theirs
        self.state = TrainerState()

    # --- events -------------------------------------------------------------------------
    def emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, f"on_{event}")(self, *args)

    def request_stop(self, reason: str) -> None:
        if self.state.stop_reason is None:
            self.state.stop_reason = reason

    def callback(self, kind: type) -> Callback | None:
        return next((cb for cb in self.callbacks if isinstance(cb, kind)), None)

    # --- one update ---------------------------------------------------------------------
    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def compute_loss(self, x, y):
        with self.autocast():
            logits = self.forward(x)
            loss = self.loss_fn(logits.float(), y)
        data_loss = loss if self.dp is None else loss * self.dp.share_weight(len(y))
        total = data_loss + self.penalty() if self.penalty is not None else data_loss
        return total, loss, logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor):
        if self.closure_step:
            def closure():
                self.optimizer.zero_grad(set_to_none=True)
                total, _, _ = self.compute_loss(x, y)
                total.backward()
                return total
            self.optimizer.step(closure)
            with torch.no_grad():
                _, loss, logits = self.compute_loss(x, y)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            total, loss, logits = self.compute_loss(x, y)
            self.scaler.scale(total).backward()
            if self.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        labels = y if y.ndim == 1 else y.argmax(1)  # soft targets (mixup): the dominant class
        correct = (logits.detach().argmax(1) == labels).sum()
        return loss.detach(), correct

    # --- the loop -----------------------------------------------------------------------
    def fit(self) -> TrainerState:
        s = self.state
        self.emit("train_start")
        while s.epoch < self.epochs and s.stop_reason is None:
            self.model.train()
            self.loader.set_epoch(s.epoch)
            t0 = time.perf_counter()
            seen, loss_sum, correct_sum = s.running or (0, 0.0, 0)
            for x, y in self.loader:
                if x.device.type == "cpu" and self.device.type != "cpu":  # a host loader: pinned batches copy while the GPU works
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                lr = self.optimizer.param_groups[0]["lr"]
                loss, correct = self.train_step(x, y)
                n = len(x)
                if self.dp is not None:  # over every rank's share: what one process would see
                    loss, correct, n = self.dp.reduce_step(loss, correct, n)
                s.step += 1
                seen += n
                loss_sum, correct_sum = loss_sum + loss * n, correct_sum + correct
                s.running = (seen, loss_sum, correct_sum)
                self.emit("step_end", StepInfo(s.step, s.epoch, loss, correct, n, lr))
                if s.stop_reason or (self.max_steps and s.step >= self.max_steps):
                    break
            seconds = time.perf_counter() - t0
            if s.stop_reason is not None:
                break  # a half-finished epoch is not evaluated or checkpointed
            s.epoch, s.running = s.epoch + 1, None
            running_loss, running_acc = float(loss_sum) / max(seen, 1), float(correct_sum) / max(seen, 1)
            record = {"epoch": s.epoch, "step": s.step, "train_loss_running": running_loss,
                      "train_acc_running": running_acc, "lr": self.optimizer.param_groups[0]["lr"],
                      "seconds": seconds, "images_per_second": seen / max(seconds, 1e-9)}
            record.update(self.evaluate(self.model))
            # train_loss/train_acc: the evaluator's eval-mode measurement on training images when
            # it makes one (trainlab's runs do), comparable with val_*; else the running averages.
            record.setdefault("train_loss", running_loss)
            record.setdefault("train_acc", running_acc)
            s.history.append(record)
            self.emit("epoch_end", record)
            if self.max_steps and s.step >= self.max_steps:
                break
        self.emit("train_end")
        return s

    # --- checkpoint state -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "history": self.state.history,
            "running": self.state.running,
            # where the loader is inside the epoch (None for loaders that cannot resume mid-epoch)
            "loader": self.loader.state_dict() if hasattr(self.loader, "state_dict") else None,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks},
        }

    def load_state_dict(self, ckpt: dict) -> None:
        load_model_state(self.model, ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] and self.scaler.is_enabled():  # resuming across train.amp: a fresh scale
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state.epoch, self.state.step = ckpt["epoch"], ckpt["step"]
        self.state.history = list(ckpt["history"])
        self.state.running = ckpt.get("running")
        if ckpt.get("loader") is not None and hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(ckpt["loader"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if ckpt["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        for cb in self.callbacks:
            if cb.name in ckpt["callbacks"]:
                cb.load_state_dict(ckpt["callbacks"][cb.name])


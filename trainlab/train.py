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


class Callback:
    """Base class: override any of the events. ``state_dict`` is saved in checkpoints."""

    name = "callback"

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
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, loader,
                 loss_fn: Callable, evaluate: Callable[[nn.Module], dict], epochs: int,
                 penalty: Callable[[], torch.Tensor] | None = None, clip_grad: float = 0.0,
                 max_steps: int | None = None, amp: bool = False, device: torch.device | None = None,
                 callbacks: list[Callback] = (), closure_step: bool = False):
        self.model, self.optimizer, self.scheduler, self.loader = model, optimizer, scheduler, loader
        self.loss_fn, self.evaluate, self.epochs, self.penalty = loss_fn, evaluate, epochs, penalty
        self.clip_grad, self.max_steps, self.closure_step = clip_grad, max_steps, closure_step
        self.device = device or next(model.parameters()).device
        self.amp = amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.callbacks = list(callbacks)
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
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.float16)

    def compute_loss(self, x, y):
        with self.autocast():
            logits = self.model(x)
            loss = self.loss_fn(logits.float(), y)
        total = loss + self.penalty() if self.penalty is not None else loss
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
                lr = self.optimizer.param_groups[0]["lr"]
                loss, correct = self.train_step(x, y)
                s.step += 1
                seen += len(x)
                loss_sum, correct_sum = loss_sum + loss * len(x), correct_sum + correct
                s.running = (seen, loss_sum, correct_sum)
                self.emit("step_end", StepInfo(s.step, s.epoch, loss, correct, len(x), lr))
                if s.stop_reason or (self.max_steps and s.step >= self.max_steps):
                    break
            seconds = time.perf_counter() - t0
            if s.stop_reason is not None:
                break  # a half-finished epoch is not evaluated or checkpointed
            s.epoch, s.running = s.epoch + 1, None
            record = {"epoch": s.epoch, "step": s.step, "train_loss": float(loss_sum) / max(seen, 1),
                      "train_acc": float(correct_sum) / max(seen, 1), "lr": self.optimizer.param_groups[0]["lr"],
                      "seconds": seconds, "images_per_second": seen / max(seconds, 1e-9)}
            record.update(self.evaluate(self.model))
            s.history.append(record)
            self.emit("epoch_end", record)
            if self.max_steps and s.step >= self.max_steps:
                break
        self.emit("train_end")
        return s

    # --- checkpoint state -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
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
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
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


"""One trial: the base config plus the sampled values, trained by ``train_run`` into
``<out>/trials/<number>/`` (a normal run directory), its validation accuracy reported to Optuna
every epoch so that a hopeless trial is pruned early.
"""
from __future__ import annotations

import math
import socket
from pathlib import Path

import optuna

from trainlab.config import cfg_with
from trainlab.data import load_data_cached
from trainlab.run import train_run
from trainlab.train import Callback, Trainer


def trial_config(base: dict, overrides: dict, epochs: int, monitors: bool = False) -> dict:
    """The config a trial trains with. Trials are many and short: no progress bar, and no
    activation monitors unless asked for (they cost a forward pass on a probe batch)."""
    quiet = {"train.progress": False} if monitors else {"train.progress": False, "monitor.every": 0}
    return cfg_with(base, {**overrides, "train.epochs": epochs, **quiet})


class ReportToOptuna(Callback):
    """Reports validation accuracy to the trial after each epoch and, in the first half of the
    trial, asks the pruner; a pruned trial stops at the end of that epoch.

    Only the first half: that is where stopping saves epochs, and late in a trial the
    differences left between sound configurations are within the noise of a small validation
    split (a 4-epoch trial pruned after epoch 3 at the accuracy the round's best finished with).
    """

    name = "optuna_report"

    def __init__(self, trial: optuna.Trial, epochs: int):
        self.trial, self.epochs, self.pruned_at, self.last = trial, epochs, None, {}

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        if epoch.get("val_acc") is None:
            return
        self.last = epoch
        self.trial.report(epoch["val_acc"], epoch["epoch"])
        if epoch["epoch"] <= self.epochs // 2 and self.trial.should_prune():
            self.pruned_at = epoch["epoch"]
            trainer.request_stop(f"pruned after epoch {epoch['epoch']}: validation accuracy {epoch['val_acc']:.4f} "
                                 "is below the other trials of its round at that epoch")


_DATA: dict[str, object] = {}


def cached_data(cfg: dict):
    """Load the data set once per worker: every trial of a search splits it the same way (same
    seed and data keys), and reloading Fashion-MNIST for each trial would cost more than a
    short trial. One entry is kept: a search has one data set."""
    return load_data_cached(cfg, _DATA, max_entries=1)


def run_trial(trial: optuna.Trial, base: dict, overrides: dict, epochs: int, out: Path, monitors: bool = False) -> float:
    """Train one trial; returns its validation accuracy after the last epoch, or raises
    ``optuna.TrialPruned``. A run that diverged before its first epoch scores 0.

    Why the last epoch and not the best: on a small validation split the best of several noisy
    epochs is an optimistic estimate that rewards the noisiest curves (a rate too high bouncing
    into a lucky epoch); where the schedule has brought training to rest is what the
    configuration is worth. The validation loss there breaks ties between equal accuracies.
    """
    cfg = trial_config(base, overrides, epochs, monitors)
    run_dir = Path(out) / "trials" / str(trial.number)
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    trial.set_user_attr("host", socket.gethostname())
    reporter = ReportToOptuna(trial, epochs)
    summary = train_run(cfg, run_dir, callbacks=[reporter], data=cached_data(cfg), say=lambda msg: None,
                        report=False)  # a report per short trial costs ~40% of it; `trainlab report` makes one later
    trial.set_user_attr("epochs_trained", summary["epochs"])
    trial.set_user_attr("best_val_acc", summary["best_val_acc"])
    trial.set_user_attr("val_loss", reporter.last.get("val_loss"))
    trial.set_user_attr("stop_reason", summary.get("stop_reason"))
    trial.set_user_attr("seconds", summary["wall_seconds"])
    if reporter.pruned_at is not None:
        raise optuna.TrialPruned(summary["stop_reason"])
    value = reporter.last.get("val_acc")
    return 0.0 if value is None or not math.isfinite(value) else float(value)

"""The trainer's wiring: the rate read back from the optimiser, monitored metrics with a mode,
the metrics logger as the one writer of metrics.jsonl, and the explicit callback order."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import quiet
from trainlab.babysit.monitors import Monitors
from trainlab.callbacks import Checkpointer, EarlyStopping, MetricsLogger
from trainlab.checkpoint import load_checkpoint
from trainlab.config import cfg_with, load_config
from trainlab.data.loader import TensorLoader
from trainlab.errors import UserError
from trainlab.optim import base_lr, base_lrs, build_optimizer, optimizer_base_lr
from trainlab.run import train_run
from trainlab.schedules import build_scheduler
from trainlab.train import Callback, Trainer

TINY = ["train.epochs=2", "train.batch_size=64", "train.progress=false", "model.width=32", "monitor.every=0",
        "optim.lr=0.01", "train.max_steps=6"]


def records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# --- the effective rate, read back from the optimiser ----------------------------------------------

def test_optimizer_base_lr_is_the_configured_rate_after_batch_scaling_multipliers_and_decay():
    cfg = load_config(None, ["optim.lr=0.1", "optim.batch_scaling=true", "optim.reference_batch=256",
                             "train.batch_size=64", "schedule.name=cosine", "train.epochs=3"])
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    optimizer = build_optimizer(model, cfg, lr_multipliers={"0": 0.1})
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=2)
    for _ in range(5):  # the current rates decay; the undecayed ones stay
        optimizer.step()
        scheduler.step()
    assert base_lr(cfg) == pytest.approx(0.025)
    assert optimizer_base_lr(optimizer) == pytest.approx(0.025)
    assert sorted(set(base_lrs(optimizer))) == pytest.approx([0.0025, 0.025])
    assert all(g["lr"] < 0.9 * lr0 for g, lr0 in zip(optimizer.param_groups, base_lrs(optimizer)))


def test_monitors_take_the_base_rate_from_the_optimiser_not_the_config(tmp_path):
    cfg = load_config(None, ["optim.lr=0.1"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)  # a caller's own optimiser, not the config's
    monitors = Monitors(cfg, torch.randn(8, 1, 8, 8), tmp_path)
    trainer = SimpleNamespace(model=model, optimizer=optimizer, state=SimpleNamespace(step=0),
                              callback=lambda kind: None)
    monitors.on_train_start(trainer)
    assert monitors.base_lr == pytest.approx(0.02)


def test_lr_find_sweeps_the_rates_it_names(tmp_path):
    from trainlab.babysit.lr_find import lr_find

    cfg = load_config(None, TINY + ["optim.batch_scaling=true", "optim.reference_batch=128"])
    result = lr_find(cfg, tmp_path / "f", say=quiet, steps=6, min_lr=1e-4, max_lr=1e-1)
    # Batch scaling halves the optimiser's base rate; the sweep's rates are absolute all the same.
    assert result["lrs"][0] == pytest.approx(1e-4) and result["lrs"][-1] == pytest.approx(1e-1)


# --- monitored metrics with a mode ---------------------------------------------------------------

def fake_trainer(tmp_path):
    model = torch.nn.Linear(2, 2)
    stops = []
    return SimpleNamespace(model=model, state_dict=lambda: {"model": model.state_dict()},
                           request_stop=stops.append, stops=stops)


def test_early_stopping_on_val_loss_in_min_mode(tmp_path):
    trainer = fake_trainer(tmp_path)
    stopper = EarlyStopping(2, monitor="val_loss", mode="min")
    for loss in (1.0, 0.8, 0.9, 0.85):  # improves once, then twice not
        stopper.on_epoch_end(trainer, {"val_loss": loss, "val_acc": 0.5})
    assert len(trainer.stops) == 1 and "val_loss has not improved for 2 epochs (best 0.8000)" in trainer.stops[0]
    default = EarlyStopping(2)  # validation accuracy, higher is better: 0.8 → 0.9 improves
    for acc in (0.8, 0.9, 0.85):
        default.on_epoch_end(trainer, {"val_acc": acc})
    assert len(trainer.stops) == 1 and default.best == 0.9 and default.bad_epochs == 1


def test_checkpointer_keeps_the_lowest_val_loss_in_min_mode(tmp_path):
    trainer = fake_trainer(tmp_path)
    saver = Checkpointer(tmp_path, {"config": {}}, monitor="val_loss", mode="min")
    (tmp_path / "checkpoints").mkdir()
    for epoch, (acc, loss) in enumerate([(0.5, 0.9), (0.9, 0.6), (0.7, 0.4), (0.95, 0.5)], start=1):
        saver.on_epoch_end(trainer, {"epoch": epoch, "step": epoch, "val_acc": acc, "val_loss": loss,
                                     "train_acc": 1.0, "train_loss": 0.0})
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == 3


def test_checkpointer_falls_back_on_the_training_metric_without_validation(tmp_path):
    trainer = fake_trainer(tmp_path)
    saver = Checkpointer(tmp_path, {"config": {}}, monitor="val_loss", mode="min")
    (tmp_path / "checkpoints").mkdir()
    for epoch, loss in enumerate([0.9, 0.3, 0.5], start=1):
        saver.on_epoch_end(trainer, {"epoch": epoch, "step": epoch, "train_acc": 0.5, "train_loss": loss})
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == 2


def test_a_mode_other_than_max_or_min_is_a_user_error():
    with pytest.raises(UserError, match="mode='lowest'"):
        EarlyStopping(3, monitor="val_loss", mode="lowest")
    with pytest.raises(UserError, match="'max'"):
        Checkpointer("run", {}, mode="up")


# --- the metrics logger writes metrics.jsonl ------------------------------------------------------

class CountingLogger(MetricsLogger):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.kinds = []

    def log(self, record: dict) -> None:
        self.kinds.append(record["kind"])
        super().log(record)


def test_monitor_records_go_through_the_metrics_logger(tmp_path):
    logger = CountingLogger(tmp_path, every=1000, tensorboard=False)
    logger.log({"kind": "note", "step": 0, "text": "hello"})
    assert records(tmp_path, "note") == [{"kind": "note", "step": 0, "text": "hello"}]

    cfg = load_config(None, ["monitor.every=2", "monitor.plots=false", "monitor.warn=false"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    loader = TensorLoader(x, y, 8, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, optimizer, None, loader, torch.nn.functional.cross_entropy, lambda m: {}, epochs=1,
                      callbacks=[Monitors(cfg, x[:8], tmp_path), logger])
    trainer.fit()
    assert logger.kinds.count("monitor") == len(records(tmp_path, "monitor")) == 4  # steps 0, 1, 2, 4


# --- the order callbacks run in --------------------------------------------------------------------

class Stamp(Callback):
    """Adds to each epoch's record: it must run before the logger writes the record and the
    checkpointer saves its state, wherever it is in the list it came in."""

    name = "stamp"

    def __init__(self):
        self.epochs = 0

    def on_epoch_end(self, trainer, epoch):
        self.epochs += 1
        epoch["stamped"] = self.epochs

    def state_dict(self):
        return {"epochs": self.epochs}


def test_callbacks_run_by_order_whatever_the_list_order(tmp_path):
    checkpointer, logger, stamp = Checkpointer(tmp_path, {"config": {}}), MetricsLogger(tmp_path, 1000, False), Stamp()
    stopper = EarlyStopping(5)

    class Late(Callback):
        order = 200

    late = Late()
    model = torch.nn.Linear(4, 2)
    loader = TensorLoader(torch.randn(8, 4), torch.randint(0, 2, (8,)), 8, seed=0)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), None, loader,
                      torch.nn.functional.cross_entropy, lambda m: {}, epochs=2,
                      callbacks=[late, checkpointer, logger, stamp, stopper])
    assert trainer.callbacks == [stopper, stamp, logger, checkpointer, late]
    trainer.fit()
    assert [r["stamped"] for r in records(tmp_path, "epoch")] == [1, 2]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["callbacks"]["stamp"] == {"epochs": 2}


@pytest.mark.slow
def test_a_user_callback_given_to_train_run_is_saved_by_the_checkpointer(tmp_path):
    cfg = cfg_with(load_config(None, TINY), {"train.max_steps": None})
    train_run(cfg, tmp_path / "run", callbacks=[Stamp()], say=quiet)
    assert [r["stamped"] for r in records(tmp_path / "run", "epoch")] == [1, 2]
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["callbacks"]["stamp"] == {"epochs": 2}
    assert not math.isnan(last["callbacks"]["checkpointer"]["best"][0])


# --- one trainer factory ------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_lr_find_and_check_build_their_trainer_in_one_place(tmp_path, monkeypatch):
    import trainlab.run
    from trainlab.babysit.checks import check_overfit_small_sample
    from trainlab.babysit.lr_find import lr_find
    from trainlab.data import load_data

    built = []

    class Recorded(Trainer):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            built.append(self)

    monkeypatch.setattr(trainlab.run, "Trainer", Recorded)
    cfg = load_config(None, TINY)
    train_run(cfg, tmp_path / "run", say=quiet)
    lr_find(cfg, tmp_path / "find", say=quiet, steps=4)
    check_overfit_small_sample(cfg, load_data(cfg), quiet)
    assert len(built) == 3
    train, find, check = built
    assert train.epochs == 2 and train.max_steps == 6 and train.scheduler is not None
    assert find.max_steps == 4 and isinstance(find.scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert check.scheduler is None and check.penalty is None and len(check.loader) < len(train.loader)

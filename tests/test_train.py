"""The trainer and the run directory: contents, resume exactness, stops, EMA, early stopping."""
import json

import pytest
import torch

from tests.helpers import quiet
from trainlab.checkpoint import load_checkpoint
from trainlab.config import load_config
from trainlab.errors import UserError
from trainlab.run import train_run
from trainlab.train import Callback

TINY = ["train.epochs=2", "train.batch_size=64", "train.progress=false", "model.width=32", "monitor.every=0", "optim.lr=0.01"]


def tiny_cfg(*extra):
    return load_config(None, TINY + list(extra))


def test_run_directory_is_complete(tmp_path):
    summary = train_run(tiny_cfg(), tmp_path / "run", say=quiet)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "report.html",
                 "checkpoints/last.pt", "checkpoints/best.pt", "plots/loss.png", "plots/accuracy.png", "plots/lr.png"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    on_disk = json.loads((run / "summary.json").read_text())
    for key in ("dataset", "model", "params", "epochs", "steps", "best_val_acc", "test_acc", "test_loss", "train_acc",
                "wall_seconds", "train_images_per_second", "device", "seed", "torch_version", "diagnosis"):
        assert key in on_disk, key
    assert on_disk == json.loads(json.dumps(summary))
    assert 0 <= on_disk["test_acc"] <= 1 and on_disk["epochs"] == 2 and on_disk["test_acc"] > 0.5
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    # checkpoints are safe to load
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["data"]["name"] == "digits"


def test_refuses_to_overwrite_a_run(tmp_path):
    train_run(tiny_cfg("train.epochs=1"), tmp_path / "run", say=quiet)
    with pytest.raises(UserError, match="--resume"):
        train_run(tiny_cfg("train.epochs=1"), tmp_path / "run", say=quiet)


def weights(run):
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class InterruptAt(Callback):
    """Simulates Ctrl-C in the middle of a given step."""

    def __init__(self, step):
        self.at = step

    def on_step_end(self, trainer, step):
        if step.step == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("extra", [[], pytest.param(["model.dropout=0.3", "augment.names=[flip,crop]", "train.ema=0.9",
                                                     "optim.name=momentum", "optim.lr=0.05", "model.norm=batch"],
                                                    marks=pytest.mark.slow)])
def test_resume_gives_identical_weights(tmp_path, extra):
    cfg = tiny_cfg(*extra)
    straight = tmp_path / "straight"
    train_run(cfg, straight, say=quiet)
    steps_per_epoch = load_checkpoint(straight / "checkpoints" / "last.pt")["step"] // 2

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, broken, callbacks=[InterruptAt(steps_per_epoch + 3)], say=quiet)  # mid epoch 2
    assert load_checkpoint(broken / "checkpoints" / "last.pt")["epoch"] == 1
    summary = train_run(cfg, broken, resume=True, say=quiet)
    assert summary["epochs"] == 2
    assert_same_weights(weights(straight), weights(broken))
    a = json.loads((straight / "summary.json").read_text())
    b = json.loads((broken / "summary.json").read_text())
    assert a["test_acc"] == b["test_acc"] and a["steps"] == b["steps"]
    steps = [json.loads(x)["step"] for x in (broken / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "step"]
    assert len(steps) == len(set(steps)), "resumed run logged a step twice"


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg("optim.name=sgd", "optim.lr=1000", "schedule.name=constant", "train.epochs=3")
    summary = train_run(cfg, tmp_path / "run", say=quiet)
    assert summary["stop_reason"].startswith("diverged")
    assert "diverged" in [d["code"] for d in summary["diagnosis"]]
    assert summary["test_loss"] is not None and summary["test_loss"] < 10, "tested on the last good weights"
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_early_stopping_stops(tmp_path):
    cfg = tiny_cfg("train.epochs=30", "train.early_stopping=1", "optim.lr=1e-6", "schedule.name=constant")
    summary = train_run(cfg, tmp_path / "run", say=quiet)
    assert summary["epochs"] < 30 and "early stopping" in summary["stop_reason"]


@pytest.mark.slow
def test_ema_is_reported(tmp_path):
    summary = train_run(tiny_cfg("train.ema=0.9"), tmp_path / "run", say=quiet)
    assert 0 <= summary["test_acc_ema"] <= 1
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("val_acc_ema" in r for r in records if r["kind"] == "epoch")


@pytest.mark.slow
def test_max_steps_and_seeded_repeatability(tmp_path):
    a = train_run(tiny_cfg("train.max_steps=5"), tmp_path / "a", say=quiet)
    train_run(tiny_cfg("train.max_steps=5"), tmp_path / "b", say=quiet)
    assert a["steps"] == 5
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))


def test_best_checkpoint_breaks_accuracy_ties_by_lower_loss(tmp_path):
    from types import SimpleNamespace

    from trainlab.callbacks import Checkpointer

    model = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(model=model, state_dict=lambda: {"model": model.state_dict()})
    saver = Checkpointer(tmp_path, {"config": {}})
    (tmp_path / "checkpoints").mkdir()
    for epoch, (acc, loss) in enumerate([(0.9, 0.5), (0.9, 0.3), (0.9, 0.4), (0.8, 0.1)], start=1):
        saver.on_epoch_end(trainer, {"epoch": epoch, "step": epoch, "val_acc": acc, "val_loss": loss,
                                     "train_acc": 1.0, "train_loss": 0.0})
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == 2


def test_prepare_leaves_the_callers_data_bundle_alone():
    from trainlab.data import load_data
    from trainlab.run import prepare

    cfg = tiny_cfg()
    data = load_data(cfg)
    before = {n: getattr(data, n) for n in ("train_x", "train_y", "val_x", "test_x")}
    p = prepare(cfg, say=quiet, data=data)
    assert p.data is not data
    assert all(getattr(data, n) is t for n, t in before.items())


def test_train_accuracy_is_measured_in_eval_mode_on_a_fixed_training_subset(tmp_path):
    """Each epoch's train_acc/train_loss are the end-of-epoch weights in eval mode (no dropout, no
    augmentation) on train.train_eval_size stratified training images chosen by the seed; the
    running averages over the epoch's minibatches are kept as train_acc_running/train_loss_running."""
    from trainlab.classifier import load_classifier
    from trainlab.data import load_data
    from trainlab.data.split import stratified_subset
    from trainlab.evaluate import evaluate

    cfg = tiny_cfg("train.epochs=1", "model.dropout=0.5", "seed=3", "train.train_eval_size=300")
    train_run(cfg, tmp_path / "run", say=quiet, report=False)
    record = next(r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
                  if r["kind"] == "epoch")
    model = load_classifier(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt"), torch.device("cpu"))
    data = load_data(cfg)
    idx = stratified_subset(data.train_y, 300, 3)
    assert len(idx) == 300 < len(data.train_y)
    m = evaluate(model, data.train_x[idx], data.train_y[idx], data.num_classes)
    assert record["train_acc"] == pytest.approx(m["acc"]) and record["train_loss"] == pytest.approx(m["loss"], rel=1e-5)
    assert record["train_acc_running"] != record["train_acc"] and "train_loss_running" in record


def test_uint8_pixels_train_exactly_as_floats(tmp_path):
    """A run on uint8 pixels (converted batch by batch on the device: the loader for training, the
    model for evaluation) gives the same numbers as one on the float32 copy in [0, 1]."""
    from tests.test_data import write_mnist
    from trainlab.data import load_data

    write_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    cfg = tiny_cfg("data.name=mnist", f"data.root={tmp_path}", "data.download=false", "data.val_fraction=0.25",
                   "train.epochs=2", "augment.names=[crop]", "train.train_eval_size=20")
    runs = {}
    for pixels in (False, True):
        data = load_data(cfg, pixels=pixels)
        assert data.train_x.dtype == (torch.uint8 if pixels else torch.float32)
        runs[pixels] = train_run(cfg, tmp_path / f"run-{pixels}", data=data, say=quiet, report=False)
    for key in ("test_loss", "test_acc", "train_acc", "best_val_acc"):
        assert runs[True][key] == pytest.approx(runs[False][key], rel=1e-6), key

"""Ensembles: averaging identical models changes nothing, vote vs mean, snapshot ensembles at the
cycle ends, EMA weights beside raw ones, and members that disagree on the data set are refused."""
import copy
import json
import shutil

import pytest
import torch

from tests.helpers import quiet
from trainlab.checkpoint import load_checkpoint, save_checkpoint
from trainlab.classifier import build_classifier
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.ensemble import (
    SnapshotSaver,
    ensemble_metrics,
    mean_probs,
    snapshot_steps,
    vote_probs,
)
from trainlab.errors import UserError
from trainlab.evaluate import predict_probs
from trainlab.run import train_run
from trainlab.schedules import cycle_end_steps

TINY = ["train.progress=false", "monitor.every=0", "model.width=16", "train.batch_size=128", "optim.lr=0.01"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny digits runs that differ only in the seed, each keeping EMA weights."""
    root = tmp_path_factory.mktemp("ens")
    for seed in (1, 2):
        cfg = load_config(None, TINY + ["train.epochs=1", "train.ema=0.9", f"seed={seed}"])
        train_run(cfg, root / f"r{seed}", say=quiet)
    return root


def test_identical_members_equal_the_single_model():
    torch.manual_seed(0)
    x = torch.rand(50, 1, 8, 8)
    cfg = load_config(None, ["model.name=convnet", "model.width=4", "model.norm=batch"])
    model = build_classifier(cfg, (1, 8, 8), 10, x_train=x)
    y = torch.randint(0, 10, (50,))
    singles, ens, by_method = ensemble_metrics([model, copy.deepcopy(model), copy.deepcopy(model)], x, y, 10)
    single = predict_probs(model, x)
    assert torch.allclose(mean_probs([single, single, single]), single, atol=1e-7)
    assert ens["acc"] == singles[0]["acc"] and ens["loss"] == pytest.approx(singles[0]["loss"], abs=1e-6)
    assert by_method == {"mean": ens["acc"], "vote": singles[0]["acc"]}  # identical voters agree with each one


@pytest.mark.slow
def test_ensemble_of_copies_of_one_run_equals_it(two_runs, tmp_path):
    shutil.copytree(two_runs / "r1", tmp_path / "copy")
    assert main(["ensemble", str(two_runs / "r1"), str(tmp_path / "copy"), "--out", str(tmp_path / "e")]) == 0
    result = json.loads((tmp_path / "e" / "ensemble.json").read_text())
    summary = json.loads((two_runs / "r1" / "summary.json").read_text())
    assert result["ensemble_test_acc"] == result["best_single_test_acc"] == pytest.approx(summary["test_acc"])
    assert result["gain"] == 0


def test_vote_differs_from_mean_and_breaks_ties_by_probability():
    weak_0 = torch.tensor([[0.40, 0.35, 0.25]])
    sure_1 = torch.tensor([[0.00, 1.00, 0.00]])
    members = [weak_0, weak_0, sure_1]
    assert mean_probs(members).argmax(1).item() == 1  # one confident member outweighs two hesitant ones
    assert vote_probs(members).argmax(1).item() == 0  # but is outvoted
    assert torch.allclose(vote_probs(members).sum(1), torch.ones(1))
    tie = [torch.tensor([[0.6, 0.4, 0.0]]), torch.tensor([[0.0, 0.9, 0.1]])]  # one vote each for 0 and 1
    assert vote_probs(tie).argmax(1).item() == 1  # higher mean probability (0.65 vs 0.3)


@pytest.mark.slow
def test_two_seeds_ensemble_with_ema_and_tta(two_runs, tmp_path):
    out = tmp_path / "e"
    assert main(["ensemble", str(two_runs / "r1"), str(two_runs / "r2"), "--out", str(out), "--tta", "flip"]) == 0
    r = json.loads((out / "ensemble.json").read_text())
    assert [m["run"] for m in r["members"]] == [str(two_runs / f"r{s}" / "checkpoints" / "best.pt") for s in (1, 2)]
    for key in ("best_single_test_acc", "ensemble_test_acc", "gain", "ensemble_test_acc_ema",
                "best_single_test_acc_ema"):
        assert 0 <= abs(r[key]) <= 1, key
    assert all("test_acc_ema" in m for m in r["members"])
    assert r["method"] == "mean" and r["tta"] == "flip"
    assert r["gain"] == pytest.approx(r["ensemble_test_acc"] - max(m["test_acc"] for m in r["members"]))
    assert (out / "plots" / "confusion.png").is_file()


@pytest.mark.slow
def test_snapshot_saver_writes_k_snapshots_at_the_cycle_ends(tmp_path):
    cfg = load_config(None, TINY + ["schedule.name=sgdr", "schedule.cycle_epochs=1", "train.epochs=2",
                                    "train.snapshots=2"])
    run = tmp_path / "snap"
    summary = train_run(cfg, run, say=quiet)
    steps_per_epoch = summary["steps"] // 2
    ends = cycle_end_steps(cfg, steps_per_epoch)
    assert ends == [steps_per_epoch, 2 * steps_per_epoch]
    snaps = sorted((run / "checkpoints").glob("snapshot-*.pt"))
    assert [p.name for p in snaps] == ["snapshot-1.pt", "snapshot-2.pt"]
    assert [load_checkpoint(p)["step"] for p in snaps] == ends
    last = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    final = load_checkpoint(snaps[-1])["model"]  # the last cycle ends with training
    assert all(torch.equal(last[k], final[k]) for k in last)
    first = load_checkpoint(snaps[0])["model"]
    assert any(not torch.equal(first[k], final[k]) for k in first)

    assert main(["ensemble", str(run), "--snapshots", "--out", str(tmp_path / "e")]) == 0
    r = json.loads((tmp_path / "e" / "ensemble.json").read_text())
    assert [m["run"] for m in r["members"]] == [str(p) for p in snaps]


def test_snapshots_need_enough_cycles():
    with pytest.raises(UserError, match="no cycles"):
        SnapshotSaver(load_config(None, ["train.snapshots=2", "schedule.name=cosine"]), 10, "unused", {})
    with pytest.raises(UserError, match="only 2 cycles"):
        snapshot_steps(load_config(None, ["train.snapshots=3", "schedule.name=cyclic", "schedule.cycle_epochs=2",
                                          "train.epochs=5"]), 10)
    assert snapshot_steps(load_config(None, ["train.snapshots=2", "schedule.name=cyclic", "schedule.cycle_epochs=2",
                                             "train.epochs=6"]), 10) == [40, 60]


@pytest.mark.slow
def test_members_must_share_data_set_and_classes(two_runs, tmp_path, capsys):
    ckpt = load_checkpoint(two_runs / "r2" / "checkpoints" / "best.pt")
    other = {**ckpt, "config": {**ckpt["config"], "data": {**ckpt["config"]["data"], "name": "mnist"}}}
    save_checkpoint(other, tmp_path / "mnist.pt")
    assert main(["ensemble", str(two_runs / "r1"), str(tmp_path / "mnist.pt"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "data set" in err and "mnist" in err and "Traceback" not in err
    fewer = {**ckpt, "classes": ckpt["classes"][:5]}
    save_checkpoint(fewer, tmp_path / "five.pt")
    assert main(["ensemble", str(two_runs / "r1"), str(tmp_path / "five.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "classes" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_snapshots_missing_or_single_run_is_a_user_error(two_runs, tmp_path, capsys):
    assert main(["ensemble", str(two_runs / "r1"), "--snapshots", "--out", str(tmp_path / "e")]) == 2
    assert "no snapshots" in capsys.readouterr().err
    assert main(["ensemble", str(two_runs / "r1"), "--out", str(tmp_path / "e")]) == 2
    assert "--snapshots" in capsys.readouterr().err

"""``trainlab tune``: the whole recipe end to end on a tiny digits budget, and its stop at step 2."""
import json

import pytest

from tests.helpers import quiet
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.search.tune import default_space, trial_lengths, tune

TINY = ["data.subset=300", "model.width=64", "train.batch_size=32", "train.epochs=2", "train.progress=false",
        "monitor.every=0"]
BUDGET = {"trials": 3, "epochs": 1, "refine_trials": 2, "refine_epochs": 1, "max_widen": 0}


def trial_schedules(out) -> set[str]:
    return {load_config(c)["schedule"]["name"] for c in (out / "trials").rglob("config.yaml")}


@pytest.mark.slow
def test_tune_runs_every_step_and_writes_its_evidence(tmp_path):
    """In the lectures' order: small weight decay in step 3, constant-rate trials, a loop back to
    step 5, and decay (the config's cosine) only in the final run."""
    out = tmp_path / "tune"
    doc = tune(load_config(None, TINY), out, budget={**BUDGET, "loops": 1}, say=quiet)
    assert doc["order"] == "lectures" and doc["search_schedule"] == "constant" and doc["final_schedule"] == "cosine"
    assert load_config(out / "lr_find" / "config.yaml")["optim"]["weight_decay"] == 1e-4
    assert trial_schedules(out) == {"constant"}
    search = json.loads((out / "search.json").read_text())
    assert [r["round"] for r in search["rounds"]][:3] == ["coarse", "refine", "loop1"]
    assert all(r["stage"] == "refine" and r["epochs"] == search["rounds"][1]["epochs"] for r in search["rounds"][1:])
    assert load_config(out / "best.yaml")["schedule"]["name"] == "cosine"
    assert [s["step"] for s in doc["steps"]] == [1, 2, 3, 4, 5, 6, 7] and doc["stopped_at"] is None
    steps = {s["step"]: s for s in json.loads((out / "tune.json").read_text())["steps"]}
    assert steps[2]["passed"] and steps[2]["evidence"][0]["name"] == "overfit_small_sample"
    suggested = steps[3]["evidence"]["suggested_lr"]
    coarse = steps[4]["evidence"]["rounds"][0]
    low, high = (float(x) for x in coarse["space"]["optim.lr"][len("loguniform("):-1].split(","))
    assert low <= suggested <= high  # step 4 searches around step 3's rate
    assert steps[5]["evidence"]["best"]["stage"] == "refine"
    assert isinstance(steps[6]["evidence"]["diagnosis"], list) and steps[6]["evidence"]["diagnosis"]
    final = json.loads((out / "final" / "summary.json").read_text())
    assert steps[7]["evidence"]["test_acc"] == final["test_acc"] and final["epochs"] == 2
    assert 0 < steps[7]["evidence"]["test_acc_last_epoch"] <= 1
    assert final["tune"]["best_trial"] == doc["best"]["number"]
    cfg = load_config(out / "best.yaml")  # the final model's config, accepted by `trainlab train -c`
    assert cfg["optim"]["lr"] == pytest.approx(doc["best"]["overrides"]["optim.lr"]) and cfg["train"]["epochs"] == 2
    assert (out / "trials.csv").exists() and (out / "plots" / "search_optim.lr.png").exists()
    page = (out / "report.html").read_text()
    assert page.count("<h2>Step") == 7 and "data:image/png;base64," in page and "lr_find" in page


@pytest.mark.slow
def test_tune_in_the_earlier_order_keeps_the_schedule_in_every_trial(tmp_path):
    out = tmp_path / "tune"
    assert main(["tune", *TINY, "--order", "decay-throughout", "--out", str(out)]) == 0
    doc = json.loads((out / "tune.json").read_text())
    assert doc["order"] == "decay-throughout" and doc["search_schedule"] == doc["final_schedule"] == "cosine"
    assert load_config(out / "lr_find" / "config.yaml")["optim"]["weight_decay"] == 0
    assert trial_schedules(out) == {"cosine"}
    assert "loop1" not in [r["round"] for r in json.loads((out / "search.json").read_text())["rounds"]]


def test_tune_stops_when_the_model_cannot_overfit_a_small_sample(tmp_path, capsys):
    out = tmp_path / "tune"
    code = main(["tune", *TINY, "optim.lr=1e-7", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1 and "cannot overfit a small sample: check the model / lr" in printed
    doc = json.loads((out / "tune.json").read_text())
    assert doc["stopped_at"] == 2 and [s["step"] for s in doc["steps"]] == [1, 2]
    assert not doc["steps"][1]["passed"] and doc["steps"][1]["evidence"][0]["advice"]
    assert "stopped at step 2" in (out / "report.html").read_text()
    assert not (out / "trials").exists()


def test_default_space_centres_on_the_suggested_rate_and_stops_where_the_loss_turns_up():
    cfg = load_config(None, [])
    found = {"suggested_lr": 1e-2, "too_low_below": 5e-3, "too_high_above": 1e-1}
    space = default_space(cfg, found)  # up to where the loss turned up; below "barely changes"
    assert space["optim.lr"].low == pytest.approx(1e-2 / 10 ** 1.5) and space["optim.lr"].high == 1e-1
    assert space["optim.weight_decay"].log and space["model.dropout"].high == 0.5
    wide = default_space(load_config(None, ["reg.penalty=l2"]), {"suggested_lr": 1e-2})
    assert wide["optim.lr"].low == pytest.approx(1e-2 / 10 ** 1.5) and "reg.strength" in wide


def test_trial_lengths_reach_100_updates_on_small_data():
    budget = {"epochs": 2, "refine_epochs": 6}
    assert trial_lengths(budget, updates_per_epoch=21, final_epochs=30) == (5, 10)  # digits
    assert trial_lengths(budget, updates_per_epoch=422, final_epochs=30) == (2, 6)  # Fashion-MNIST
    assert trial_lengths(budget, updates_per_epoch=5, final_epochs=3) == (3, 3)  # never past the final run


def test_tune_again_reuses_the_range_test_of_the_same_config(tmp_path, monkeypatch):
    """Step 3's result is reused when the same config is tuned again, also when its data.root is
    relative (lr_find/config.yaml names it absolutely), and redone when the config changed."""
    import time

    import trainlab.babysit.commands as commands
    from trainlab.search.tune import Recipe, step_lr_find

    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, TINY + ["data.root=data"])
    recipe = Recipe(tmp_path / "tune", "small", [], time.perf_counter())
    (recipe.out / "lr_find").mkdir(parents=True)
    calls = []

    def fake_lr_find(cfg, out, say):
        from trainlab.config import dump_config

        calls.append(cfg["optim"]["lr"])
        dump_config(cfg, out / "config.yaml")
        found = {"suggested_lr": 1e-3, "min_loss_lr": 1e-2, "verdict": "fine", "rule": "min / 10"}
        (out / "lr_find.json").write_text(json.dumps(found))
        return found

    monkeypatch.setattr(commands, "lr_find", fake_lr_find)
    step_lr_find(cfg, recipe, quiet)
    step_lr_find(cfg, recipe, quiet)
    assert calls == [cfg["optim"]["lr"]]  # the second run read lr_find.json
    step_lr_find(load_config(None, TINY + ["data.root=data", "optim.lr=0.5"]), recipe, quiet)
    assert calls == [cfg["optim"]["lr"], 0.5]


def test_report_evidence_never_shows_a_python_repr():
    from trainlab.search.tune import _evidence_html

    page = _evidence_html({"ranges": [{"optim.lr": [0.001, 0.1]}, "fixed"], "best": {"lr": 0.0123456, "note": None}})
    assert "{" not in page and "[" not in page and "'" not in page and "None" not in page
    assert "optim.lr 0.001, 0.1" in page and "0.01235" in page

"""Search spaces, their validation, and the coarse-to-fine arithmetic (no training here)."""
import math
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from trainlab.cli import main
from trainlab.config import load_config
from trainlab.errors import UserError
from trainlab.search.space import (
    Param,
    check_space,
    grid_points,
    narrow,
    narrow_space,
    parse_space,
    position,
    space_from_state,
    space_state,
    suggest,
    widen_at_edges,
)
from trainlab.search.study import (
    RoundPruner,
    SlotSampler,
    TrialSeededRandomSampler,
    claim_slot,
    make_sampler,
    make_storage,
    redact,
    with_installed_driver,
)


def space(**entries):
    return parse_space({k.replace("__", "."): v for k, v in entries.items()})


# --- parsing --------------------------------------------------------------------------------
def test_every_kind_parses_nested_or_dotted():
    s = parse_space({"optim": {"lr": "loguniform(1e-4, 1e-1)", "name": "choice([sgd, adam])"},
                     "model.dropout": "uniform(0, 0.5)", "model.width": "int(16, 64)",
                     "augment.names": "choice([[], [flip, crop]])"})
    assert s["optim.lr"] == Param("optim.lr", "loguniform", 1e-4, 1e-1) and s["optim.lr"].log
    assert s["optim.name"].choices == ("sgd", "adam")
    assert s["model.dropout"] == Param("model.dropout", "uniform", 0.0, 0.5)
    assert s["model.width"] == Param("model.width", "int", 16, 64)
    assert s["augment.names"].choices == ([], ["flip", "crop"])
    assert space_from_state(space_state(s)) == s


@pytest.mark.parametrize("entry, words", [
    ({"optim.lrr": "loguniform(1e-4, 1e-1)"}, ["optim.lrr", "unknown config key", "optim.lr"]),
    ({"optim.lr": "loguniform(1e-1, 1e-4)"}, ["optim.lr", "low 0.1 > high 0.0001"]),
    ({"optim.lr": "loguniform(0, 1e-1)"}, ["optim.lr", "low > 0"]),
    ({"optim.weight_decay": "loguniform(-1, 1)"}, ["optim.weight_decay", "low > 0"]),
    ({"model.dropout": "uniform(0, 1.5)"}, ["model.dropout", "1.5"]),
    ({"optim.name": "choice([sgd, adamm])"}, ["optim.name", "adamm", "adam"]),
    ({"model.width": "int(16.5, 64)"}, ["model.width", "whole numbers"]),
    ({"model.width": "uniform(16, 64)"}, ["model.width", "int(low, high)"]),
    ({"optim.lr": "lognormal(1, 2)"}, ["optim.lr", "loguniform(...)"]),
    ({"optim.lr": "loguniform(1e-4)"}, ["optim.lr", "two numbers"]),
    ({"train.epochs": "int(1, 5)"}, ["train.epochs", "--epochs"]),
    ({}, ["empty"]),
])
def test_bad_space_is_a_user_error_naming_the_key(entry, words):
    with pytest.raises(UserError) as e:
        parse_space(entry)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_choices_are_checked_with_the_base_config():
    base = load_config(None, [])
    check_space(space(optim__lr="loguniform(1e-4, 1e-1)"), base)
    with pytest.raises(UserError, match="optim.betas"):
        check_space(parse_space({"optim.betas": "choice([[0.9, 0.999], [0.9, 1.5]])"}), base)


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_bad_space_exits_2_from_the_command_line(tmp_path):
    """The real entry point, in a subprocess: exit 2, the key named, no traceback, no work done."""
    bad = write(tmp_path / "space.yaml", "optim.lr: loguniform(0, 0.1)\n")
    result = subprocess.run([sys.executable, "-m", "trainlab", "search", "--space", bad, "--out", str(tmp_path / "s")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("trainlab: error:") and "optim.lr" in result.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("text, words", [
    ("model.widht: int(16, 64)\n", ["model.widht", "model.width"]),
    ("optim.lr: uniform(0.1, 0.01)\n", ["optim.lr", "low 0.1 > high 0.01"]),
])
def test_bad_space_exits_2_in_process(tmp_path, capsys, text, words):
    code = main(["search", "--space", write(tmp_path / "space.yaml", text), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words), err


def test_missing_space_file_exits_2(tmp_path, capsys):
    assert main(["search", "--space", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "s")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


# --- coarse to fine, as pure functions -----------------------------------------------------
def test_position_is_measured_in_decades_for_log_params():
    p = Param("optim.lr", "loguniform", 1e-4, 1e-1)
    assert position(p, 1e-4) == 0 and position(p, 1e-1) == 1
    assert position(p, 10 ** -2.5) == pytest.approx(0.5)
    assert position(Param("model.dropout", "uniform", 0.0, 0.5), 0.25) == 0.5


def test_narrow_log_param_in_decades_and_stays_inside():
    p = Param("optim.lr", "loguniform", 1e-4, 1e-1)
    q = narrow(p, [1e-3, 1e-2], pad=0.25, min_width=0.05)
    # span 1 decade, padded by 0.25 decade each side (more than 5% of 3 decades)
    assert math.log10(q.low) == pytest.approx(-3.25) and math.log10(q.high) == pytest.approx(-1.75)
    assert narrow(p, [1e-4, 2e-4]).low == 1e-4  # clipped to the old range, exactly
    one = narrow(p, [1e-3])  # a single value still leaves 5% of the old width on each side
    assert math.log10(one.high) - math.log10(one.low) == pytest.approx(2 * 0.05 * 3)


def test_narrow_int_and_choice():
    assert narrow(Param("model.width", "int", 16, 256), [60, 70]) == Param("model.width", "int", 48, 82)  # 5% of 240 each side
    c = Param("optim.name", "choice", choices=("sgd", "adam", "adamw"))
    assert narrow(c, ["adamw", "sgd"]).choices == ("sgd", "adamw")
    s = narrow_space(space(optim__lr="loguniform(1e-4, 1e-1)", model__dropout="uniform(0, 0.5)"),
                     [{"optim.lr": 1e-3, "model.dropout": 0.1}, {"optim.lr": 2e-3, "model.dropout": 0.2}])
    assert 1e-4 < s["optim.lr"].low < 1e-3 and 2e-3 < s["optim.lr"].high < 1e-1
    assert 0 < s["model.dropout"].low < 0.1 and 0.2 < s["model.dropout"].high < 0.5


def test_best_on_an_edge_widens_that_side_only():
    s = space(optim__lr="loguniform(1e-4, 1e-1)", model__dropout="uniform(0.1, 0.5)", model__width="int(16, 64)")
    new, widened = widen_at_edges(s, {"optim.lr": 0.09, "model.dropout": 0.3, "model.width": 40})
    assert widened == ["optim.lr"]
    assert new["optim.lr"].low == 1e-4 and math.log10(new["optim.lr"].high) == pytest.approx(-1 + 1.5)
    assert new["model.dropout"] == s["model.dropout"]
    new, widened = widen_at_edges(s, {"optim.lr": 1e-4, "model.dropout": 0.11, "model.width": 64})
    assert set(widened) == {"optim.lr", "model.dropout", "model.width"}
    assert math.log10(new["optim.lr"].low) == pytest.approx(-5.5)
    assert new["model.dropout"].low == 0.0  # 0.1 - 0.2 clipped at dropout's lower limit
    assert new["model.width"].high == 88


def test_no_widening_past_the_config_limits():
    s = space(model__dropout="uniform(0, 0.5)", optim__momentum="uniform(0.5, 0.99)")
    new, widened = widen_at_edges(s, {"model.dropout": 0.01, "optim.momentum": 0.6})
    assert widened == [] and new == s  # dropout cannot go below 0
    new, widened = widen_at_edges(s, {"model.dropout": 0.3, "optim.momentum": 0.985})
    assert widened == ["optim.momentum"] and 0.99 < new["optim.momentum"].high < 1.0
    load_config(None, [f"optim.momentum={new['optim.momentum'].high}"])


def test_grid_points():
    s = space(optim__lr="loguniform(1e-4, 1e-1)", model__width="int(16, 17)", optim__name="choice([sgd, adam])")
    points = grid_points(s, 4)
    assert len(points) == 4 * 2 * 2
    lrs = sorted({p["optim.lr"] for p in points})
    assert lrs[0] == 1e-4 and lrs[-1] == 1e-1
    assert [math.log10(x) for x in lrs] == pytest.approx([-4, -3, -2, -1])
    assert {p["model.width"] for p in points} == {16, 17}


# --- samplers, slots, pruner (on a real SQLite study, without training) -----------------------
@pytest.fixture
def study(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=5)
    return optuna.create_study(storage=storage, study_name="t", direction="maximize")


def sample_lrs(study, sampler, n, label="r"):
    s = space(optim__lr="loguniform(1e-4, 1e-1)")
    study.sampler = sampler
    values = []

    def objective(trial):
        claim_slot(study, trial, label, n, grace=10)
        values.append(suggest(trial, s)["optim.lr"])
        return 0.0

    study.optimize(objective, n_trials=n)
    return values


def test_random_draws_depend_only_on_seed_and_trial_number(tmp_path, study):
    a = sample_lrs(study, TrialSeededRandomSampler(seed=1), 5)
    other = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'b.db'}", 5), direction="maximize")
    assert sample_lrs(other, TrialSeededRandomSampler(seed=1), 5) == a  # reproducible
    assert len(set(a)) == 5 and all(1e-4 <= x <= 1e-1 for x in a)


def test_grid_sampler_visits_each_grid_point_once(study):
    points = dict(enumerate(grid_points(space(optim__lr="loguniform(1e-4, 1e-1)"), 4)))
    values = sample_lrs(study, make_sampler("grid", 0, points), 4)
    assert values == [1e-4, pytest.approx(1e-3), pytest.approx(1e-2), 1e-1]
    random = sample_lrs(study, make_sampler("random", 0), 4, label="r2")
    assert not set(random) & set(values)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell by hand here: no heartbeat needed
def test_a_failed_trial_frees_its_slot_and_a_full_round_gives_surplus(study):
    study.sampler = SlotSampler(TrialSeededRandomSampler(0))
    t0, t1 = study.ask(), study.ask()
    assert claim_slot(study, t0, "r", 2, 10) == 0 and claim_slot(study, t1, "r", 2, 10) == 1
    study.tell(t0, state=TrialState.FAIL)
    t2 = study.ask()
    assert claim_slot(study, t2, "r", 2, 10) == 0  # the failed trial's slot
    t3 = study.ask()
    assert claim_slot(study, t3, "r", 2, 10) == -1  # round full: surplus
    assert claim_slot(study, study.ask(), "other", 2, 10) == 0  # rounds are independent


def add_finished(study, label, curve, state=TrialState.COMPLETE):
    study.add_trial(create_trial(state=state, value=max(curve) if state == TrialState.COMPLETE else None,
                                 intermediate_values=dict(enumerate(curve, 1)), user_attrs={"round": label, "slot": 0}))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_pruner_compares_a_trial_only_with_its_own_round(study):
    study.pruner = RoundPruner(optuna.pruners.MedianPruner(n_startup_trials=3, n_min_trials=3))
    for _ in range(3):
        add_finished(study, "coarse", [0.9, 0.95])
    trial = study.ask()
    trial.set_user_attr("round", "refine")
    trial.report(0.5, 1)
    assert not trial.should_prune()  # no finished refine trials to compare with
    for _ in range(3):
        add_finished(study, "refine", [0.6, 0.8])
    assert trial.should_prune()  # below the refine median at epoch 1


def test_storage_urls():
    assert redact("postgresql://ann:secret@db:5432/optuna") == "postgresql://ann:***@db:5432/optuna"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert with_installed_driver("postgresql://u@h/db").startswith("postgresql+psycopg")
    assert with_installed_driver("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(UserError, match="cannot open storage"):
        make_storage("postgresql://nobody@127.0.0.1:1/none", 5)

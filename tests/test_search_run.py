"""Searches that train: coarse to fine, outputs, resume, grid and pruning (tiny digits subsets)."""
import csv
import json

import pytest

from tests.helpers import quiet
from trainlab.config import load_config
from trainlab.search.space import parse_space
from trainlab.search.stages import SearchOptions, run_search

TINY = ["data.subset=300", "model.width=16", "train.batch_size=32"]


def rows(out):
    with (out / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def trial_dirs(out):
    return sorted(int(p.name) for p in (out / "trials").iterdir())


@pytest.mark.slow
def test_coarse_to_fine_writes_trials_best_and_plots_and_resumes(tmp_path):
    base = load_config(None, TINY)
    space = parse_space({"optim.lr": "loguniform(1e-3, 1e-1)", "model.dropout": "uniform(0, 0.3)"})
    opts = SearchOptions(trials=3, epochs=1, refine_trials=2, refine_epochs=2, pruner="none", max_widen=1)
    out = tmp_path / "search"
    said = []
    summary = run_search(base, space, out, opts, say=said.append)
    trial_lines = [m for m in said if m.startswith("trial ")]
    assert "[coarse 1 of 3]" in trial_lines[0] and "[coarse 3 of 3]" in trial_lines[2] and "[refine 2 of 2]" in trial_lines[-1]
    assert "round done in about" in trial_lines[0] and "round done in about" not in trial_lines[2]  # time left
    page = (out / "report.html").read_text()  # search writes a report too (tune always did)
    assert "data:image/png;base64" in page and "best.yaml" in said[-1] and "report.html" in said[-1]

    table = rows(out)
    assert list(table[0]) == ["number", "state", "stage", "round", "optim.lr", "model.dropout", "value", "epochs",
                              "epochs_trained", "seconds"]
    assert [r["number"] for r in table] == [str(n) for n in trial_dirs(out)]
    assert {r["stage"] for r in table} == {"coarse", "refine"}
    assert all(r["state"] == "COMPLETE" for r in table)
    assert {r["epochs"] for r in table if r["stage"] == "refine"} == {"2"}
    for r in summary["rounds"]:
        assert r["finished"] == r["trials"]

    # refine ranges lie inside what the coarse stage searched (widened or not), and its first
    # slot retrains the best coarse configuration for longer
    coarse = [r for r in table if r["stage"] == "coarse"]
    refine = [r for r in table if r["round"] == "refine"]
    best_coarse = max(coarse, key=lambda r: (float(r["value"]), -int(r["number"])))
    assert refine[0]["optim.lr"] == best_coarse["optim.lr"] and refine[0]["model.dropout"] == best_coarse["model.dropout"]

    # best.yaml is a config `trainlab train -c` accepts, with the best refine trial's values
    cfg = load_config(out / "best.yaml")
    best = summary["best"]
    assert best["stage"] == "refine" and cfg["optim"]["lr"] == pytest.approx(best["overrides"]["optim.lr"])
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["progress"] is True and cfg["model"]["width"] == 16
    assert best["value"] == pytest.approx(max(float(r["value"]) for r in table if r["stage"] == "refine"), abs=1e-5)
    for name in ("search_optim.lr.png", "search_model.dropout.png", "learning_curves.png", "search_progress.png"):
        assert (out / "plots" / name).stat().st_size > 1000, name
    assert json.loads((out / "search.json").read_text())["trial_epochs"] == sum(int(r["epochs_trained"]) for r in table)
    imp = json.loads((out / "search.json").read_text())["importances"]
    assert imp["stage"] == "coarse" and imp["trials"] == 3 and set(imp["importances"]) == {"optim.lr", "model.dropout"}
    assert sum(imp["importances"].values()) == pytest.approx(1.0, abs=1e-6)

    # the same command again: nothing new runs, the results are the same
    before = trial_dirs(out)
    again = run_search(base, space, out, opts, say=quiet)
    assert trial_dirs(out) == before and again["best"] == summary["best"]


@pytest.mark.slow
def test_resume_runs_only_the_missing_trials(tmp_path):
    base = load_config(None, TINY)
    space = parse_space({"optim.lr": "loguniform(1e-3, 1e-1)"})
    out = tmp_path / "search"
    run_search(base, space, out, SearchOptions(trials=2, epochs=1, stages="single"), say=quiet)
    first = {n: (out / "trials" / str(n) / "summary.json").stat().st_mtime_ns for n in trial_dirs(out)}
    run_search(base, space, out, SearchOptions(trials=3, epochs=1, stages="single"), say=quiet)
    assert trial_dirs(out) == [0, 1, 2]
    assert {n: (out / "trials" / str(n) / "summary.json").stat().st_mtime_ns for n in (0, 1)} == first
    assert len(rows(out)) == 3


@pytest.mark.slow
def test_grid_visits_every_point_and_a_hopeless_trial_is_pruned(tmp_path):
    """Grid slots run in order: three good rates finish, then lr=1e-6 is below their median after
    epoch 1 and is stopped there."""
    base = load_config(None, TINY)
    space = parse_space({"optim.lr": "choice([0.01, 0.02, 0.03, 0.000001])"})
    out = tmp_path / "grid"
    summary = run_search(base, space, out, SearchOptions(sampler="grid", epochs=2, pruner="median"), say=quiet)
    table = rows(out)
    assert [float(r["optim.lr"]) for r in table] == [0.01, 0.02, 0.03, 1e-6]
    assert [r["state"] for r in table] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert table[-1]["epochs_trained"] == "1" and summary["counts"]["pruned"] == 1
    stopped = json.loads((out / "trials" / "3" / "summary.json").read_text())
    assert stopped["epochs"] == 1 and stopped["stop_reason"].startswith("pruned after epoch 1")


@pytest.mark.slow
def test_the_docs_space_with_choices_runs_coarse_to_fine_and_resumes(tmp_path):
    """docs/search.md's own space.yaml (a choice of optimisers and of augmentations): the refine
    round narrows the choices to the best coarse trials' values. Optuna fixes a parameter's
    distribution per study, so a narrowed choice must not reuse the coarse name (it once crashed
    with 'CategoricalDistribution does not support dynamic value space')."""
    import re
    from pathlib import Path

    from trainlab.search.space import load_space

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "search.md").read_text()
    block = re.search(r"```yaml\n# space.yaml[^\n]*\n(.*?)```", doc, re.S).group(1)
    shipped = (root / "examples" / "space.yaml").read_text().split("\n", 1)[1]
    assert shipped == block, "examples/space.yaml must be the space docs/search.md shows"
    space = load_space(root / "examples" / "space.yaml")
    assert space["optim.name"].kind == "choice" and space["augment.names"].kind == "choice"

    base = load_config(None, TINY + ["data.subset=200"])
    opts = SearchOptions(trials=4, epochs=1, refine_trials=2, refine_epochs=1, pruner="none", max_widen=0, top_k=2)
    out = tmp_path / "search"
    summary = run_search(base, space, out, opts, say=quiet)
    table = rows(out)
    assert {r["stage"] for r in table} == {"coarse", "refine"}
    assert all(r["state"] == "COMPLETE" for r in table)
    coarse_names = {r["optim.name"] for r in table if r["stage"] == "coarse"}
    assert {r["optim.name"] for r in table if r["stage"] == "refine"} <= coarse_names
    assert load_config(out / "best.yaml")["optim"]["name"] == summary["best"]["overrides"]["optim.name"]
    # re-running resumes the finished study without a crash and without new trials
    before = trial_dirs(out)
    run_search(base, space, out, opts, say=quiet)
    assert trial_dirs(out) == before


def test_fanova_importances_find_the_hyperparameter_that_matters():
    """Validation accuracy that depends on the rate only: fANOVA gives the rate nearly all the variance."""
    import math
    import random

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from trainlab.search.results import importances

    rng = random.Random(0)
    dists = {"optim.lr": FloatDistribution(1e-4, 1e-1, log=True), "model.dropout": FloatDistribution(0.0, 0.5)}
    trials = []
    for _ in range(30):
        lr, drop = 10 ** rng.uniform(-4, -1), rng.uniform(0, 0.5)
        t = create_trial(params={"optim.lr": lr, "model.dropout": drop}, distributions=dists,
                         value=1 - (math.log10(lr) + 2.5) ** 2 / 10, user_attrs={"stage": "coarse"})
        trials.append(t)
    found = importances(trials, "coarse")
    assert found["trials"] == 30 and found["importances"]["optim.lr"] > 0.9
    assert importances(trials[:2], "coarse") is None and importances(trials, "refine") is None
    assert optuna.trial.TrialState.COMPLETE == trials[0].state

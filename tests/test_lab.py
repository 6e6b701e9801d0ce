"""The lab: every experiment runs from the CLI (--quick) and writes its table and plots; the
measuring helpers do what their docstrings say."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import trainlab.report
from trainlab.cli import main
from trainlab.lab import EXPERIMENTS
from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    graded,
    median,
    ratio,
    steps_to_target,
)
from trainlab.lab.optimizers import SURFACES, run_path, steps_within

EXPECTED = ["activations", "adam-sgd", "adaptive", "batch-size", "batchnorm", "dropout", "dropout-training", "ensemble",
            "fine-tuning", "init-depth", "init-stats", "lbfgs", "optimizers", "preprocessing", "regularization", "schedules", "search-budget",
            "sigmoid-centring", "test-time", "whitening"]


@pytest.fixture
def fast_runs(monkeypatch):
    """No per-run curve PNGs: the lab's own plots are what is checked here, the run reports are
    tested in test_train/test_report (one torch thread comes from conftest)."""
    monkeypatch.setattr(trainlab.report, "plot_training_curves", lambda records, plots, cfg=None: [])
    monkeypatch.setattr(trainlab.report, "plot_confusion", lambda *args, **kwargs: None)
    yield


def test_every_issue_experiment_is_registered():
    assert sorted(EXPERIMENTS.names()) == EXPECTED


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_experiment_runs_quick_from_the_cli(name, tmp_path, fast_runs, capsys):
    out = tmp_path / name
    assert main(["lab", name, "--quick", "--out", str(out)]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == name and results["quick"] is True
    assert results["rows"] and set(results["columns"]) <= set().union(*results["rows"])
    assert results["claims"]
    for c in results["claims"]:
        assert c["claim"] and c["source"] and c["measured"]
        assert c["verdict"] in (AGREES, PARTLY, DISAGREES)
    markdown = (out / "results.md").read_text()
    assert "| " + " | ".join(results["columns"]) + " |" in markdown and "## The lecture's claims" in markdown
    assert results["plots"]
    for plot in results["plots"]:
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
        assert f"]({plot})" in markdown
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and page.count("data:image/png;base64,") >= len(results["plots"])
    printed = capsys.readouterr().out
    assert "measured:" in printed and "(quick sizes)]" in printed and "smoke-test sizes" in printed  # not firm verdicts
    assert "Quick run (--quick)" in page
    if name in ("activations", "regularization"):  # the setup names the images it measured on
        assert ("8x8 digits images" if name == "activations" else "the cutout hole is 4x4 px") in results["setup"]


@pytest.mark.slow
def test_lab_list_from_the_installed_command():
    done = subprocess.run([sys.executable, "-m", "trainlab", "lab", "list"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == EXPERIMENTS.names()


def test_bad_input_is_refused_before_any_work(tmp_path, capsys):
    assert main(["lab", "dropuot", "--out", str(tmp_path / "a")]) == 2
    assert "did you mean: dropout" in capsys.readouterr().err
    assert main(["lab", "dropout", "optim.lr=-1", "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text("{}")
    assert main(["lab", "dropout", "--out", str(tmp_path / "c")]) == 2
    assert "already holds lab results" in capsys.readouterr().err


# --- the helpers -----------------------------------------------------------------------------------

def test_steps_to_target_uses_the_trailing_mean():
    errors = [1.0] * 5 + [0.0] * 5
    assert steps_to_target(errors, 0.4, window=2) == 7  # steps 6, 7: mean 0 (steps 5, 6: 0.5)
    assert steps_to_target(errors, 0.4, window=4) == 8  # steps 5..8: 0.25 (steps 4..7: 0.5)
    assert steps_to_target([1.0] * 10, 0.5, window=3) is None


def test_ratio_median_and_grading_of_never():
    assert ratio(6, 2) == 3 and ratio(None, 2) == math.inf and ratio(2, None) is None
    assert median([3, None, 1]) == 3 and median([None, None, 1]) is None and median([1.0, 2.0]) == 1.5
    assert graded(3, 2, 1) == AGREES and graded(1.5, 2, 1) == PARTLY and graded(0.5, 2, 1) == DISAGREES
    assert graded(None, 2, 1) == DISAGREES and graded(math.inf, 2, 1) == AGREES


def test_sgd_path_on_the_taco_shell_is_gradient_descent():
    """x_{t+1} = x_t − lr ∇f: on f = ½(0.1 x² + 10 y²) each coordinate shrinks by (1 − lr·curvature)."""
    taco = next(s for s in SURFACES if s.name == "taco")
    path, gaps = run_path(taco, "sgd", 0.05, steps=20)
    t = np.arange(21)
    np.testing.assert_allclose(path[:, 0], taco.start[0] * (1 - 0.05 * 0.1) ** t, rtol=1e-10)
    np.testing.assert_allclose(path[:, 1], taco.start[1] * (1 - 0.05 * 10) ** t, rtol=1e-10)
    assert gaps[-1] < gaps[0]


def test_steps_within_needs_the_path_to_stay():
    gaps = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    assert steps_within(gaps, 0.5) == 3  # the dip at step 1 does not count: it left again
    assert steps_within(np.array([1.0, 1.0]), 0.5) is None


def test_mc_dropout_average_matches_the_scaled_pass_for_a_linear_head():
    """With one dropout layer right before a linear layer, E_mask[logits] is exactly the eval-mode logits."""
    from trainlab.lab.dropout import expected_train_output
    from trainlab.regularization import Dropout

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), Dropout(0.5), torch.nn.Linear(64, 3))
    train_mean, test_mean = expected_train_output(model, torch.randn(32, 4), passes=500)
    assert train_mean == pytest.approx(test_mean, rel=0.03)


def test_docs_coverage_table_is_generated_from_the_summary_and_the_headline_matches():
    """docs/lab.md's coverage table is what trainlab.lab.coverage makes of the page's summary rows,
    every registered experiment has claims there, and README and lab/__init__ state its totals."""
    from pathlib import Path

    import trainlab.lab
    from trainlab.lab.coverage import claims_in_summary, coverage_markdown, coverage_rows

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "lab.md").read_text()
    assert coverage_markdown(page) in page
    claims = claims_in_summary(page)
    assert {e for e, _, _ in claims} == set(EXPERIMENTS.names())
    total = coverage_rows(claims)[-1]
    headline = f"{total['claims']} of the lectures' claims with a verdict ({total[AGREES]} agree, {total[PARTLY]}"
    assert headline in " ".join((root / "README.md").read_text().split())
    assert f"{total['claims']} claims with verdicts ({total[AGREES]} agree" in " ".join(trainlab.lab.__doc__.split())


def test_coverage_counts_verdicts_per_experiment():
    from trainlab.lab.coverage import claims_in_summary, coverage_rows, summary_rows

    result = {"experiment": "x", "claims": [{"claim": "a b", "verdict": AGREES}, {"claim": "c d", "verdict": DISAGREES}]}
    rows = coverage_rows(claims_in_summary(summary_rows(result)))
    assert rows[0] == {"experiment": "[x](#x)", "claims": 2, AGREES: 1, PARTLY: 0, DISAGREES: 1}
    assert rows[-1]["claims"] == 2
def test_batchnorm_grid_labels_diverged_cells(tmp_path, monkeypatch):
    """A diverged run is scored 0 but drawn as 'diverged', not as an accuracy of 0.00."""
    import matplotlib.axes

    from trainlab.lab.batchnorm import plot_grid

    texts = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, x, y, s, **kw: texts.append(s) or original(self, x, y, s, **kw))
    grid = {(n, lr, s): 0.9 for n in ("none", "batch") for lr in (0.1, 1.0) for s in (0.01,)}
    grid["none", 1.0, 0.01] = 0.0
    plot_grid(grid, [0.1, 1.0], [0.01], tmp_path / "g.png", {("none", 1.0, 0.01)})
    assert texts.count("diverged") == 1 and "0.00" not in texts


def test_randomness_regularisers_are_graded_against_their_own_baseline():
    """Fractional pooling is compared with the convnet without regulariser, DropConnect with the
    same mlp without it, stochastic depth with the same ResNet without it; a narrower gap and a better test accuracy
    agree, one of the two is partly."""
    from trainlab.lab.regularization import RANDOMNESS_CLAIMS, randomness_claim

    rows = {n: {"gap": 0.2, "test_acc": 0.8} for n in ("none", "mlp", "resnet-8")}
    rows["mlp, DropConnect 0.5"] = {"gap": 0.1, "test_acc": 0.85}
    rows["fractional pooling"] = {"gap": 0.1, "test_acc": 0.75}
    rows["resnet-8, stochastic depth 0.5"] = {"gap": 0.3, "test_acc": 0.7}
    verdicts = {n: randomness_claim(rows, n)["verdict"] for n in RANDOMNESS_CLAIMS}
    assert verdicts == {"mlp, DropConnect 0.5": AGREES, "fractional pooling": PARTLY,
                        "resnet-8, stochastic depth 0.5": DISAGREES}


def test_regularisers_scale_crop_and_cutout_to_the_image_side():
    """1 px crops and a 4x4 hole on 8x8 digits (the sizes the digits results were measured with),
    3 px and 14x14 on 28x28 images."""
    from trainlab.lab.regularization import regularisers

    for side, crop, hole in ((8, 1, 4), (28, 3, 14)):
        r = regularisers(side)
        assert f"augment.crop_padding={crop}" in r["augmentation (crop)"]
        assert f"augment.cutout_size={hole}" in r["cutout"]


@pytest.mark.slow
def test_ensemble_setup_names_the_model_and_data_the_overrides_chose(tmp_path, fast_runs):
    from trainlab.lab.common import run_experiment

    record = run_experiment("ensemble", tmp_path / "e", quick=True, overrides=["model.name=convnet", "model.depth=2"],
                            say=lambda msg: None)
    assert record["setup"].startswith("trainlab's convnet (depth 2, width 16, norm none, dropout 0.2) on ")
    assert "digits training images" in record["setup"] and "mlp" not in record["setup"]

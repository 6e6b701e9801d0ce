"""Sanity checks (`trainlab check`), the gradient checker, and the learning-rate range test."""
import json
import math

import pytest
import torch
from torch import nn

from tests.helpers import quiet
from trainlab.babysit import checks
from trainlab.babysit.gradcheck import gradcheck_module, relative_error
from trainlab.babysit.lr_find import analyse, smooth, sweep_rates
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.data import load_data

# --- trainlab check --------------------------------------------------------------------------------

def test_check_passes_on_the_default_config(tmp_path, capsys):
    assert main(["check", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "checks.json").read_text())
    assert [r["name"] for r in results] == ["initial_loss", "loss_rises_with_regularisation", "overfit_small_sample",
                                            "gradient_check"]
    for r in results:
        assert {"name", "passed", "value", "expected", "advice"} <= set(r) and r["passed"]
    assert abs(results[0]["value"] - math.log(10)) <= checks.INITIAL_LOSS_TOLERANCE
    assert results[1]["value"] > results[0]["value"]
    assert results[2]["value"] >= checks.OVERFIT_TARGET
    assert results[3]["value"] < 1e-5 and results[3]["details"]["coordinates"] >= 12
    assert "initial_loss" in capsys.readouterr().out  # the table


def test_check_fails_when_the_last_layer_makes_the_initial_loss_far_from_ln_c(tmp_path, capsys):
    assert main(["check", "model.head_scale=100", "--out", str(tmp_path)]) == 1
    results = {r["name"]: r for r in json.loads((tmp_path / "checks.json").read_text())}
    assert not results["initial_loss"]["passed"] and results["initial_loss"]["value"] > 10 * math.log(10)
    assert "head_scale" in results["initial_loss"]["advice"]
    assert "initial_loss FAILED" in capsys.readouterr().out  # the reason is printed


def test_overfit_check_fails_and_says_why_when_the_rate_is_far_too_low():
    cfg = load_config(None, ["optim.lr=1e-7", "model.width=32"])
    result = checks.check_overfit_small_sample(cfg, load_data(cfg), quiet)
    assert not result["passed"] and "LR too low" in result["advice"]


# --- gradient check --------------------------------------------------------------------------------

class SquareWrongBackward(torch.autograd.Function):
    """y = x², with a deliberately wrong backward (x instead of 2x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x


class Square(nn.Module):
    def __init__(self, fn=None):
        super().__init__()
        self.linear, self.fn = nn.Linear(5, 3), fn

    def forward(self, x):
        y = self.linear(x)
        return self.fn.apply(y) if self.fn else y * y


def test_gradcheck_catches_a_wrong_backward_and_passes_a_right_one():
    x = torch.randn(4, 5)
    good = gradcheck_module(Square(), (x,))
    assert [r["name"] for r in good] == ["linear.weight", "linear.bias", "input[0]"]
    assert all(r["passed"] and r["checked"] >= 2 and r["max_relative_error"] < 1e-8 for r in good)
    bad = gradcheck_module(Square(SquareWrongBackward), (x,))
    assert not any(r["passed"] for r in bad)
    assert all(r["max_relative_error"] == pytest.approx(0.5, abs=1e-6) for r in bad)  # |x − 2x| / |2x|


def test_gradcheck_counts_kinks_instead_of_failing_and_leaves_the_module_alone():
    """A ReLU whose input is exactly 0 (a zero-initialised layer): the centred difference is half
    of either one-sided slope there, for every step size."""
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    nn.init.zeros_(net[0].weight)
    nn.init.zeros_(net[0].bias)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    reports = {r["name"]: r for r in gradcheck_module(net, (torch.randn(3, 4),))}
    assert reports["0.bias"]["kinks"] > 0 and all(r["passed"] for r in reports.values())
    assert all(torch.equal(before[k], v) and v.dtype == torch.float32 for k, v in net.state_dict().items())
    assert relative_error(1.0, 1.0) == 0 and relative_error(0.0, 0.0) == 0 and relative_error(2.0, 1.0) == 0.5


# --- lr-find ---------------------------------------------------------------------------------------

def test_sweep_and_smoothing_follow_their_formulas():
    rates = sweep_rates(1e-6, 1.0, 7)
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0)
    assert all(b / a == pytest.approx(10.0) for a, b in zip(rates, rates[1:]))
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # bias correction: no pull towards 0
    assert smooth([1.0, 3.0], beta=0.5) == pytest.approx([1.0, (0.5 * 0.5 + 0.5 * 3.0) / (1 - 0.5**2)])
    assert math.isnan(smooth([1.0, float("nan"), 1.0])[-1])


def test_range_test_verdicts_on_typical_curves():
    lrs = sweep_rates(1e-6, 1.0, 61)
    curve = [2.3 if lr < 1e-3 else (2.3 * (1e-3 / lr) ** 0.3 if lr < 1e-1 else 0.6 * (lr / 1e-1) ** 2) for lr in lrs]
    ok = analyse(lrs, curve, configured_lr=1e-2)
    assert 1e-3 < ok["suggested_lr"] < 1e-1 and "falls" in ok["verdict"]
    assert "rate too low" in analyse(lrs, curve, configured_lr=1e-5)["verdict"]
    assert "rate too high" in analyse(lrs, curve, configured_lr=0.5)["verdict"]
    assert "loss barely changes" in analyse(lrs, [2.3] * 61, configured_lr=1e-2)["verdict"]


def test_lr_find_on_digits_suggests_a_sane_rate_and_writes_json_and_plot(tmp_path):
    out = tmp_path / "lr"
    assert main(["lr-find", "model.width=64", "--out", str(out)]) == 0
    result = json.loads((out / "lr_find.json").read_text())
    assert 1e-4 <= result["suggested_lr"] <= 1e-1  # Adam on digits
    assert len(result["lrs"]) == len(result["losses"]) == len(result["smoothed"]) > 20
    assert all(b > a for a, b in zip(result["lrs"], result["lrs"][1:]))
    assert (out / "plots" / "lr_find.png").stat().st_size > 5000
    assert not (out / "checkpoints").exists() and not (out / "summary.json").exists()  # not a training run

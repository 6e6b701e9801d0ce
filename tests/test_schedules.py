"""Every schedule against its closed form, through the pure function, the LambdaLR and resume."""
import io
import math

import pytest
import torch
from torch import nn

from trainlab.config import defaults
from trainlab.optim import build_optimizer
from trainlab.schedules import (
    SCHEDULES,
    build_scheduler,
    cycle_end_steps,
    schedule_curve,
)

LR = 0.1


def config(name, epochs=10, **schedule):
    cfg = defaults()
    cfg["optim"].update({"name": "sgd", "lr": LR})
    cfg["train"]["epochs"] = epochs
    cfg["schedule"].update({"name": name, "warmup_epochs": 0.0, **schedule})
    return cfg


def optimizer(cfg, lr_multipliers=None):
    torch.manual_seed(0)
    return build_optimizer(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), cfg, lr_multipliers)


def lrs_through_lambdalr(cfg, steps_per_epoch, steps=None, group=0):
    """The rate each update actually used, read from the optimiser: step, then sched.step()."""
    opt = optimizer(cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    out = []
    for _ in range(steps if steps is not None else cfg["train"]["epochs"] * steps_per_epoch):
        out.append(opt.param_groups[group]["lr"])
        opt.step()
        sched.step()
    return out


def check(cfg, steps_per_epoch, closed_form, at):
    """The curve, and the LambdaLR's rates, equal LR·closed_form(t) at the chosen updates (t in epochs)."""
    curve = schedule_curve(cfg, steps_per_epoch)
    seen = lrs_through_lambdalr(cfg, steps_per_epoch)
    assert len(curve) == len(seen) == cfg["train"]["epochs"] * steps_per_epoch
    for k in at:
        expected = LR * closed_form(k / steps_per_epoch)
        assert curve[k] == pytest.approx(expected, rel=1e-12, abs=1e-15), k
        assert seen[k] == pytest.approx(expected, rel=1e-12, abs=1e-15), k
    return curve


def test_registry_names():
    assert set(SCHEDULES.names()) == {
        "constant", "step", "exponential", "inv_t", "cosine", "linear", "inv_sqrt", "sgdr", "cyclic", "onecycle",
    }


def test_constant():
    assert set(check(config("constant"), 7, lambda t: 1.0, [0, 5, 69])) == {LR}


def test_cosine_is_the_lecture_formula():
    T = 10
    curve = check(config("cosine", T), 7, lambda t: 0.5 * (1 + math.cos(t * math.pi / T)), [0, 1, 13, 35, 50, 69])
    assert curve[35] == pytest.approx(LR / 2)  # halfway


def test_cosine_with_floor():
    T = 10
    check(config("cosine", T, min_scale=0.1), 7, lambda t: 0.1 + 0.9 * 0.5 * (1 + math.cos(t * math.pi / T)), [0, 20, 69])


def test_linear_is_the_lecture_formula():
    T = 10
    check(config("linear", T), 7, lambda t: 1 - t / T, [0, 7, 35, 69])
    check(config("linear", T, min_scale=0.2), 7, lambda t: 0.2 + 0.8 * (1 - t / T), [0, 35, 69])


def test_step_multiplies_by_gamma_at_each_milestone():
    # milestones as fractions of T: epochs 3, 5.3 and 7 of 10; in floats 0.53 * 10 = 5.300000000000001
    # while update 53 is at 53 / 10 = 5.3, and the decay must still happen at update 53
    cfg = config("step", 10, milestones=[0.3, 0.53, 0.7], gamma=0.1)
    curve = schedule_curve(cfg, 10)
    assert curve[29] == pytest.approx(LR) and curve[30] == pytest.approx(LR * 0.1)
    assert curve[52] == pytest.approx(LR * 0.1) and curve[53] == pytest.approx(LR * 0.01)
    assert curve[69] == pytest.approx(LR * 0.01) and curve[70] == pytest.approx(LR * 0.001)
    check(cfg, 10, lambda t: 0.1 ** sum(t >= m for m in (3, 5.3, 7)), [0, 29, 30, 45, 60, 71, 99])


def test_exponential_and_inverse_t():
    check(config("exponential", decay=0.3), 4, lambda t: math.exp(-0.3 * t), [0, 1, 17, 39])
    check(config("inv_t", decay=0.3), 4, lambda t: 1 / (1 + 0.3 * t), [0, 1, 17, 39])


def test_inverse_sqrt():
    # no warm-up: t0 = 1 epoch; flat before it, alpha_0 / sqrt(t) after it
    curve = check(config("inv_sqrt"), 5, lambda t: 1 / math.sqrt(max(t, 1.0)), [0, 3, 5, 20, 45, 49])
    assert curve[20] == pytest.approx(LR / 2)  # t = 4
    # warm-up of 2 epochs: t0 = 2, so the rate is alpha_0 at t0 and alpha_0 * sqrt(2 / t) after
    cfg = config("inv_sqrt", warmup_epochs=2.0)
    check(cfg, 5, lambda t: min(1.0, (t * 5 + 1) / 10) * math.sqrt(2.0 / max(t, 2.0)), [0, 4, 9, 10, 40, 49])
    assert schedule_curve(cfg, 5)[40] == pytest.approx(LR / 2)  # t = 8


def test_warmup_is_linear_from_zero_and_first_update_is_not_wasted():
    cfg = config("constant", warmup_epochs=0.5)  # W = 5 updates at 10 per epoch
    curve = schedule_curve(cfg, 10)
    assert curve[:7] == pytest.approx([LR * k / 5 for k in (1, 2, 3, 4, 5)] + [LR, LR])
    T = 10
    check(config("cosine", T, warmup_epochs=1.0), 10,
          lambda t: min(1.0, (t * 10 + 1) / 10) * 0.5 * (1 + math.cos(math.pi * t / T)), [0, 4, 9, 10, 55])


def test_sgdr_restarts_at_cycle_ends_with_cycle_mult():
    cfg = config("sgdr", 7, cycle_epochs=1.0, cycle_mult=2.0)  # cycles [0,1), [1,3), [3,7)

    def closed(t):
        start, length = (0, 1) if t < 1 else (1, 2) if t < 3 else (3, 4)
        return 0.5 * (1 + math.cos(math.pi * (t - start) / length))

    curve = check(cfg, 10, closed, [0, 5, 9, 10, 20, 29, 30, 50, 69])
    for restart in (10, 30):
        assert curve[restart] == pytest.approx(LR) and curve[restart - 1] < 0.03 * LR
    assert curve[20] == pytest.approx(LR / 2)
    assert cycle_end_steps(cfg, 10) == [10, 30, 70]
    assert cycle_end_steps(config("sgdr", 8, cycle_epochs=1.0, cycle_mult=2.0), 10) == [10, 30, 70]  # cut-off 4th cycle
    assert cycle_end_steps(config("sgdr", 6, cycle_epochs=2.0, cycle_mult=1.0), 3) == [6, 12, 18]
    # float t = n / 10 sits just below cycle boundaries such as 0.3 / 0.1 = 2.9999999999999996
    assert cycle_end_steps(config("sgdr", 1, cycle_epochs=0.1), 10) == list(range(1, 11))
    assert schedule_curve(config("sgdr", 1, cycle_epochs=0.1), 10) == pytest.approx([LR] * 10)


def test_cyclic_is_a_triangle_starting_low():
    cfg = config("cyclic", 7, cycle_epochs=2.0, min_scale=0.1)

    def closed(t):
        u = (t % 2.0) / 2.0
        return 0.1 + 0.9 * (1 - abs(2 * u - 1))

    curve = check(cfg, 10, closed, [0, 5, 10, 15, 20, 30, 69])
    assert curve[0] == pytest.approx(0.1 * LR) and curve[10] == pytest.approx(LR) and curve[20] == pytest.approx(0.1 * LR)
    assert curve[5] == pytest.approx(0.55 * LR)
    assert cycle_end_steps(cfg, 10) == [20, 40, 60]
    assert cycle_end_steps(config("cyclic", 3, cycle_epochs=0.3), 10) == list(range(3, 31, 3))


def test_onecycle_peak_position():
    T = 10
    cfg = config("onecycle", T, peak_fraction=0.3)

    def closed(t):
        if t < 3:
            return 0.04 + 0.96 * t / 3
        end = 0.04e-4
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * (t - 3) / 7))

    curve = check(cfg, 10, closed, [0, 15, 29, 30, 31, 65, 99])
    assert max(range(len(curve)), key=curve.__getitem__) == 30 and curve[30] == pytest.approx(LR)
    assert curve[0] == pytest.approx(0.04 * LR) and curve[-1] < 1e-3 * LR
    assert all(a < b for a, b in zip(curve[:30], curve[1:31])) and all(a > b for a, b in zip(curve[30:], curve[31:]))
    assert schedule_curve(config("onecycle", T, peak_fraction=0.3, min_scale=0.1), 10)[0] == pytest.approx(0.1 * LR)


def test_cycle_end_steps_empty_for_schedules_without_cycles():
    assert cycle_end_steps(config("cosine"), 10) == []


def test_scheduler_scales_every_group_by_its_multiplier_and_batch_scaling():
    cfg = config("cosine", 4)
    cfg["optim"].update({"batch_scaling": True, "reference_batch": 64})
    cfg["train"]["batch_size"] = 128
    opt = optimizer(cfg, lr_multipliers={"0": 0.1})
    sched = build_scheduler(opt, cfg, 5)
    curve = schedule_curve(cfg, 5)
    assert curve[0] == pytest.approx(2 * LR)
    for k in range(20):
        rates = {g["name"]: g["lr"] for g in opt.param_groups}
        assert rates["decay"] == pytest.approx(curve[k]) and rates["decay:0"] == pytest.approx(0.1 * curve[k])
        opt.step()
        sched.step()


@pytest.mark.parametrize("optimizer_state_first", [True, False])
def test_resume_from_state_dict_continues_identically(optimizer_state_first):
    cfg = config("sgdr", 6, cycle_epochs=1.0, cycle_mult=2.0, warmup_epochs=0.5)
    cfg["optim"]["name"] = "momentum"
    spe, stop, total = 8, 13, 48
    reference = lrs_through_lambdalr(cfg, spe, total)

    opt = optimizer(cfg)
    sched = build_scheduler(opt, cfg, spe)
    for _ in range(stop):
        opt.step()
        sched.step()
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # a checkpoint never runs code

    opt2 = optimizer(cfg)
    if optimizer_state_first:  # the scheduler's constructor resets the lr; loading must undo that
        opt2.load_state_dict(saved["optimizer"])
        sched2 = build_scheduler(opt2, cfg, spe)
    else:
        sched2 = build_scheduler(opt2, cfg, spe)
        opt2.load_state_dict(saved["optimizer"])
    sched2.load_state_dict(saved["scheduler"])
    resumed = []
    for _ in range(stop, total):
        resumed.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert resumed == reference[stop:]

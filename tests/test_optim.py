"""Each optimiser against the lecture's NumPy update rule, step by step, on an ill-conditioned
quadratic f(x) = ½ xᵀAx, A = diag(1, 50), in float64."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from trainlab.config import defaults
from trainlab.errors import UserError
from trainlab.optim import OPTIMIZERS, build_optimizer, is_full_batch, param_groups

A = np.diag([1.0, 50.0])
X0 = np.array([1.0, 1.0])
STEPS = 50
TOL = 1e-6


def compute_gradient(x):
    return A @ x


class Point(nn.Module):
    """The 2-D point x as the only parameter of a model, so the optimiser comes from build_optimizer."""

    def __init__(self):
        super().__init__()
        self.x = nn.Parameter(torch.tensor(X0, dtype=torch.float64))

    def forward(self):
        return 0.5 * self.x @ torch.tensor(A) @ self.x


def config(name, **optim):
    cfg = defaults()
    cfg["optim"].update({"name": name, "weight_decay": 0.0, **optim})
    return cfg


def torch_path(cfg, steps=STEPS):
    model = Point()
    opt = build_optimizer(model, cfg)
    path = []
    for _ in range(steps):
        opt.zero_grad()
        model().backward()
        opt.step()
        path.append(model.x.detach().numpy().copy())
    return np.array(path)


def assert_same_path(ours, reference):
    assert ours.shape == reference.shape
    assert np.max(np.abs(ours - reference)) <= TOL
    assert np.max(np.abs(reference[-1] - X0)) > 1e-2  # the test moved far enough to mean something


# --- the lecture's NumPy code, verbatim apart from returning the path -------------------------------


def numpy_sgd(learning_rate, steps=STEPS):
    x, path = X0.copy(), []
    for _ in range(steps):
        dx = compute_gradient(x)
        x -= learning_rate * dx
        path.append(x.copy())
    return np.array(path)


def numpy_momentum_v1(learning_rate, rho, steps=STEPS):
    x, path = X0.copy(), []
    vx = 0
    for _ in range(steps):
        dx = compute_gradient(x)
        vx = rho * vx + dx
        x -= learning_rate * vx
        path.append(x.copy())
    return np.array(path)


def numpy_momentum_v2(learning_rate, rho, steps=STEPS):
    x, path = X0.copy(), []
    vx = 0
    for _ in range(steps):
        dx = compute_gradient(x)
        vx = rho * vx - learning_rate * dx
        x += vx
        path.append(x.copy())
    return np.array(path)


def numpy_nesterov(learning_rate, rho, steps=STEPS):
    x, path = X0.copy(), []
    v = 0
    for _ in range(steps):
        dx = compute_gradient(x)
        old_v = v
        v = rho * v - learning_rate * dx
        x += -rho * old_v + (1 + rho) * v
        path.append(x.copy())
    return np.array(path)


def numpy_adagrad(learning_rate, eps=1e-7, steps=STEPS):
    x, path = X0.copy(), []
    grad_squared = 0
    for _ in range(steps):
        dx = compute_gradient(x)
        grad_squared += dx * dx
        x -= learning_rate * dx / (np.sqrt(grad_squared) + eps)
        path.append(x.copy())
    return np.array(path)


def numpy_rmsprop(learning_rate, decay_rate, eps=1e-7, steps=STEPS):
    x, path = X0.copy(), []
    grad_squared = 0
    for _ in range(steps):
        dx = compute_gradient(x)
        grad_squared = decay_rate * grad_squared + (1 - decay_rate) * dx * dx
        x -= learning_rate * dx / (np.sqrt(grad_squared) + eps)
        path.append(x.copy())
    return np.array(path)


def numpy_adam(learning_rate, beta1, beta2, eps=1e-7, l2=0.0, decoupled=0.0, steps=STEPS):
    """Full-form Adam; ``l2`` adds wd·x to dx (Adam + L2), ``decoupled`` shrinks x first (AdamW)."""
    x, path = X0.copy(), []
    first_moment = 0
    second_moment = 0
    for t in range(1, steps + 1):
        dx = compute_gradient(x) + l2 * x
        x -= learning_rate * decoupled * x
        first_moment = beta1 * first_moment + (1 - beta1) * dx
        second_moment = beta2 * second_moment + (1 - beta2) * dx * dx
        first_unbias = first_moment / (1 - beta1 ** t)
        second_unbias = second_moment / (1 - beta2 ** t)
        x -= learning_rate * first_unbias / (np.sqrt(second_unbias) + eps)
        path.append(x.copy())
    return np.array(path)


# --- the tests ---------------------------------------------------------------------------------------


def test_registry_has_every_lecture_optimiser():
    assert set(OPTIMIZERS.names()) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "lbfgs",
                                     "adam_uncorrected"}  # the slides' "Adam (almost)", a probe for the lab


def test_sgd_matches_lecture():
    assert_same_path(torch_path(config("sgd", lr=0.01)), numpy_sgd(0.01))


def test_momentum_both_formulations_match_torch():
    ours = torch_path(config("momentum", lr=0.005, momentum=0.9))
    v1, v2 = numpy_momentum_v1(0.005, 0.9), numpy_momentum_v2(0.005, 0.9)
    assert np.max(np.abs(v1 - v2)) <= 1e-12  # "equivalent - give same sequence of x"
    assert_same_path(ours, v1)
    assert_same_path(ours, v2)
    assert np.max(np.abs(ours - numpy_sgd(0.005))) > 1e-2  # momentum really is on


def test_nesterov_matches_change_of_variables_form():
    ours = torch_path(config("nesterov", lr=0.005, momentum=0.9))
    assert_same_path(ours, numpy_nesterov(0.005, 0.9))
    assert np.max(np.abs(ours - numpy_momentum_v1(0.005, 0.9))) > 1e-3  # differs from plain momentum


@pytest.mark.parametrize("eps", [1e-7, 0.5])
def test_adagrad_matches_lecture(eps):
    # eps=0.5 makes eps placement visible: sqrt(g2) + eps, not sqrt(g2 + eps)
    assert_same_path(torch_path(config("adagrad", lr=0.1, eps=eps)), numpy_adagrad(0.1, eps))


@pytest.mark.parametrize("eps", [1e-7, 0.5])
def test_rmsprop_matches_lecture(eps):
    assert_same_path(torch_path(config("rmsprop", lr=0.01, alpha=0.9, eps=eps)), numpy_rmsprop(0.01, 0.9, eps))


def test_rmsprop_uses_the_configured_decay_rate():
    ours = torch_path(config("rmsprop", lr=0.01, alpha=0.9, eps=1e-7))
    assert np.max(np.abs(ours - numpy_rmsprop(0.01, 0.99))) > 1e-3


@pytest.mark.parametrize("eps", [1e-7, 0.5])
def test_adam_matches_lecture_with_bias_correction(eps):
    ours = torch_path(config("adam", lr=0.05, betas=[0.8, 0.95], eps=eps))
    assert_same_path(ours, numpy_adam(0.05, 0.8, 0.95, eps))


def test_eps_inside_the_sqrt_would_not_match():
    ours = torch_path(config("adam", lr=0.05, betas=[0.8, 0.95], eps=0.5))
    x, first, second, path = X0.copy(), 0, 0, []
    for t in range(1, STEPS + 1):
        dx = compute_gradient(x)
        first = 0.8 * first + 0.2 * dx
        second = 0.95 * second + 0.05 * dx * dx
        x -= 0.05 * (first / (1 - 0.8**t)) / np.sqrt(second / (1 - 0.95**t) + 0.5)
        path.append(x.copy())
    assert np.max(np.abs(ours - np.array(path))) > 1e-3


def test_adam_l2_and_adamw_decoupled_decay_match_their_rules_and_differ():
    adam_l2 = torch_path(config("adam", lr=0.05, betas=[0.9, 0.999], eps=1e-7, weight_decay=2.0, no_decay_bias_norm=False))
    adamw = torch_path(config("adamw", lr=0.05, betas=[0.9, 0.999], eps=1e-7, weight_decay=2.0, no_decay_bias_norm=False))
    assert_same_path(adam_l2, numpy_adam(0.05, 0.9, 0.999, l2=2.0))
    assert_same_path(adamw, numpy_adam(0.05, 0.9, 0.999, decoupled=2.0))
    assert np.max(np.abs(adam_l2 - adamw)) > 1e-2
    assert np.max(np.abs(adamw - numpy_adam(0.05, 0.9, 0.999))) > 1e-2  # the decay is really applied


def test_lbfgs_solves_the_quadratic_full_batch():
    cfg = config("lbfgs", lr=1.0, lbfgs_iters=20, lbfgs_history=10)
    model = Point()
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.LBFGS)
    assert opt.param_groups[0]["line_search_fn"] == "strong_wolfe"
    assert opt.param_groups[0]["max_iter"] == 20 and opt.param_groups[0]["history_size"] == 10

    def closure():
        opt.zero_grad()
        loss = model()
        loss.backward()
        return loss

    opt.step(closure)
    # one call of up to 20 inner iterations, stopped by torch's tolerance_change=1e-9 on the loss
    assert np.max(np.abs(model.x.detach().numpy())) < 1e-4
    assert np.max(np.abs(numpy_sgd(0.03, steps=20)[-1])) > 1e-3  # 20 plain gradient steps are far off
    assert is_full_batch(cfg) and not is_full_batch(config("adam"))


def test_lbfgs_refuses_per_layer_rates_and_weight_decay():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    with pytest.raises(UserError):
        build_optimizer(net, config("lbfgs"), lr_multipliers={"0": 0.1})
    cfg = config("lbfgs")
    cfg["optim"]["weight_decay"] = 1e-4
    with pytest.raises(UserError):
        build_optimizer(net, cfg)


# --- parameter groups and the base rate -------------------------------------------------------------


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def by_param(opt):
    return {id(p): g for g in opt.param_groups for p in g["params"]}


def test_no_decay_on_biases_and_norm_parameters():
    net = small_net()
    cfg = config("momentum", lr=0.1, weight_decay=5e-4)
    groups = by_param(build_optimizer(net, cfg))
    for name, p in net.named_parameters():
        expected = 0.0 if p.ndim <= 1 else 5e-4
        assert groups[id(p)]["weight_decay"] == expected, name
        assert groups[id(p)]["name"] == ("no_decay" if p.ndim <= 1 else "decay")
    cfg["optim"]["no_decay_bias_norm"] = False
    assert all(g["weight_decay"] == 5e-4 for g in build_optimizer(net, cfg).param_groups)


def test_no_decay_group_really_skips_decay():
    # zero gradients: only weight decay moves a parameter
    net = small_net()
    opt = build_optimizer(net, config("sgd", lr=0.1, weight_decay=0.5))
    before = copy.deepcopy(net.state_dict())
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(net[0].bias, before["0.bias"]) and torch.equal(net[1].weight, before["1.weight"])
    assert torch.allclose(net[0].weight, before["0.weight"] * (1 - 0.1 * 0.5))


def test_lr_multipliers_frozen_parameters_and_group_names():
    net = small_net()
    net[3].weight.requires_grad_(False)
    cfg = config("adam", lr=0.01, weight_decay=1e-4)
    opt = build_optimizer(net, cfg, lr_multipliers={"0": 0.1, "5": 10.0})
    groups = by_param(opt)
    assert id(net[3].weight) not in groups  # frozen: no optimiser state, no update
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in net.parameters())
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        mult = {"0": 0.1, "5": 10.0}.get(name.split(".")[0], 1.0)
        g = groups[id(p)]
        assert g["lr_mult"] == mult and g["lr"] == pytest.approx(0.01 * mult) and g["initial_lr"] == g["lr"], name
    names = {g["name"] for g in opt.param_groups}
    # "decay" without a prefix held only net[3].weight, which is frozen: no empty group
    assert names == {"decay:0", "no_decay:0", "no_decay", "decay:5", "no_decay:5"}


def test_lr_multiplier_prefix_respects_module_boundaries():
    net = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
    groups = param_groups(net, 0.0, False, {"1": 0.5})
    halved = [g for g in groups if g["lr_mult"] == 0.5]
    assert len(halved) == 1 and {id(p) for p in halved[0]["params"]} == {id(net[1].weight), id(net[1].bias)}


def test_batch_scaling_multiplies_the_rate():
    net = small_net()
    cfg = config("sgd", lr=0.1)
    cfg["train"]["batch_size"] = 512
    cfg["optim"]["reference_batch"] = 256
    assert build_optimizer(net, cfg).param_groups[0]["lr"] == pytest.approx(0.1)
    cfg["optim"]["batch_scaling"] = True
    opt = build_optimizer(net, cfg, lr_multipliers={"0": 0.5})
    rates = {g["name"]: (g["lr"], g["initial_lr"]) for g in opt.param_groups}
    assert rates["decay"] == pytest.approx((0.2, 0.2))
    assert rates["decay:0"] == pytest.approx((0.1, 0.1))


def test_unknown_optimiser_is_a_user_error():
    with pytest.raises(UserError, match="adam"):
        build_optimizer(small_net(), config("adamm"))

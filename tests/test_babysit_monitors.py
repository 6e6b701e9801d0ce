"""Monitors (docs/design.md §4): activation statistics as in the lecture's experiment, dead/saturated units,
gradient norms, update ratios, and what a run writes (metrics.jsonl records, TensorBoard, plots)."""
import json

import pytest
import torch
from torch import nn

from trainlab.babysit.monitors import activation_stats, parameter_stats, weight_snapshot
from trainlab.config import load_config
from trainlab.models import build_model, model_config
from trainlab.run import train_run


def deep_mlp(activation: str, init: str, depth: int = 10, **extra) -> nn.Module:
    """The lecture's stack, at digits scale: `depth` hidden layers of 256 units on 64 inputs."""
    torch.manual_seed(0)
    cfg = model_config(name="mlp", depth=depth, width=256, activation=activation, init=init, **extra)
    return build_model(cfg, (64,), 10)


def stds(model: nn.Module) -> list[float]:
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(1))
    return [layer["std"] for layer in activation_stats(model, x, bins=20)]


def test_tanh_stack_small_gaussian_collapses_and_xavier_keeps_scale():
    """Lecture: W = 0.01·randn → "all activations tend to zero for deeper network layers";
    W = randn/sqrt(Din) → "activations are nicely scaled for all layers"."""
    small = stds(deep_mlp("tanh", "small_gaussian", init_std=0.01))
    assert all(b < 0.3 * a for a, b in zip(small[:4], small[1:5]))  # shrinks layer by layer
    assert small[-1] / small[0] < 1e-3
    xavier = stds(deep_mlp("tanh", "xavier"))
    assert xavier[-1] / xavier[0] > 0.2 and min(xavier) > 0.1


def test_relu_stack_xavier_shrinks_and_kaiming_keeps_scale():
    """Lecture: xavier + ReLU "activations collapse to zero again"; std = sqrt(2/Din) is "just right"."""
    xavier = stds(deep_mlp("relu", "xavier"))
    assert sum(b < a for a, b in zip(xavier, xavier[1:])) >= 8 and xavier[-1] / xavier[0] < 0.1
    kaiming = stds(deep_mlp("relu", "kaiming"))
    assert 0.5 < kaiming[-1] / kaiming[0] < 2.0


def test_dead_and_saturated_fractions_follow_their_definitions():
    x = torch.randn(256, 8)
    dead = nn.Sequential(nn.Linear(8, 6), nn.ReLU())
    with torch.no_grad():
        dead[0].bias[:3] = -100.0  # three units can never fire on N(0, 1) inputs
    (layer,) = activation_stats(dead, x, bins=10)
    assert layer["dead_fraction"] == pytest.approx(0.5) and layer["saturated_fraction"] is None
    h = dead(x).detach()
    assert layer["mean"] == pytest.approx(float(h.mean()), rel=1e-5)
    assert layer["std"] == pytest.approx(float(h.std()), rel=1e-5)
    assert sum(layer["hist"]["counts"]) == h.numel()
    for act, tails in ((nn.Tanh(), lambda h: h.abs() > 0.99), (nn.Sigmoid(), lambda h: (h < 0.01) | (h > 0.99))):
        net = nn.Sequential(nn.Linear(8, 16), act)
        with torch.no_grad():
            net[0].weight.mul_(20)
        (layer,) = activation_stats(net, x, bins=10)
        assert layer["saturated_fraction"] == pytest.approx(float(tails(net(x).detach()).float().mean()), abs=1e-6)
        assert layer["saturated_fraction"] > 0.5 and layer["dead_fraction"] is None


def test_activation_stats_has_no_side_effects():
    """Probing in train mode must not move batch-norm statistics or the random stream."""
    net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4), nn.Tanh())
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(32, 8)
    rng = torch.get_rng_state()
    layers = activation_stats(net, x, bins=5)
    assert [layer["kind"] for layer in layers] == ["relu", "tanh"]
    assert torch.equal(torch.get_rng_state(), rng) and net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_update_ratio_is_the_sgd_step_over_the_weight():
    """For plain SGD ΔW = −lr·∂L/∂W, so ‖ΔW‖/‖W‖ = lr·‖g‖/‖W‖ exactly."""
    net = nn.Sequential(nn.Linear(5, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = weight_snapshot(net)
    net(torch.randn(7, 5)).pow(2).sum().backward()
    opt.step()
    (w, b) = parameter_stats(net, before)
    g, weight = net[0].weight.grad.norm(), net[0].weight.detach().norm()
    assert w["grad_norm"] == pytest.approx(float(g), rel=1e-6)
    assert w["update_ratio"] == pytest.approx(float(0.1 * g / weight), rel=1e-5)
    assert w["shape"] == [3, 5] and b["shape"] == [3]


def test_run_writes_monitor_records_tensorboard_and_plots(tmp_path):
    cfg = load_config(None, ["model.name=convnet", "model.width=4", "model.depth=2", "train.epochs=1",
                             "train.progress=false", "monitor.every=5", "monitor.probe_size=64", "monitor.bins=12"])
    train_run(cfg, tmp_path / "run", say=lambda m: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    monitors = [r for r in records if r["kind"] == "monitor"]
    assert [r["step"] for r in monitors][:4] == [0, 1, 5, 10]  # 0: the initialisation, before any update
    assert all(p["update_ratio"] is None and p["grad_norm"] is None for p in monitors[0]["params"])
    first = monitors[1]
    assert len(first["layers"]) == 4 and all(len(layer["hist"]["counts"]) == 12 for layer in first["layers"])
    assert all(layer["dead_fraction"] is not None for layer in first["layers"])  # convnet: relu
    weights = [p for p in first["params"] if len(p["shape"]) >= 2]
    assert all(p["grad_norm"] > 0 and 0 < p["update_ratio"] < 1 for p in weights)
    plots = tmp_path / "run" / "plots"
    for name in ("activation_histograms", "activation_std", "dead_saturated_units", "update_ratios", "grad_norms",
                 "first_layer_filters"):
        assert (plots / f"{name}.png").stat().st_size > 1000, name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert any(t.startswith("update_ratio/") for t in events.Tags()["scalars"])
    assert any(t.startswith("activations/") for t in events.Tags()["histograms"])

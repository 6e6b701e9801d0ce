"""The techniques issue 17 added, each against its formula and trained from the CLI: momentum
annealing, channel dropout, multi-scale test crops, averaging fractional-pooling region sets,
head-first fine-tuning and linear classifiers on several stages."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import quiet
from trainlab.augmentation import TTA_SCALES, tta_views
from trainlab.callbacks import MomentumAnnealing, momentum_annealing
from trainlab.checkpoint import load_checkpoint
from trainlab.classifier import load_classifier
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.errors import UserError
from trainlab.evaluate import predict_probs
from trainlab.models import MultiStageFeatures, build_model
from trainlab.regularization import ChannelDropout, FractionalMaxPool, region_sets
from trainlab.run import train_run
from trainlab.schedules import annealed_momentum
from trainlab.transfer import decide_strategy

QUIET = ["train.progress=false", "monitor.every=0", "monitor.plots=false"]
TINY = QUIET + ["data.subset=200", "train.epochs=1", "train.batch_size=50"]
CONV = ["model.name=convnet", "model.width=4", "model.depth=2"]


# --- momentum annealing ----------------------------------------------------------------------------

def test_annealed_momentum_rises_linearly_from_start_to_end():
    assert annealed_momentum(0, 100, 0.5, 0.99) == 0.5
    assert annealed_momentum(50, 100, 0.5, 0.99) == pytest.approx(0.745)
    assert annealed_momentum(100, 100, 0.5, 0.99) == pytest.approx(0.99)
    assert annealed_momentum(500, 100, 0.5, 0.99) == pytest.approx(0.99)
    assert annealed_momentum(0, 0, 0.5, 0.99) == 0.99  # off


@pytest.mark.parametrize("name, key", [("momentum", "momentum"), ("nesterov", "momentum"), ("adam", "betas")])
def test_momentum_annealing_sets_rho_or_beta1_before_every_update(name, key):
    cfg = load_config(None, [f"optim.name={name}", "optim.momentum=0.99", "optim.betas=[0.99,0.999]",
                             "optim.momentum_start=0.5", "optim.momentum_anneal_epochs=2"])
    cb = momentum_annealing(cfg, steps_per_epoch=5)
    assert isinstance(cb, MomentumAnnealing) and cb.steps == 10 and (cb.start, cb.end) == (0.5, 0.99)
    model = torch.nn.Linear(3, 2)
    from trainlab.optim import build_optimizer

    opt = build_optimizer(model, cfg)
    trainer = type("T", (), {"optimizer": opt, "state": type("S", (), {"step": 4})()})()
    cb.on_train_start(trainer)  # resumed after 4 updates: the 5th uses rho(4)
    value = lambda: opt.param_groups[0][key][0] if key == "betas" else opt.param_groups[0][key]  # noqa: E731
    assert value() == pytest.approx(0.5 + 0.49 * 4 / 10)
    if key == "betas":
        assert opt.param_groups[0]["betas"][1] == 0.999
    with pytest.raises(UserError, match="has none"):
        momentum_annealing(load_config(None, ["optim.name=sgd", "optim.momentum_anneal_epochs=1"]), 5)
    assert momentum_annealing(load_config(None, []), 5) is None


@pytest.mark.slow
def test_momentum_annealing_trains_from_the_cli(tmp_path):
    out = tmp_path / "run"
    # 4 batches of 50, annealed over 2 epochs = 8 updates: after 4 updates rho = 0.5 + 0.49 * 4/8
    assert main(["train", *TINY, "data.val_fraction=0.2", "train.batch_size=40", "optim.name=momentum",
                 "optim.lr=0.05", "optim.momentum=0.99", "optim.momentum_anneal_epochs=2", "--out", str(out)]) == 0
    groups = load_checkpoint(out / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert groups[0]["momentum"] == pytest.approx(0.5 + 0.49 * 4 / 8)


# --- channel dropout --------------------------------------------------------------------------------

def test_channel_dropout_drops_whole_channels_and_keeps_the_expectation():
    torch.manual_seed(0)
    drop = ChannelDropout(0.5).train()
    x = torch.rand(64, 16, 5, 5) + 0.1
    y = drop(x)
    ratio = y / x
    per_channel = ratio.flatten(2)
    assert torch.all(per_channel.amin(2) == per_channel.amax(2))  # one factor per (sample, channel)
    assert set(per_channel[..., 0].unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1/(1-p)
    assert abs(float((ratio[:, :, 0, 0] == 0).float().mean()) - 0.5) < 0.05
    assert torch.equal(drop.eval()(x), x)
    model = build_model({"name": "convnet", "width": 4, "depth": 2, "channel_dropout": 0.2}, (1, 8, 8), 10)
    assert sum(isinstance(m, ChannelDropout) and m.p == 0.2 for m in model.modules()) == 2  # one per stage
    assert not any(isinstance(m, ChannelDropout) for m in build_model({"name": "convnet"}, (1, 8, 8), 10).modules())


@pytest.mark.slow
def test_channel_dropout_trains_from_the_cli(tmp_path):
    assert main(["train", *TINY, *CONV, "model.channel_dropout=0.2", "--out", str(tmp_path / "run")]) == 0
    model = load_classifier(load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt"))
    assert any(isinstance(m, ChannelDropout) for m in model.modules())


# --- multi-scale test crops -------------------------------------------------------------------------

def test_scales_are_the_ten_crops_at_each_scale():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 16, 16)
    views = tta_views(x, "scales")
    assert len(views) == 10 * len(TTA_SCALES) and all(v.shape == x.shape for v in views)
    assert all(torch.equal(a, b) for a, b in zip(views[:10], tta_views(x, "crops")))  # scale 1
    for i, s in enumerate(TTA_SCALES[1:], start=1):
        side = round(s * 16)
        big = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        at_s = views[10 * i: 10 * (i + 1)]
        c = (side - 16) // 2
        assert torch.equal(at_s[0], big[..., c:c + 16, c:c + 16])  # centre
        assert torch.equal(at_s[1], big[..., :16, :16])  # top-left corner
        assert torch.equal(at_s[4], big[..., -16:, -16:])  # bottom-right corner
        for crop, flipped in zip(at_s[:5], at_s[5:]):
            assert torch.equal(flipped, crop.flip(-1))


@pytest.mark.slow
def test_scales_tta_evaluates_from_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, *CONV, "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--tta", "scales", "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["tta"] == "scales"
    assert main(["train", *TINY, *CONV, "augment.tta=scales", "--out", str(tmp_path / "run2")]) == 0


# --- averaging several fractional-pooling region sets --------------------------------------------------

def test_region_sets_average_the_predictions_over_k_fixed_sets():
    torch.manual_seed(0)
    model = build_model({"name": "convnet", "width": 4, "depth": 3, "fractional_pool": True,
                         "fractional_eval_sets": 4}, (1, 16, 16), 10).eval()
    pools = [m for m in model.modules() if isinstance(m, FractionalMaxPool)]
    assert pools and all(p.eval_sets == 4 for p in pools)
    assert [[p.eval_sample for p in pools] for _ in region_sets(model)] == [[u] * len(pools) for u in
                                                                           (0.125, 0.375, 0.625, 0.875)]
    assert all(p.eval_sample == 0.5 for p in pools)  # restored
    x = torch.rand(5, 1, 16, 16)
    by_hand = []
    with torch.no_grad():
        for u in (0.125, 0.375, 0.625, 0.875):
            for p in pools:
                p.eval_sample = u
            by_hand.append(torch.softmax(model(x), 1))
    for p in pools:
        p.eval_sample = 0.5
    assert not torch.allclose(by_hand[0], by_hand[-1])  # the sets differ
    torch.testing.assert_close(predict_probs(model, x), torch.stack(by_hand).mean(0))
    for p in pools:
        p.eval_sets = 1  # one fixed set: u = 1/2
    with torch.no_grad():
        torch.testing.assert_close(predict_probs(model, x), torch.softmax(model(x), 1))


@pytest.mark.slow
def test_fractional_region_sets_train_from_the_cli(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, *CONV, "model.fractional_pool=true", "model.fractional_eval_sets=3",
                 "--out", str(out)]) == 0
    model = load_classifier(load_checkpoint(out / "checkpoints" / "best.pt"))
    assert {m.eval_sets for m in model.modules() if isinstance(m, FractionalMaxPool)} == {3}


# --- transfer: head first, then everything; linear classifiers on several stages ------------------------

SOURCE = CONV + ["model.norm=batch"] + QUIET + ["train.batch_size=64", "optim.lr=0.01", "train.epochs=1"]
TARGET = ["data.classes=[5,6,7,8,9]", "data.per_class=40"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    run = tmp_path_factory.mktemp("src") / "src"
    train_run(load_config(None, SOURCE + ["data.classes=[0,1,2,3,4]"]), run, say=quiet)
    return run


def test_head_first_trains_the_head_alone_then_everything_at_a_lower_rate(source, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--from", str(source), *SOURCE, *TARGET, "transfer.strategy=head_first",
                 "transfer.head_epochs=2", "transfer.finetune_lr_scale=0.1", "--out", str(out)]) == 0
    before = load_checkpoint(source)["model"]
    head = load_checkpoint(out / "head" / "checkpoints" / "last.pt")
    body = [k for k in before if not k.startswith("net.head.")]
    assert all(torch.equal(before[k], head["model"][k]) for k in body)  # phase 1: the backbone is frozen
    assert [g["initial_lr"] for g in head["optimizer"]["param_groups"]] == [0.01] * len(head["optimizer"]["param_groups"])
    final = load_checkpoint(out / "checkpoints" / "last.pt")
    assert not all(torch.equal(before[k], final["model"][k]) for k in body if "weight" in k)  # phase 2: all learn
    # phase 2 starts from phase 1's head and runs at optim.lr x finetune_lr_scale (head at 1e-3, blocks lower)
    assert max(g["initial_lr"] for g in final["optimizer"]["param_groups"]) == pytest.approx(0.001)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["transfer"]["strategy"] == "head_first" and summary["transfer"]["head_phase"]["epochs"] >= 1
    assert summary["transfer"]["head_phase"]["best_val_acc"] is not None


def test_multi_stage_features_concatenate_the_pooled_stages():
    torch.manual_seed(0)
    plain = build_model({"name": "convnet", "width": 4, "depth": 3}, (1, 8, 8), 10).eval()
    wide = build_model({"name": "convnet", "width": 4, "depth": 3, "head_stages": 2}, (1, 8, 8), 10).eval()
    assert isinstance(wide.features, MultiStageFeatures) and wide.head.in_features == 8 + 16
    wide.features.load_state_dict(plain.features.state_dict())  # same block names
    x = torch.rand(3, 1, 8, 8)
    h1 = plain.features[1](plain.features[0](x))
    expected = torch.cat([h1.mean(dim=(2, 3)), plain.features[2](h1)], 1)
    torch.testing.assert_close(wide.features(x), expected)
    with pytest.raises(UserError, match="head_stages=5"):
        build_model({"name": "convnet", "width": 4, "depth": 3, "head_stages": 5}, (1, 8, 8), 10)


def test_stages_trains_a_linear_classifier_on_several_frozen_stages(source, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--from", str(source), *SOURCE, *TARGET, "transfer.strategy=stages",
                 "transfer.stages=2", "--out", str(out)]) == 0
    before = load_checkpoint(source)["model"]
    after = load_checkpoint(out / "checkpoints" / "best.pt")
    assert after["config"]["model"]["head_stages"] == 2
    assert all(torch.equal(before[k], after["model"][k]) for k in before if not k.startswith("net.head."))
    assert after["model"]["net.head.weight"].shape == (5, 4 + 8)  # pooled stage 1 (4 ch) and stage 2 (8 ch)
    assert main(["evaluate", str(out)]) == 0  # the checkpoint rebuilds its own architecture
    cfg = load_config(None, ["data.name=mnist", "transfer.strategy=auto"])
    data = type("D", (), {"train_y": torch.zeros(90), "val_y": torch.zeros(10), "num_classes": 10})()
    assert decide_strategy(cfg, data, {"dataset": "fashion-mnist", "data": {"name": "fashion-mnist"}})[0] == "stages"


# --- probes for the lab: Adam without bias correction, the centred sigmoid --------------------------

def test_adam_uncorrected_is_the_slides_adam_almost():
    from tests.test_optim import X0, compute_gradient, config, torch_path

    ours = torch_path(config("adam_uncorrected", lr=0.05, betas=[0.8, 0.95], eps=1e-7))
    x, first, second, path = X0.copy(), 0, 0, []
    for _ in range(len(ours)):
        dx = compute_gradient(x)
        first = 0.8 * first + 0.2 * dx
        second = 0.95 * second + 0.05 * dx * dx
        x -= 0.05 * first / (np.sqrt(second) + 1e-7)
        path.append(x.copy())
    np.testing.assert_allclose(ours, np.array(path), rtol=1e-5, atol=1e-6)
    # the first step is (1 - b1) / sqrt(1 - b2) times Adam's: lr * 0.2 / sqrt(0.05) per coordinate
    corrected = torch_path(config("adam", lr=0.05, betas=[0.8, 0.95], eps=1e-7))
    np.testing.assert_allclose(np.abs(ours[0] - X0), 0.2 / np.sqrt(0.05) * np.abs(corrected[0] - X0), rtol=1e-4)


def test_centred_sigmoid_is_sigmoid_minus_a_half():
    from trainlab.activations import make_activation

    x = torch.linspace(-6, 6, 25)
    f = make_activation({"activation": "sigmoid_centered"})
    torch.testing.assert_close(f(x), torch.sigmoid(x) - 0.5)
    torch.testing.assert_close(f(x), 0.5 * torch.tanh(x / 2))
    assert abs(float(f(torch.randn(10000)).mean())) < 0.02  # zero-centred on zero-mean inputs

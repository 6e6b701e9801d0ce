"""Transfer learning: what each strategy freezes, that frozen weights and batch-norm statistics
stay bit-identical, the per-block rates of `all`, the lectures' table behind `auto`, and
fine-tuning from a plain state dict."""
import json
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import quiet
from trainlab.checkpoint import load_checkpoint
from trainlab.classifier import load_classifier
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.errors import UserError
from trainlab.optim import build_optimizer
from trainlab.run import train_run
from trainlab.transfer import (
    FrozenNormClassifier,
    apply_strategy,
    choose_strategy,
    decide_strategy,
    finetune,
    layer_lr_multipliers,
    similar_data,
)

NET = ["model.name=convnet", "model.width=4", "model.norm=batch"]
TINY = ["train.progress=false", "monitor.every=0", "train.batch_size=64", "optim.lr=0.01", "train.epochs=1"]
TARGET = ["data.classes=[5,6,7,8,9]", "data.per_class=40"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A convnet with batch norm trained on digits 0-4 (the "large" source data set)."""
    run = tmp_path_factory.mktemp("src") / "src"
    train_run(load_config(None, NET + TINY + ["data.classes=[0,1,2,3,4]"]), run, say=quiet)
    return run


def source_model(source):
    return load_classifier(load_checkpoint(source))


def test_linear_keeps_every_frozen_weight_and_bn_statistic_bit_identical(source, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--from", str(source), *TINY, *TARGET, "transfer.strategy=linear", "--out", str(out)]) == 0
    assert "strategy linear" in capsys.readouterr().out
    before = load_checkpoint(source)["model"]
    after = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    body = [k for k in before if not k.startswith("net.head.")]
    assert any("running_mean" in k for k in body)
    for k in body:  # weights, batch-norm running statistics and the preprocessing (reused, not refitted)
        assert torch.equal(before[k], after[k]), k
    assert after["net.head.weight"].shape == (5, before["net.head.weight"].shape[1])

    summary = json.loads((out / "summary.json").read_text())
    t = summary["transfer"]
    assert t["strategy"] == "linear" and t["source"]["kind"] == "trainlab checkpoint"
    assert t["source"]["checkpoint"] == str(source) and t["source"]["dataset"] == "digits"
    assert t["trainable_params"] == after["net.head.weight"].numel() + after["net.head.bias"].numel()
    assert t["trainable_params"] + t["frozen_params"] == summary["params"]
    assert summary["num_classes"] == 5 and summary["test_acc"] is not None
    # the run directory is an ordinary one: evaluate reads it
    assert main(["evaluate", str(out)]) == 0


def test_frozen_batch_norm_stays_in_eval_mode_only_with_freeze_bn(source):
    x = torch.rand(32, 1, 8, 8)
    for freeze_bn in (True, False):
        cfg = load_config(None, NET + [f"transfer.freeze_bn={freeze_bn}", "transfer.strategy=linear"])
        model, _, details = apply_strategy(source_model(source), "linear", cfg["transfer"])
        assert isinstance(model, FrozenNormClassifier) == freeze_bn
        bn = model.net.features[0][1]
        stats = bn.running_mean.clone()
        model.train()
        model(x)
        assert bn.training is not freeze_bn
        assert torch.equal(bn.running_mean, stats) == freeze_bn
        assert details["frozen_batch_norms"] == (6 if freeze_bn else 0)  # 2 per stage, 3 stages


@pytest.mark.slow
def test_top_k_from_a_plain_state_dict_trains_only_the_last_k_blocks(source, tmp_path):
    state = tmp_path / "backbone.pt"
    torch.save(source_model(source).net.state_dict(), state)  # no meta, no preprocessing
    cfg = load_config(None, NET + TINY + TARGET + ["transfer.strategy=top_k", "transfer.k=1"])
    summary = finetune(cfg, state, tmp_path / "ft", say=quiet)
    t = summary["transfer"]
    assert t["strategy"] == "top_k" and t["trainable_blocks"] == [2] and t["source"]["kind"] == "state dict"
    before = torch.load(state, weights_only=True)
    after = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")["model"]
    for k, v in before.items():
        if k.startswith(("features.0.", "features.1.")):
            assert torch.equal(v, after["net." + k]), k
    assert any(not torch.equal(v, after["net." + k]) for k, v in before.items()
               if k.startswith("features.2.") and v.is_floating_point())
    assert t["trainable_params"] == sum(p.numel() for k, p in before.items()
                                        if k.startswith("features.2.") and "running" not in k
                                        and "num_batches" not in k) + 5 * 16 + 5

    wrong = load_config(None, NET[:1] + ["model.width=8"] + TINY + TARGET)
    with pytest.raises(UserError, match="does not fit model.name=convnet"):
        finetune(wrong, state, tmp_path / "ft2", say=quiet)


def test_all_uses_rates_decaying_by_lr_decay_going_down(source):
    assert layer_lr_multipliers(3, 0.5) == {"net.features.0": 0.125, "net.features.1": 0.25, "net.features.2": 0.5}
    cfg = load_config(None, NET + ["transfer.lr_decay=0.5", "optim.lr=0.1"])
    model, multipliers, _ = apply_strategy(source_model(source), "all", cfg["transfer"])
    assert all(p.requires_grad for p in model.net.parameters())
    lrs = {g["name"]: g["lr"] for g in build_optimizer(model, cfg, multipliers).param_groups}
    assert lrs["decay"] == pytest.approx(0.1)  # the head
    for i, expected in enumerate((0.0125, 0.025, 0.05)):
        assert lrs[f"decay:net.features.{i}"] == pytest.approx(expected)


def test_linear_and_top_k_leave_frozen_parameters_out_of_the_optimizer(source):
    for strategy, learning in (("linear", []), ("top_k", [1, 2])):
        cfg = load_config(None, NET + ["transfer.k=2"])
        model, _, details = apply_strategy(source_model(source), strategy, cfg["transfer"])
        assert details["trainable_blocks"] == learning
        optimised = {id(p) for g in build_optimizer(model, cfg).param_groups for p in g["params"]}
        for name, p in model.named_parameters():
            learns = name.startswith("net.head.") or any(name.startswith(f"net.features.{i}.") for i in learning)
            assert (id(p) in optimised) == learns == p.requires_grad, name
    with pytest.raises(UserError, match="transfer.k=4"):
        apply_strategy(source_model(source), "top_k", load_config(None, ["transfer.k=4"])["transfer"])


@pytest.mark.parametrize("per_class, target, expected", [
    (10, "fashion-mnist", "linear"),   # very little data, similar: linear classifier on top
    (1000, "fashion-mnist", "top_k"),  # quite a lot, similar: fine-tune a few layers
    (10, "mnist", "stages"),           # very little data, very different: "you're in trouble", linear on several stages
    (1000, "mnist", "all"),            # quite a lot, very different: fine-tune a larger number of layers
])
def test_auto_follows_the_lectures_table(per_class, target, expected):
    cfg = load_config(None, [f"data.name={target}", "transfer.strategy=auto"])
    data = SimpleNamespace(train_y=torch.zeros(per_class * 9), val_y=torch.zeros(per_class), num_classes=10)
    source = {"dataset": "fashion-mnist", "data": {"name": "fashion-mnist"}}
    strategy, reason, similar = decide_strategy(cfg, data, source)
    assert strategy == expected and similar == (target == "fashion-mnist")
    assert "table" in reason and f"{per_class} labelled images per class" in reason


def test_similarity_and_threshold():
    assert similar_data({"dataset": "digits", "data": {"name": "digits"}}, load_config(None, ["data.name=mnist"]))[0]
    assert not similar_data({"dataset": "mnist", "data": {"name": "mnist"}},
                            load_config(None, ["data.name=fashion-mnist"]))[0]
    assert not similar_data({"dataset": None}, load_config(None, []))[0]  # unknown source: different
    # as a dict: the value a YAML file gives with similar: "yes"
    assert similar_data({"dataset": None}, load_config(None, {"transfer.similar": "yes"}))[0]
    assert not similar_data({"dataset": "digits", "data": {"name": "digits"}},
                            load_config(None, {"transfer.similar": "no"}))[0]
    assert choose_strategy(99, 100, True)[0] == "linear" and choose_strategy(100, 100, True)[0] == "top_k"


@pytest.mark.slow
def test_monitors_skip_frozen_parameters(source, tmp_path):
    """Frozen weights have no .grad: the monitors must watch only what is trained."""
    out = tmp_path / "ft"
    code = main(["finetune", "--from", str(source), *NET, *TINY, *TARGET, "monitor.every=2",
                 "transfer.strategy=linear", "--out", str(out)])
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "monitor" for r in records)

"""The public Python API: factories with keyword arguments whose defaults are the schema's,
ConfigError for bad names and options, runs from Python equal to runs from the command line,
monitors and diagnosis outside trainlab's loop."""
import inspect
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainlab
from trainlab.activations import ACTIVATIONS
from trainlab.augmentation import AUGMENTATIONS
from trainlab.cli import main
from trainlab.init import INITS
from trainlab.norms import NORMS
from trainlab.optim import OPTIMIZERS, build_optimizer
from trainlab.preprocessing import PREPROCESSORS
from trainlab.schedules import SCHEDULES, build_scheduler
from trainlab.schema import SCHEMA, defaults

# Registry → the config section its entries' options are keys of.
SECTIONS = [(ACTIVATIONS, "model"), (NORMS, "model"), (INITS, "model"), (OPTIMIZERS, "optim"),
            (SCHEDULES, "schedule"), (AUGMENTATIONS, "augment"), (PREPROCESSORS, "preprocess")]
# Keywords of the create_* functions themselves → their schema keys.
FACTORY_KEYS = {
    trainlab.create_optimizer: {"weight_decay": "optim.weight_decay", "no_decay_bias_norm": "optim.no_decay_bias_norm"},
    trainlab.create_scheduler: {"warmup": "schedule.warmup_epochs"},
    trainlab.create_init: {"bias": "model.bias_init", "head_scale": "model.head_scale",
                           "zero_init_residual": "model.zero_init_residual"},
    # every keyword of create_model is a model.* key of the same name
    trainlab.create_model: {p: f"model.{p}" for p in inspect.signature(trainlab.create_model).parameters
                            if p not in ("name", "num_classes", "input_shape")},
}
# Wall-clock measurements differ between two runs of the same config.
WALL_CLOCK = {"wall_seconds", "train_images_per_second", "peak_rss_mb"}  # measured figures of the process, not results


def same(a, b) -> bool:
    return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b


def signature_defaults(fn) -> dict:
    return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.default is not p.empty}


def test_every_factory_default_equals_the_schema_default():
    checked = 0
    for registry, section in SECTIONS:
        for name in registry:
            info = registry.get(name)
            found = signature_defaults(info.make)
            for keyword, key in info.options.items():
                assert keyword in found, f"{registry.kind} {name}: option {keyword} has no default"
                assert same(found[keyword], SCHEMA[f"{section}.{key}"].default), (name, keyword)
                checked += 1
    for factory, keys in FACTORY_KEYS.items():
        found = signature_defaults(factory)
        for keyword, key in keys.items():
            assert same(found[keyword], SCHEMA[key].default), (factory.__name__, keyword)
            checked += 1
    assert checked > 50


def test_every_config_option_of_a_component_is_a_schema_key_and_a_keyword():
    for registry, section in SECTIONS:
        for name in registry:
            info = registry.get(name)
            for keyword, key in info.options.items():
                assert f"{section}.{key}" in SCHEMA
                assert keyword in info.keywords()


def test_elu_by_name_and_from_a_partial_config_section():
    assert isinstance(trainlab.create_activation("elu"), nn.ELU)
    assert trainlab.create_activation("elu", alpha=0.5).alpha == 0.5
    assert ACTIVATIONS.get("elu")({}).alpha == 1.0  # was a KeyError
    assert ACTIVATIONS.get("elu")({"elu_alpha": 0.3}).alpha == 0.3
    assert trainlab.create_activation("prelu", features=6, spatial=True).weight.shape == (6,)


@pytest.mark.parametrize("call, match", [
    (lambda: trainlab.create_activation("eluu"), "did you mean: elu"),
    (lambda: trainlab.create_activation("elu", alfa=1.0), "did you mean: alpha"),
    (lambda: trainlab.create_norm("group", 8, grups=2), "did you mean: groups"),
    (lambda: trainlab.create_init("kaiming", std=0.1), "has no option 'std'"),
    (lambda: trainlab.create_optimizer(nn.Linear(2, 2), "nesterof", lr=0.1), "did you mean: nesterov"),
    (lambda: trainlab.create_optimizer(nn.Linear(2, 2), "adam", lr=0.1, momentum=0.9), "has no option 'momentum'"),
    (lambda: trainlab.create_scheduler(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), "sgdr", 2, 5,
                                       cycle_epoch=1), "did you mean: cycle_epochs"),
    (lambda: trainlab.create_augmentation(["flip", "cutuot"]), "did you mean: cutout"),
    (lambda: trainlab.create_augmentation(["flip"], cutout_size=3), "not used by any of the augmentations"),
    (lambda: trainlab.create_augmentation(["mixup"]), "pass num_classes"),
    (lambda: trainlab.create_preprocessing("pca", componets=3), "did you mean: components"),
    (lambda: trainlab.create_model("resnett", 10, (3, 8, 8)), "did you mean: resnet"),
    (lambda: trainlab.create_model("mlp", 10, (64,), activation="rleu"), "did you mean: relu"),
    # values out of the config's bounds are refused as the config refuses them
    (lambda: trainlab.create_model("mlp", 10, (64,), dropout=1.5), "dropout of model 'mlp': expected >= 0 and < 1"),
    (lambda: trainlab.create_optimizer(nn.Linear(2, 2), "sgd", lr=-1), "lr of optimiser 'sgd': expected > 0"),
    (lambda: trainlab.create_activation("elu", alpha=0), "alpha of activation 'elu': expected > 0"),
    (lambda: trainlab.create_augmentation(["cutout"], cutout_size=0), "cutout_size of create_augmentation"),
    (lambda: trainlab.create_scheduler(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), "sgdr", 4, 3,
                                       cycle_mult=0.5), "cycle_mult of schedule 'sgdr': expected >= 1"),
    (lambda: trainlab.create_init("small_gaussian", std=-1), "std of initialisation 'small_gaussian'"),
])
def test_bad_names_and_options_raise_config_error(call, match):
    with pytest.raises(trainlab.ConfigError, match=match):
        call()
    assert issubclass(trainlab.ConfigError, trainlab.UserError)


def test_config_builders_are_adapters_of_the_factories():
    """build_optimizer / build_scheduler from a config give what the keyword factories give."""
    cfg = defaults()
    cfg["optim"].update(name="nesterov", lr=0.2, momentum=0.8, weight_decay=1e-3)
    cfg["schedule"].update(name="sgdr", warmup_epochs=1.0, cycle_epochs=3.0, cycle_mult=2.0, min_scale=0.1)
    cfg["train"]["epochs"] = 9
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    a, b = build_optimizer(net, cfg), trainlab.create_optimizer(net, "nesterov", lr=0.2, weight_decay=1e-3, momentum=0.8)
    strip = lambda opt: [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]  # noqa: E731
    assert strip(a) == strip(b) and a.defaults == b.defaults
    assert [g["weight_decay"] for g in b.param_groups] == [1e-3, 0.0]  # biases and norm parameters: none
    sa = build_scheduler(a, cfg, 7)
    sb = trainlab.create_scheduler(b, "sgdr", epochs=9, steps_per_epoch=7, warmup=1.0, cycle_epochs=3.0,
                                   cycle_mult=2.0, min_scale=0.1)
    for _ in range(9 * 7):
        assert a.param_groups[0]["lr"] == pytest.approx(b.param_groups[0]["lr"], rel=1e-12)
        a.step(), b.step(), sa.step(), sb.step()


def test_create_optimizer_takes_plain_parameters_and_create_init_initialises_any_module():
    net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    opt = trainlab.create_optimizer(net.parameters(), "adam", lr=1e-3, betas=(0.8, 0.99))
    assert opt.param_groups[0]["betas"] == (0.8, 0.99) and opt.param_groups[0]["initial_lr"] == 1e-3
    trainlab.create_init("small_gaussian", std=0.5, bias=0.25)(net)
    assert float(net[0].weight.detach().std()) == pytest.approx(0.5, rel=0.1)
    assert torch.all(net[2].bias == 0.25)


def test_create_augmentation_on_a_dataloader_batch():
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    batch_x, batch_y = next(iter(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)))
    a = trainlab.create_augmentation(["flip", "crop", "cutout"], crop_padding=2, cutout_size=4, seed=3)
    b = trainlab.create_augmentation(["flip", "crop", "cutout"], crop_padding=2, cutout_size=4, seed=3)
    xa, ya = a(batch_x, batch_y)
    assert xa.shape == x.shape and torch.equal(ya, y) and not torch.equal(xa, x)
    assert torch.equal(xa, b(batch_x, batch_y)[0])  # seeded: repeatable
    assert a.augmentations[1].padding == 2 and a.augmentations[2].size == 4
    soft = trainlab.create_augmentation(["mixup"], num_classes=10, mix_alpha=0.4, seed=0)(x, y)[1]
    assert soft.shape == (16, 10) and torch.allclose(soft.sum(1), torch.ones(16))


@pytest.mark.slow
def test_import_trainlab_is_light_and_train_stays_the_api_function():
    code = ("import sys, trainlab; assert 'torch' not in sys.modules, 'torch imported'; "
            "from trainlab.train import Trainer; import trainlab.evaluate; "
            "assert callable(trainlab.train) and trainlab.train.__module__ == 'trainlab.api'; "
            "assert trainlab.evaluate.__module__ == 'trainlab.api'; print(sorted(trainlab.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("create_model", "create_optimizer", "create_scheduler", "create_augmentation", "train", "load_run",
                 "attach_monitors", "diagnose", "ConfigError"):
        assert name in out.stdout


@pytest.mark.parametrize("config, match", [
    ({"optim": {"lr": "fast"}}, "bad value 'fast' for optim.lr"),
    ({"optim": {"lrr": 0.1}}, "unknown config key 'optim.lrr'"),
    ({"train": 5}, "unknown config key 'train'"),
    ({"model.name": "resnett"}, "did you mean: resnet"),
    ("does/not/exist.yaml", "does not exist"),
    (["train.epochs=2"], "a YAML path, a dict or None"),
])
def test_train_refuses_a_bad_config_with_config_error_before_any_work(tmp_path, config, match):
    with pytest.raises(trainlab.ConfigError, match=match):
        trainlab.train(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_partial_dict_is_completed_with_the_defaults():
    from trainlab.api import resolve_config

    cfg = resolve_config({"optim": {"lr": 0.1}, "train.epochs": 3}, ["seed=4"])
    expected = defaults()
    expected["optim"]["lr"], expected["train"]["epochs"], expected["seed"] = 0.1, 3, 4
    assert cfg == expected


@pytest.mark.slow
def test_api_train_equals_cli_train_and_predict_equals_evaluate(tmp_path, capsys):
    overrides = ["train.epochs=2", "data.subset=400", "train.progress=false", "model.width=32"]
    assert main(["train", *overrides, "--out", str(tmp_path / "cli")]) == 0
    run = trainlab.train(overrides=overrides, out=tmp_path / "api")
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert isinstance(run, trainlab.Run) and set(run.summary) == set(cli)
    assert {k: v for k, v in run.summary.items() if k not in WALL_CLOCK} == \
        {k: v for k, v in cli.items() if k not in WALL_CLOCK}
    assert run.summary["epochs"] == 2 and len(run.history) == 2 and run.monitors

    # predict on the test split == what `trainlab evaluate` measures
    assert main(["evaluate", str(tmp_path / "api")]) == 0
    evaluation = json.loads((tmp_path / "api" / "evaluation.json").read_text())
    from trainlab.data import load_data

    data = load_data(run.config)
    loaded = trainlab.load_run(tmp_path / "api")
    probs = loaded.predict(data.test_x)
    assert probs.shape == (len(data.test_y), data.num_classes)
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)))
    assert float((probs.argmax(1) == data.test_y).float().mean()) == pytest.approx(evaluation["test_acc"], abs=1e-12)
    nll = float(-torch.log(probs[torch.arange(len(probs)), data.test_y].clamp_min(1e-12)).mean())
    assert nll == pytest.approx(evaluation["test_loss"], rel=1e-6)
    assert json.loads(json.dumps(trainlab.evaluate(loaded))) == evaluation  # the same numbers, unwritten
    assert loaded.evaluate()["test_acc"] == run.summary["test_acc"]  # best.pt, as the summary
    assert torch.allclose(torch.softmax(loaded.model()(data.test_x[:8]), 1), probs[:8], atol=1e-6)


def test_load_run_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(trainlab.UserError, match="not a trainlab run directory"):
        trainlab.load_run(tmp_path)


def digits_loop(model, optimizer, epochs, monitors_every=10):
    """A plain loop over 300 digits, as a user would write it."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:300], dtype=torch.float32).flatten(1) / 16
    y = torch.tensor(d.target[:300])
    monitors = trainlab.attach_monitors(model, x[:100], optimizer, every=monitors_every)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50, shuffle=True)
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    return monitors


def test_attach_monitors_measures_like_the_run_monitors_without_a_run_directory(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitors = digits_loop(model, optimizer, epochs=4, monitors_every=10)  # 6 updates per epoch
    assert [r["step"] for r in monitors.records] == [0, 1, 10, 20]
    last = monitors.records[-1]
    assert [(layer["name"], layer["kind"]) for layer in last["layers"]] == [("1", "relu"), ("3", "tanh")]
    assert last["layers"][0]["dead_fraction"] is not None and last["layers"][1]["saturated_fraction"] is not None
    ratios = [p["update_ratio"] for p in last["params"] if len(p["shape"]) == 2]
    assert all(0 < r < 1 for r in ratios) and all(p["grad_norm"] > 0 for p in last["params"])
    assert monitors.records[0]["params"][0]["update_ratio"] is None  # the initialisation: no update yet
    assert not list(tmp_path.iterdir())  # nothing written
    monitors.detach()
    optimizer.step()
    assert len(monitors.records) == 4  # hooks removed


def test_attach_monitors_and_diagnose_find_dead_relus():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[0].bias.fill_(-10.0)  # every unit starts (and stays) dead
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitors = digits_loop(model, optimizer, epochs=2)
    codes = [v["code"] for v in monitors.verdicts()]
    assert "dead_units" in codes
    history = [{"train_loss": 2.30, "train_acc": 0.10}, {"train_loss": 2.30, "train_acc": 0.11}]
    assert "dead_units" in [v["code"] for v in trainlab.diagnose(history, monitors)]


def test_diagnose_reads_a_plain_history():
    overfit = [{"train_loss": 1.0 / e, "train_acc": min(1.0, 0.5 + 0.1 * e), "val_loss": 0.5 + 0.1 * e,
                "val_acc": 0.7, "lr": 0.1} for e in range(1, 8)]
    assert "overfitting" in [v["code"] for v in trainlab.diagnose(overfit)]
    healthy = [{"train_loss": 1.0 / e, "train_acc": 0.9 + 0.01 * e, "val_loss": 1.0 / e, "val_acc": 0.9 + 0.01 * e}
               for e in range(1, 5)]
    assert [v["code"] for v in trainlab.diagnose(healthy)] == ["healthy"]
    with pytest.raises(trainlab.ConfigError, match="epoch record 0 has no train_acc"):
        trainlab.diagnose([{"train_loss": 1.0}])

"""Every registered component trains end-to-end from the CLI (issue 3, "Must show" 1).

Each case is one in-process ``trainlab train`` of a single update on 200 digits (or a tiny
generated copy of another data set) with width-8 models. The cases are generated from
``trainlab.components.REGISTRIES``: a name registered tomorrow is trained here without editing
this file, and :data:`SPEC_NAMES` pins the names docs/design.md §1–3 promises, so removing one fails too.

Speed (~150 runs; 44 s on a 2-CPU machine at load 12, 16 s of CPU time): only the matplotlib
drawing of the run's PNGs is stubbed, which was 1.5 s a run and the bulk of the time
(``report.html`` is still written; ``tests/test_train.py`` checks the real plots), and torch uses
one thread, because on a busy machine two threads on width-8 layers made the file 5x slower.
"""
from __future__ import annotations

import gzip
import json
import math
import pickle
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import trainlab.report
from trainlab.callbacks import EMA
from trainlab.cli import main
from trainlab.components import REGISTRIES
from trainlab.config import defaults
from trainlab.data import datasets as ds
from trainlab.data.loader import TensorLoader
from trainlab.preprocessing import PREPROCESSORS
from trainlab.train import Callback, Trainer

# What docs/design.md §1–3 (and issue 3) name; the registries may hold more, never fewer.
SPEC_NAMES = {
    "datasets": {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "folder", "npz"},
    "preprocessors": {"none", "mean_image", "channel_mean", "standardize", "pca", "pca_whiten", "zca"},
    "augmentations": {"flip", "crop", "resized_crop", "jitter", "lighting", "affine", "cutout", "mixup", "cutmix"},
    "models": {"mlp", "convnet", "resnet"},
    "activations": {"sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "maxout", "gelu", "silu"},
    "norms": {"none", "batch", "layer", "instance", "group"},
    "inits": {"constant", "small_gaussian", "xavier", "xavier_uniform", "kaiming", "kaiming_uniform", "orthogonal"},
    "penalties": {"none", "l2", "l1", "elastic"},
    "optimizers": {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "lbfgs"},
    "schedules": {"constant", "step", "exponential", "inv_t", "cosine", "linear", "inv_sqrt", "sgdr", "cyclic",
                  "onecycle"},
}

# One update of a tiny model on a small stratified subset; 10% of it (20 images) is validation.
TINY = ["data.name=digits", "data.subset=200", "train.epochs=1", "train.max_steps=1", "train.batch_size=32",
        "model.width=8", "train.progress=false", "monitor.every=0"]
RESNET8 = ("model.name=resnet", "model.depth=8")


@dataclass(frozen=True)
class Case:
    """One run: overrides on top of TINY; ``data`` names a generated data set (see DATA_MAKERS)."""

    overrides: tuple[str, ...]
    data: str | None = None


def case(id_: str, *overrides: str, data: str | None = None):
    return pytest.param(Case(tuple(overrides), data), id=id_)


def names(kind: str) -> list[str]:
    return REGISTRIES[kind].names()


# --- tiny copies of every data set ---------------------------------------------------------


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def make_idx_set(root: Path, name: str) -> list[str]:
    """MNIST-format files (gzip IDX) of 40 + 20 random 28x28 images in <root>/<name>/."""
    rng, folder = np.random.default_rng(0), root / name
    folder.mkdir(parents=True)
    for split, n in (("train", 40), ("t10k", 20)):
        _idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return [f"data.name={name}", f"data.root={root}", "data.download=false"]


def make_cifar_set(root: Path, name: str) -> list[str]:
    """The official python-pickle layout, extracted, with a few random 32x32 images per batch."""
    layout, classes = ds.CIFAR_LAYOUT[name], 10 if name == "cifar10" else 100
    rng = np.random.default_rng(0)
    folder = root / name / layout.subdir
    folder.mkdir(parents=True)
    per_batch = 20 if classes == 10 else 200  # every class in train, at least once

    def batch(n: int) -> bytes:
        labels = [int(v) for v in np.arange(n) % classes]
        return pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             layout.label_key.encode(): labels}, protocol=2)

    for member in layout.train:
        (folder / member).write_bytes(batch(per_batch))
    (folder / layout.test).write_bytes(batch(classes * 2))
    (folder / layout.meta).write_bytes(pickle.dumps({layout.names_key.encode(): [f"c{i}".encode() for i in range(classes)]},
                                                    protocol=2))
    return [f"data.name={name}", f"data.root={root}", "data.download=false"]


def make_folder_set(root: Path, name: str) -> list[str]:
    """train/ and test/ with one sub-folder of 8x8 RGB PNGs per class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 3)):
        for label in ("cat", "dog", "emu"):
            (root / "images" / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(root / "images" / split / label / f"{i}.png")
    return ["data.name=folder", f"data.path={root / 'images'}", "data.image_size=8"]


def make_npz_set(root: Path, name: str) -> list[str]:
    """(N, H, W) uint8 greyscale images with string labels, and a test split."""
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b", "c"])
    np.savez(root / "tiny.npz", x=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y=labels[np.arange(60) % 3],
             x_test=rng.integers(0, 256, (15, 8, 8), dtype=np.uint8), y_test=labels[np.arange(15) % 3])
    return ["data.name=npz", f"data.path={root / 'tiny.npz'}"]


def make_npy_set(root: Path, name: str) -> list[str]:
    """x.npy (N, 8, 8, 3) uint8 channels-last, integer labels, a test split; streamed from disk."""
    rng = np.random.default_rng(0)
    for split, n in (("", 60), ("_test", 15)):
        np.save(root / f"x{split}.npy", rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8))
        np.save(root / f"y{split}.npy", np.arange(n) % 3)
    return ["data.name=npy", f"data.path={root}", "data.stream=on", "data.workers=0"]


DATA_MAKERS = {
    "npy": make_npy_set,
    "digits": lambda root, name: [],  # ships with scikit-learn
    "mnist": make_idx_set,
    "fashion-mnist": make_idx_set,
    "cifar10": make_cifar_set,
    "cifar100": make_cifar_set,
    "folder": make_folder_set,
    "npz": make_npz_set,
}


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory):
    """name → overrides that point a run at a tiny generated copy of that data set (made once)."""
    made: dict[str, list[str]] = {}

    def get(name: str) -> list[str]:
        if name not in DATA_MAKERS:
            pytest.fail(f"data set {name!r} is registered but this test cannot make a tiny copy of it: "
                        "add a generator to DATA_MAKERS")
        if name not in made:
            made[name] = DATA_MAKERS[name](tmp_path_factory.mktemp(name.replace("-", "_")), name)
        return made[name]

    return get


# --- the cases, generated from the registries ------------------------------------------------


def preprocess_cases():
    for name in names("preprocessors"):
        for model in ("mlp", "convnet"):
            yield case(f"preprocess={name}/{model}", f"preprocess.name={name}", f"model.name={model}")


def activation_cases():
    for name in names("activations"):
        for model in ("mlp", "convnet"):
            yield case(f"activation={name}/{model}", f"model.activation={name}", f"model.name={model}")
    yield case("activation=maxout/resnet8", *RESNET8, "model.activation=maxout")
    yield case("activation=maxout+dropconnect/mlp", "model.activation=maxout", "model.dropconnect=0.5")


def init_cases():
    for name in names("inits"):
        for model in ("mlp", "convnet"):
            yield case(f"init={name}/{model}", f"model.init={name}", f"model.name={model}")


def norm_cases():
    for name in names("norms"):
        yield case(f"norm={name}/mlp", f"model.norm={name}")
        yield case(f"norm={name}/convnet", f"model.norm={name}", "model.name=convnet")
        yield case(f"norm={name}/resnet8", f"model.norm={name}", *RESNET8)


def augmentation_cases():
    for name in names("augmentations"):
        # digits: 1-channel (colour ops must still run); the generated folder: RGB, where they matter
        yield case(f"augment={name}/digits", f"augment.names=[{name}]", "model.name=convnet")
        yield case(f"augment={name}/rgb", f"augment.names=[{name}]", "model.name=convnet", data="folder")
    yield case("augment=all-in-order", f"augment.names=[{','.join(names('augmentations'))}]", "model.name=convnet")
    for tta in ("flip", "crops"):
        yield case(f"tta={tta}", f"augment.tta={tta}", "model.name=convnet")


def optimizer_cases():
    for name in names("optimizers"):
        yield case(f"optim={name}", f"optim.name={name}")
    yield case("optim=adamw+decay", "optim.name=adamw", "optim.weight_decay=0.01")
    yield case("optim=sgd+decay-on-everything", "optim.name=sgd", "optim.weight_decay=0.01",
               "optim.no_decay_bias_norm=false", "model.norm=batch")


def schedule_cases():
    for name in names("schedules"):
        yield case(f"schedule={name}", f"schedule.name={name}")


def penalty_cases():
    for name in names("penalties"):
        yield case(f"penalty={name}", f"reg.penalty={name}", "reg.strength=0.001")


def model_cases():
    for name in names("models"):
        if name == "resnet":
            yield case("model=resnet8", *RESNET8)
            yield case("model=resnet18", "model.name=resnet", "model.depth=18")
        else:
            yield case(f"model={name}", f"model.name={name}")


def dataset_cases():
    for name in names("datasets"):
        yield case(f"data={name}", data=name)
        if name not in ("digits", "npz"):  # image sets: a conv net too
            yield case(f"data={name}/convnet", "model.name=convnet", data=name)


def regularizer_and_loop_cases():
    yield case("label_smoothing", "reg.label_smoothing=0.1")
    yield case("dropout/mlp", "model.dropout=0.5")
    yield case("dropout/convnet", "model.dropout=0.5", "model.name=convnet")
    yield case("dropconnect/mlp", "model.dropconnect=0.5")
    yield case("stochastic_depth/resnet8", *RESNET8, "model.stochastic_depth=0.5")
    yield case("fractional_pool/convnet", "model.name=convnet", "model.fractional_pool=true")
    yield case("zero_init_residual=false/resnet8", *RESNET8, "model.zero_init_residual=false", "model.norm=batch")
    yield case("clip_grad", "train.clip_grad=0.1")
    yield case("early_stopping", "train.early_stopping=1")
    yield case("channels_last/convnet", "train.channels_last=on", "model.name=convnet", "model.norm=batch")
    yield case("channels_last/resnet8+maxout", "train.channels_last=on", *RESNET8, "model.activation=maxout")


ALL_CASES = [
    *preprocess_cases(), *augmentation_cases(), *activation_cases(), *init_cases(), *norm_cases(),
    *regularizer_and_loop_cases(), *optimizer_cases(), *schedule_cases(), *penalty_cases(), *model_cases(),
    *dataset_cases(),
]


# --- running and checking -------------------------------------------------------------------


@pytest.fixture
def no_png_drawing(monkeypatch):
    monkeypatch.setattr(trainlab.report, "plot_training_curves", lambda records, plots, cfg=None: None)
    monkeypatch.setattr(trainlab.report, "plot_confusion", lambda *args, **kwargs: None)


def train_cli(out: Path, *overrides: str) -> int:
    return main(["train", "--out", str(out), *TINY, *overrides])


def epoch_record(out: Path) -> dict:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "epoch"][-1]


def first_step_lr(out: Path) -> float:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "step"][0]["lr"]


def assert_trained_one_step(out: Path, rc: int, captured) -> dict:
    assert rc == 0, captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["epochs"] == 1, summary
    assert (out / "report.html").is_file() and (out / "checkpoints" / "best.pt").is_file()
    epoch = epoch_record(out)
    assert math.isfinite(epoch["train_loss"]), epoch
    assert math.isfinite(epoch["val_loss"]) and 0 <= epoch["val_acc"] <= 1, epoch
    if summary["test_acc"] is not None:
        assert math.isfinite(summary["test_loss"]) and 0 <= summary["test_acc"] <= 1, summary
    return summary


def assert_user_error(rc: int, captured, *words: str) -> None:
    """Exit 2 with a one-paragraph message naming ``words``, and no traceback (docs/design.md §8)."""
    assert rc == 2, captured.err
    assert captured.err.startswith("trainlab: error:"), captured.err
    assert "Traceback" not in captured.err + captured.out
    for word in words:
        assert word in captured.err, (word, captured.err)


def flattens(preprocessor: str) -> bool:
    """Does the preprocessor turn images into vectors (so only the mlp can take its output)?"""
    pre = PREPROCESSORS.get(preprocessor)(defaults()["preprocess"]).fit(torch.rand(64, 1, 8, 8))
    return len(pre.output_shape((1, 8, 8))) != 3


def needs_images(c: Case) -> bool:
    return any(o in ("model.name=convnet", "model.name=resnet") for o in c.overrides)


@pytest.mark.parametrize("c", ALL_CASES)
def test_trains_one_step_from_the_cli(c: Case, tmp_path, capsys, data_overrides, no_png_drawing):
    out = tmp_path / "run"
    rc = train_cli(out, *(data_overrides(c.data) if c.data else []), *c.overrides)
    captured = capsys.readouterr()
    overrides = dict(o.split("=", 1) for o in c.overrides)
    # Two combinations are bad input, refused with a clear message instead of trained:
    if overrides.get("model.norm") == "instance" and overrides.get("model.name", "mlp") == "mlp":
        assert_user_error(rc, captured, "model.norm=instance", "H x W", "model.norm=layer")
    elif "preprocess.name" in overrides and needs_images(c) and flattens(overrides["preprocess.name"]):
        assert_user_error(rc, captured, f"model.name={overrides['model.name']}", "model.name=mlp")
    else:
        assert_trained_one_step(out, rc, captured)
        return
    assert not (out / "summary.json").exists()


# --- what some cases must also show -----------------------------------------------------------


def test_lbfgs_is_full_batch_without_dropout_or_augmentation_and_says_so(tmp_path, capsys, no_png_drawing):
    out = tmp_path / "run"
    rc = train_cli(out, "optim.name=lbfgs", "optim.lr=0.5", "model.dropout=0.5", "model.dropconnect=0.3",
                   "augment.names=[flip,cutout]")
    captured = capsys.readouterr()
    assert_trained_one_step(out, rc, captured)
    assert "full-batch" in captured.out and "turning off dropout" in captured.out, captured.out
    used = yaml.safe_load((out / "config.yaml").read_text())  # the config the run really used
    n_train = 180  # 200 images minus the 10% validation split
    assert used["train"]["batch_size"] == n_train
    assert used["model"]["dropout"] == used["model"]["dropconnect"] == 0 and used["augment"]["names"] == []


def test_batch_scaling_rule_scales_the_first_rate(tmp_path, capsys, no_png_drawing):
    out = tmp_path / "run"
    rc = train_cli(out, "optim.batch_scaling=true", "optim.lr=0.01", "optim.reference_batch=256",
                   "schedule.name=constant")
    assert_trained_one_step(out, rc, capsys.readouterr())
    assert first_step_lr(out) == pytest.approx(0.01 * 32 / 256)


def test_warmup_starts_the_schedule_below_the_base_rate(tmp_path, capsys, no_png_drawing):
    out = tmp_path / "run"
    rc = train_cli(out, "schedule.warmup_epochs=0.5", "schedule.name=cosine", "optim.lr=0.01")
    assert_trained_one_step(out, rc, capsys.readouterr())
    # 180 images / 32 = 6 updates per epoch, so W = round(0.5 * 6) = 3 and the first rate is lr / 3
    assert first_step_lr(out) == pytest.approx(0.01 / 3)


def test_ema_weights_are_evaluated_and_reported(tmp_path, capsys, no_png_drawing):
    out = tmp_path / "run"
    rc = train_cli(out, "train.ema=0.9")
    summary = assert_trained_one_step(out, rc, capsys.readouterr())
    assert 0 <= summary["test_acc_ema"] <= 1
    assert math.isfinite(epoch_record(out)["val_loss_ema"])


def test_tta_changes_only_the_test_predictions(tmp_path, capsys, no_png_drawing):
    """augment.tta averages softmax over fixed views at test time: the same seed trains the same
    weights, so validation agrees and only the test metrics move."""
    runs = {}
    for tta in ("none", "flip", "crops"):
        assert train_cli(tmp_path / tta, f"augment.tta={tta}", "model.name=convnet") == 0, capsys.readouterr().err
        runs[tta] = (epoch_record(tmp_path / tta), json.loads((tmp_path / tta / "summary.json").read_text()))
    assert runs["none"][0]["val_loss"] == runs["flip"][0]["val_loss"] == runs["crops"][0]["val_loss"]
    assert len({summary["test_loss"] for _, summary in runs.values()}) == 3


def test_gradient_clipping_bounds_the_update_norm():
    """train.clip_grad = c: g <- g * min(1, c / ||g||_2) over all parameters together, so one SGD
    step with rate 1 moves the weights by exactly min(c, ||g||)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4)
    x, y = torch.randn(32, 16) * 10, torch.randint(0, 4, (32,))
    for clip in (0.01, 1e6):  # clipped, and far above the gradient's norm (untouched)
        start = [p.detach().clone() for p in model.parameters()]
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=1.0), None, None,
                          torch.nn.functional.cross_entropy, lambda m: {}, 1, clip_grad=clip)
        trainer.optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grad_norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
        trainer.train_step(x, y)
        moved = torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start)]).norm().item()
        assert moved == pytest.approx(min(clip, grad_norm), rel=1e-4)
        assert (clip < grad_norm) == (clip == 0.01)


class RecordWeights(Callback):
    def __init__(self):
        self.after_step = []

    def on_step_end(self, trainer, step):
        self.after_step.append(torch.nn.utils.parameters_to_vector(trainer.model.parameters()).detach().clone())


def test_ema_follows_the_polyak_recurrence_with_warm_up():
    """train.ema = d: theta_bar_1 = theta_1, then theta_bar_t = d_t * theta_bar_(t-1) + (1 - d_t) * theta_t
    after every update, d_t = min(d, (1 + t) / (10 + t)) for the t-th average (Polyak/EMA with warm-up)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    x, y = torch.randn(200, 6), torch.randint(0, 3, (200,))
    ema, record, decay = EMA(0.6), RecordWeights(), 0.6  # (1+t)/(10+t) reaches 0.6 at t = 12.5
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), None, TensorLoader(x, y, 8),
            torch.nn.functional.cross_entropy, lambda m: {}, 1, callbacks=[ema, record]).fit()
    expected = record.after_step[0]
    for t, theta in enumerate(record.after_step[1:], start=1):
        d = min(decay, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * theta
    assert len(record.after_step) == 25
    torch.testing.assert_close(torch.nn.utils.parameters_to_vector(ema.model.module.parameters()), expected)
    assert not torch.allclose(expected, record.after_step[-1])  # the average is not the last weights


@pytest.mark.parametrize("t", [1, 2, 5, 30, 200])
def test_ema_warm_up_keeps_the_closed_form_weight_of_the_start(t):
    """Before the cap, d_s = (1 + s)/(10 + s), so after t averages the first weights keep
    prod_{s=1..t} d_s = 10! (t + 1)! / (t + 10)! of the average (2/11 after one: not 0.999) and
    the weights seen since then the rest; with the cap d the schedule is min(d, (1 + t)/(10 + t))."""
    from trainlab.callbacks import ema_warmup_decay

    start, later = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        start.weight.fill_(1.0)
        later.weight.fill_(0.0)
    ema = EMA(0.9999)
    trainer = Trainer(start, torch.optim.SGD(start.parameters(), lr=0.0), None, None, None, lambda m: {}, 1)
    ema.on_train_start(trainer)
    ema.model.update_parameters(start)  # the copy: theta_bar = theta_0
    for _ in range(t):
        ema.model.update_parameters(later)
    closed_form = math.factorial(10) * math.factorial(t + 1) / math.factorial(t + 10)
    assert ema.model.module.weight.item() == pytest.approx(closed_form, rel=1e-5)
    assert ema_warmup_decay(0.999, t) == pytest.approx(min(0.999, (1 + t) / (10 + t)))
    assert ema_warmup_decay(0.5, t) == (0.5 if t >= 8 else (1 + t) / (10 + t))


# --- coverage of the registries ---------------------------------------------------------------


def test_registries_hold_every_name_the_spec_promises():
    assert set(REGISTRIES) == set(SPEC_NAMES), "a new registry needs cases (and SPEC_NAMES) here"
    for kind, promised in SPEC_NAMES.items():
        missing = promised - set(names(kind))
        assert not missing, f"{kind}: docs/design.md names {sorted(missing)} are not registered"


def test_every_registered_name_has_a_case():
    """The cases above are generated from the registries; this guards the generators themselves."""
    text = " ".join(" ".join(p.values[0].overrides) + f" data.name={p.values[0].data}" for p in ALL_CASES)
    key = {"datasets": "data.name", "preprocessors": "preprocess.name", "models": "model.name",
           "activations": "model.activation", "norms": "model.norm", "inits": "model.init",
           "penalties": "reg.penalty", "optimizers": "optim.name", "schedules": "schedule.name"}
    for kind, registry in REGISTRIES.items():
        for name in registry.names():
            if kind == "augmentations":
                assert f"augment.names=[{name}]" in text, name
            else:
                assert f"{key[kind]}={name} " in text + " ", (kind, name)


def test_components_doc_has_a_row_per_name_and_names_real_tests():
    """docs/components.md stays in step: a row for every registered name, and every test it cites exists."""
    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "components.md").read_text()
    rows = [line.split("|") for line in doc.splitlines() if line.startswith("| ") and not line.startswith("| name ")]
    first_cells = [cells[1] for cells in rows]
    for kind, registry in REGISTRIES.items():
        for name in registry.names():
            assert any(f"`{name}`" in cell for cell in first_cells), f"docs/components.md has no row for {kind} {name!r}"
    assert all("tests/test_" in cells[-2] for cells in rows), "every row names the test that checks it"
    for path, test in set(re.findall(r"(tests/test_\w+\.py)::(\w+)", doc)):
        assert re.search(rf"^def {test}\(", (root / path).read_text(), re.M), f"{path}::{test} does not exist"

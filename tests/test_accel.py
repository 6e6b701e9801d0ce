"""Accelerator settings on the CPU: bf16 autocast, the fp16 GradScaler path, torch.compile and
checkpoints across it, refusals (exit 2 naming the key), kernel flags, memory figures.

The CUDA side of the same code is checked by ``benchmarks/gpu_check.py`` on a GPU machine.
"""
import json

import psutil
import pytest
import torch
import torch.nn as nn

from tests.helpers import assert_user_error, quiet, run_cli
from tests.test_train import InterruptAt
from trainlab.checkpoint import load_checkpoint, load_model_state, model_state, strip_wrapper_prefixes, unwrap_model
from trainlab.classifier import load_classifier
from trainlab.config import load_config
from trainlab.data import load_data
from trainlab.data.loader import TensorLoader
from trainlab.device import autocast_dtype, check_compile, configure_backends
from trainlab.errors import UserError
from trainlab.evaluate import predict_probs
from trainlab.run import train_run
from trainlab.train import Callback, Trainer

TINY = ["train.batch_size=64", "train.progress=false", "model.width=32", "monitor.every=0", "optim.lr=0.01"]
CPU = torch.device("cpu")


def tiny_cfg(*extra):
    return load_config(None, TINY + list(extra))


class ForwardDtypes(Callback):
    """Records the dtype of the network's first layer output in training and in evaluation."""

    name = "forward_dtypes"

    def __init__(self):
        self.seen = {"train": set(), "eval": set()}

    def on_train_start(self, trainer):
        first = next(m for m in trainer.model.modules() if isinstance(m, nn.Linear))
        first.register_forward_hook(lambda m, i, out: self.seen["train" if m.training else "eval"].add(out.dtype))


# --- train.amp -------------------------------------------------------------------------------
def test_amp_settings_resolve_per_device():
    assert autocast_dtype("off", CPU) is None
    assert autocast_dtype("auto", CPU) is None  # no native bf16 arithmetic on a CPU: auto stays float32
    assert autocast_dtype("bf16", CPU) is torch.bfloat16
    for spelling in ("fp16", "on"):  # on is the old spelling of fp16
        with pytest.raises(UserError, match=f"train.amp={spelling} cannot be honoured on cpu"):
            autocast_dtype(spelling, CPU)


@pytest.mark.slow
def test_fp16_on_cpu_exits_2_naming_the_key(tmp_path):
    result = run_cli("train", "train.amp=fp16", "train.epochs=1", "--out", str(tmp_path / "run"))
    assert_user_error(result, "train.amp=fp16", "train.amp=bf16")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bf16_trains_digits_within_one_point_of_fp32(tmp_path):
    fp32 = train_run(tiny_cfg("train.epochs=4", "train.amp=off"), tmp_path / "fp32", say=quiet, report=False)
    probe = ForwardDtypes()
    bf16 = train_run(tiny_cfg("train.epochs=4", "train.amp=bf16"), tmp_path / "bf16", callbacks=[probe], say=quiet, report=False)
    assert bf16["amp"] == "bf16" and fp32["amp"] == "off"
    assert probe.seen == {"train": {torch.bfloat16}, "eval": {torch.bfloat16}}  # evaluation under the same autocast
    assert fp32["test_acc"] > 0.9 and abs(bf16["test_acc"] - fp32["test_acc"]) <= 0.01, (fp32["test_acc"], bf16["test_acc"])
    # weights, checkpoints and metrics stay float32
    ckpt = load_checkpoint(tmp_path / "bf16" / "checkpoints" / "last.pt")
    assert {v.dtype for v in ckpt["model"].values() if v.is_floating_point()} == {torch.float32}
    assert ckpt["scaler"] == {}  # bf16 has float32's range: no loss scaling


@pytest.mark.slow
def test_fp16_trainer_scales_the_loss_and_resumes_its_scale():
    """The fp16 path (autocast + GradScaler) as the GPU runs it, driven on the CPU through the
    Trainer (the run-level setting refuses fp16 on a CPU)."""
    torch.manual_seed(0)
    x, y = torch.randn(256, 16), torch.randint(0, 4, (256,))

    def trainer(epochs):
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return Trainer(model, opt, None, TensorLoader(x, y, 32), nn.functional.cross_entropy, lambda m: {}, epochs,
                       amp=torch.float16, device=CPU)

    first = trainer(2)
    first.fit()
    assert first.scaler.is_enabled()
    losses = [h["train_loss"] for h in first.state.history]
    assert losses[-1] < losses[0]
    state = first.state_dict()
    assert state["scaler"]["scale"] > 0 and state["model"]["0.weight"].dtype == torch.float32
    resumed = trainer(2)
    resumed.load_state_dict(state)
    assert resumed.scaler.get_scale() == first.scaler.get_scale()


# --- wrapper prefixes --------------------------------------------------------------------------
@pytest.mark.slow
def test_checkpoint_keys_are_the_plain_models_whatever_wraps_it():
    plain = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    keys = set(plain.state_dict())
    for wrapped in (torch.compile(plain), nn.DataParallel(plain), torch.compile(nn.DataParallel(plain))):
        assert unwrap_model(wrapped) is plain
        assert set(model_state(wrapped)) == keys
        prefixed = wrapped.state_dict()  # what a tool that does not unwrap saves
        assert set(prefixed) != keys and set(strip_wrapper_prefixes(prefixed)) == keys
        other = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        load_model_state(other, prefixed)
        assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), plain.state_dict().values()))


def test_a_plain_model_with_a_child_named_module_keeps_its_keys():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(2, 2)

    a, b = Holder(), Holder()
    load_model_state(b, a.state_dict())
    assert torch.equal(a.module.weight, b.module.weight)


# --- train.compile (torch.compile compiles C++ on the CPU: seconds per graph) -----------------------
def test_compile_is_refused_without_a_compiler(monkeypatch):
    assert check_compile("off", CPU) is False
    monkeypatch.setattr("trainlab.device.shutil.which", lambda name: None)
    with pytest.raises(UserError, match="train.compile=on cannot be honoured on cpu.*C\\+\\+ compiler"):
        check_compile("on", CPU)


@pytest.mark.slow
def test_compiled_run_checkpoint_loads_into_an_uncompiled_model(tmp_path):
    summary = train_run(tiny_cfg("train.epochs=2", "train.compile=on"), tmp_path / "run", say=quiet, report=False)
    assert summary["compile"] is True and summary["test_acc"] > 0.8
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])
    plain = load_classifier(ckpt)  # strict load into a model that was never compiled
    data = load_data(load_config(None, []))
    probs = predict_probs(plain, data.test_x)
    assert float((probs.argmax(1) == data.test_y).float().mean()) == summary["test_acc"]
    compiled = torch.compile(load_classifier(ckpt))
    torch.testing.assert_close(predict_probs(compiled, data.test_x), probs, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_resume_crosses_the_compile_switch_both_ways(tmp_path):
    """Epoch 1 compiled, interrupted in epoch 2; resumed uncompiled, interrupted in epoch 3;
    resumed compiled to the end: the same run as one uncompiled stretch (up to kernel rounding)."""
    epochs = ["train.epochs=3"]
    straight = train_run(tiny_cfg(*epochs), tmp_path / "straight", say=quiet, report=False)
    per_epoch = straight["steps"] // 3
    run = tmp_path / "switched"
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny_cfg(*epochs, "train.compile=on"), run, callbacks=[InterruptAt(per_epoch + 2)], say=quiet, report=False)
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny_cfg(*epochs), run, resume=True, callbacks=[InterruptAt(2 * per_epoch + 2)], say=quiet, report=False)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
    switched = train_run(tiny_cfg(*epochs, "train.compile=on"), run, resume=True, say=quiet, report=False)
    assert switched["epochs"] == 3 and switched["steps"] == straight["steps"] and switched["compile"] is True
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt")["model"] for r in (tmp_path / "straight", run))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=1e-3)
    assert abs(switched["test_acc"] - straight["test_acc"]) <= 0.01


# --- kernel flags and memory figures ---------------------------------------------------------------
def test_deterministic_turns_the_autotuner_off_and_contradicting_it_is_refused():
    try:
        configure_backends(torch.device("cuda"), deterministic=False, cudnn_benchmark="auto")
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        configure_backends(torch.device("cuda"), deterministic=True, cudnn_benchmark="auto")
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
        configure_backends(CPU, deterministic=False, cudnn_benchmark="auto")
        assert not torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    finally:
        configure_backends(CPU, deterministic=False, cudnn_benchmark="off")
    with pytest.raises(UserError, match="train.deterministic=true and train.cudnn_benchmark=on"):
        load_config(None, ["train.deterministic=true", "train.cudnn_benchmark=on"])


@pytest.mark.slow
def test_summary_reports_the_processes_peak_rss(tmp_path):
    summary = train_run(tiny_cfg("train.epochs=1"), tmp_path / "run", say=quiet, report=False)
    now = psutil.Process().memory_info().rss / 2**20
    assert now * 0.98 <= summary["peak_rss_mb"] < 64 * 1024  # a high-water mark is at least today's RSS
    assert "peak_device_memory_mb" not in summary  # CUDA only
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["peak_rss_mb"] == summary["peak_rss_mb"]

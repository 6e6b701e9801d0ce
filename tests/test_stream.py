"""The streaming data path (data.stream) and exact mid-epoch resume (train.checkpoint_every).

Small sets written here: a folder of PNGs of differing sizes, an npy folder made from the
digits, and MNIST/CIFAR files in their official layouts (writers shared with test_data).
"""
from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import quiet
from tests.test_data import write_cifar, write_mnist
from trainlab.config import load_config
from trainlab.data import describe_datasets, load_data
from trainlab.data.loader import TensorLoader, shard
from trainlab.data.stream import LazyImages, StreamLoader, default_workers, open_data, open_source, open_stream
from trainlab.errors import UserError
from trainlab.run import prepare, train_run
from trainlab.train import Callback


def write_folder(root: Path, per_class: int = 10, classes=("a", "b", "c"), seed: int = 0) -> Path:
    """PNGs of differing sizes (so resizing matters), colour and grey mixed."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = int(rng.integers(9, 20)), int(rng.integers(9, 20))
            shape = (h, w) if i % 4 == 0 else (h, w, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def write_npy(folder: Path, n: int | None = None) -> Path:
    """The digits as an npy folder: x (N, 1, 8, 8) float32 in [0, 1], y int64, and a test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None][:n]
    y = digits.target.astype(np.int64)[:n]
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "x.npy", x[:-100])
    np.save(folder / "y.npy", y[:-100])
    np.save(folder / "x_test.npy", x[-100:])
    np.save(folder / "y_test.npy", y[-100:])
    return folder


def config(*overrides: str) -> dict:
    return load_config(None, ["train.progress=false", "monitor.every=0", *overrides])


def batches(loader, epochs: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        out += [(x.clone(), y.clone()) for x, y in loader]
    return out


# --- must show 1: the same batches, and the same preprocessing fit ---------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_streaming_and_in_memory_give_identical_batches(tmp_path, workers):
    root = write_folder(tmp_path / "pets")
    common = ("data.name=folder", f"data.path={root}", "data.image_size=12", "train.batch_size=7", "seed=3",
              f"data.workers={workers}", "augment.names=[flip,crop,jitter,cutout]", "augment.cutout_size=4")
    memory = prepare(config(*common, "data.stream=off"), say=quiet)
    streamed = prepare(config(*common, "data.stream=on"), say=quiet)
    assert isinstance(memory.loader, TensorLoader) and isinstance(streamed.loader, StreamLoader)
    assert isinstance(streamed.data.train_x, LazyImages)
    # The same samples selected (train/val split from labels alone) and decoded to the same pixels.
    assert torch.equal(streamed.data.train_x[:], memory.data.train_x)
    assert torch.equal(streamed.data.val_x[:], memory.data.val_x)
    a, b = batches(memory.loader), batches(streamed.loader)
    assert len(a) == len(b) == 2 * len(memory.loader)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)  # same indices, same augmented pixels
    assert not torch.equal(a[0][0], a[len(memory.loader)][0][: len(a[0][0])])  # epochs differ


@pytest.mark.parametrize("name", ["standardize", "mean_image", "zca"])
def test_streaming_preprocessing_fit_equals_in_memory_fit(tmp_path, name):
    root = write_folder(tmp_path / "pets")
    common = ("data.name=folder", f"data.path={root}", "data.image_size=8", f"preprocess.name={name}",
              "augment.names=[lighting]")
    memory = prepare(config(*common, "data.stream=off"), say=quiet)
    streamed = prepare(config(*common, "data.stream=on"), say=quiet)
    buffers = dict(memory.model.preprocess.named_buffers())
    for key, value in streamed.model.preprocess.named_buffers():
        assert value.shape == buffers[key].shape
        assert torch.allclose(value.double(), buffers[key].double(), atol=1e-6, rtol=0), key
    # Lighting (AlexNet PCA colour noise) is fitted on the streamed split the same way.
    lighting = [a for a in memory.augment.augmentations if a.name == "lighting"][0]
    streamed_lighting = [a for a in streamed.augment.augmentations if a.name == "lighting"][0]
    for (k, v), (_, w) in zip(vars(lighting).items(), vars(streamed_lighting).items()):
        if isinstance(v, torch.Tensor):
            assert torch.allclose(v, w, atol=1e-6), k


# --- sources --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_streams_the_same_pixels(tmp_path, gz):
    write_mnist(tmp_path / "mnist", gz=gz, n_train=30, n_test=10)
    cfg = config("data.name=mnist", f"data.root={tmp_path}", "data.download=false", "data.workers=0")
    memory, streamed = load_data(cfg), open_stream(cfg)
    assert (streamed.train_x.source.reopen is not None) == (not gz)  # raw IDX is memory-mapped
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(streamed, f"{split}_x")[:], getattr(memory, f"{split}_x"))
        assert torch.equal(getattr(streamed, f"{split}_y"), getattr(memory, f"{split}_y"))


def test_cifar_and_npy_stream_the_same_pixels(tmp_path):
    write_cifar(tmp_path / "cifar10", "cifar10", as_tar=True)
    write_npy(tmp_path / "npy", n=300)
    for name in ("cifar10", "npy"):
        cfg = config(f"data.name={name}", f"data.root={tmp_path}", "data.download=false", "data.classes=[2,5,7]")
        memory, streamed = load_data(cfg), open_stream(cfg)
        assert streamed.classes == memory.classes
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(streamed, f"{split}_x")[:], getattr(memory, f"{split}_x")), (name, split)
            assert torch.equal(getattr(streamed, f"{split}_y"), getattr(memory, f"{split}_y")), (name, split)
    assert isinstance(open_stream(cfg).train_x.source.array, np.memmap)


def test_data_command_says_which_sets_stream(tmp_path):
    rows = {r["name"]: r["stream"] for r in describe_datasets({"root": str(tmp_path), "download": False})}
    assert rows["digits"] == "in memory only" and rows["npz"] == "in memory only"
    for name in ("npy", "folder", "mnist", "fashion-mnist", "cifar10", "cifar100"):
        assert rows[name].startswith("streams"), name
    with pytest.raises(UserError, match="cannot stream"):
        open_data(config("data.stream=on"), torch.device("cpu"))


def test_auto_streams_only_what_exceeds_the_memory_limit(tmp_path):
    write_npy(tmp_path / "npy", n=400)
    base = ("data.name=npy", f"data.path={tmp_path / 'npy'}", "data.stream=auto", "data.workers=0")
    data, path = open_data(config(*base, "data.memory_limit_gb=0.00005"), torch.device("cpu"))  # 54 kB < 102 kB
    assert path.stream and isinstance(data.train_x, LazyImages) and "exceeds" in path.reason
    data, path = open_data(config(*base), torch.device("cpu"))  # default: a quarter of RAM
    assert not path.stream and isinstance(data.train_x, torch.Tensor) and "fits" in path.reason
    data, path = open_data(config("data.stream=auto"), torch.device("cpu"))  # digits: no streaming source
    assert not path.stream and "cannot stream" in path.reason


def test_shard_splits_every_global_batch_across_ranks(tmp_path):
    write_npy(tmp_path / "npy", n=200)
    data = open_stream(config("data.name=npy", f"data.path={tmp_path / 'npy'}", "data.workers=0"))
    whole = batches(StreamLoader(data.train_x, data.train_y, 10, "cpu", seed=1), epochs=1)
    ranks = [batches(StreamLoader(data.train_x, data.train_y, 10, "cpu", seed=1, rank=r, world_size=3), epochs=1)
             for r in range(3)]
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([ranks[r][b][1] for r in range(3)]).sort().values, y.sort().values)
        for r in range(3):
            assert torch.equal(ranks[r][b][0], shard(x, r, 3))  # without augmentation: the global batch's share
    assert shard(torch.arange(7), 0, 1).tolist() == list(range(7))


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_corrupt_image_mid_run_exits_2_naming_the_file(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=6)
    bad = root / "b" / "3.png"
    blob = bad.read_bytes()
    bad.write_bytes(blob[: len(blob) // 2])  # the header reads (the folder opens), the pixels do not
    cmd = [sys.executable, "-m", "trainlab", "train", "data.name=folder", f"data.path={root}", "data.image_size=8",
           "data.stream=on", "data.workers=1", "train.epochs=2", "train.batch_size=4", "train.progress=false",
           "monitor.every=0", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr
    assert "3.png" in done.stderr and "Traceback" not in done.stderr


class KillsItsWorker:
    """A source whose decoder dies (as under the out-of-memory killer) on sample 5."""

    sample_shape = (1, 2, 2)

    def __len__(self):
        return 12

    def read(self, indices):
        if 5 in indices.tolist() and os.getpid() != PARENT:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(len(indices), *self.sample_shape)

    def describe(self, indices):
        return ", ".join(f"file{i}.png" for i in indices)


PARENT = os.getpid()


def test_a_worker_that_dies_is_an_error_naming_the_files_not_a_hang():
    images = LazyImages(KillsItsWorker(), np.arange(12))
    loader = StreamLoader(images, torch.zeros(12, dtype=torch.int64), 4, "cpu", shuffle=False, workers=1)
    with pytest.raises(UserError, match=r"worker stopped .*file5\.png"):
        list(loader)


# --- must show 2: killed mid-epoch, resumed bit for bit --------------------------------------


class Kill(Callback):
    """Dies at a given step, after the checkpointer's last mid-epoch write (a SIGKILL leaves nothing else)."""

    name = "kill"

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step):
        if step.step == self.step:
            raise KeyboardInterrupt


def run_config(tmp_path: Path, stream: str) -> dict:
    return config("data.name=npy", f"data.path={tmp_path / 'npy'}", f"data.stream={stream}", "data.workers=0",
                  "train.epochs=3", "train.batch_size=64", "train.checkpoint_every=5", "model.dropout=0.2",
                  "augment.names=[crop,cutout]", "augment.crop_padding=1", "augment.cutout_size=2", "train.ema=0.9",
                  "seed=4")


def final_state(run: Path) -> tuple[dict, list]:
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    history = [{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in ckpt["history"]]
    return ckpt["model"], history


@pytest.mark.parametrize("stream", ["off", "on"])
def test_killed_mid_epoch_resumes_bit_for_bit(tmp_path, stream):
    write_npy(tmp_path / "npy", n=700)  # 600 images: 540 train → 9 steps per epoch
    cfg = run_config(tmp_path, stream)
    silent = dict(say=quiet, report=False)
    train_run(cfg, tmp_path / "whole", **silent)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "cut", callbacks=[Kill(13)], **silent)  # mid-epoch 2; last.pt at step 10
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["step"] == 10
    resumed = train_run(cfg, tmp_path / "cut", resume=True, **silent)
    (wa, ha), (wb, hb) = final_state(tmp_path / "whole"), final_state(tmp_path / "cut")
    assert ha == hb and len(ha) == 3
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert resumed["test_acc"] == whole["test_acc"] and resumed["steps"] == whole["steps"] == 27
    assert resumed["data_stream"]["stream"] == (stream == "on")
    steps = [r["step"] for r in map(json.loads, (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines())]
    assert len(steps) == len(set(steps))  # nothing logged twice across the resume


def test_checkpoint_every_unset_saves_mid_epoch_only_after_the_time_limit(tmp_path, monkeypatch):
    from trainlab.callbacks import Checkpointer

    write_npy(tmp_path / "npy", n=700)
    cfg = config("data.name=npy", f"data.path={tmp_path / 'npy'}", "data.stream=off", "train.epochs=1")
    silent = dict(say=quiet, report=False)
    for seconds, expected_step in ((600.0, 0), (0.0, 2)):  # 10 minutes never pass; 0 s always have
        monkeypatch.setattr(Checkpointer, "AUTO_SECONDS", seconds)
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg, tmp_path / f"run{seconds}", callbacks=[Kill(3)], **silent)
        assert torch.load(tmp_path / f"run{seconds}" / "checkpoints" / "last.pt", weights_only=True)["step"] == expected_step


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_bit_for_bit(tmp_path):
    """A real SIGKILL of `trainlab train` as soon as a mid-epoch last.pt exists; --resume then
    ends where an uninterrupted run ends (whatever step the kill landed on)."""
    write_npy(tmp_path / "npy", n=700)
    args = ["data.name=npy", f"data.path={tmp_path / 'npy'}", "data.stream=on", "data.workers=1", "train.epochs=2",
            "train.batch_size=16", "train.checkpoint_every=5", "train.progress=false", "monitor.every=0",
            "model.dropout=0.1", "augment.names=[crop]", "seed=2"]
    cli = [sys.executable, "-m", "trainlab", "train", *args]
    subprocess.run([*cli, "--out", str(tmp_path / "whole")], check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen([*cli, "--out", str(tmp_path / "cut")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    try:
        for _ in range(6000):
            if last.exists() and torch.load(last, weights_only=True)["step"] >= 10:
                break
            if proc.poll() is not None:
                pytest.fail("the run ended before it could be killed mid-epoch")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its loader worker
    finally:
        proc.wait(timeout=60)
    killed_at = torch.load(last, weights_only=True)
    assert killed_at["running"] is not None  # a mid-epoch checkpoint
    subprocess.run([*cli, "--resume", str(tmp_path / "cut")], check=True, capture_output=True, timeout=600)
    (wa, ha), (wb, hb) = final_state(tmp_path / "whole"), final_state(tmp_path / "cut")
    assert ha == hb
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_arrays_stream_in_the_main_process_and_image_files_through_workers(tmp_path, monkeypatch):
    """A batch of a memory-mapped array is cheaper to read than to ship from a worker; a PNG's
    decoding is worth one (unless data.workers says otherwise)."""
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    npy = open_source(config("data.name=npy", f"data.path={write_npy(tmp_path / 'npy')}")["data"])
    folder = open_source(config("data.name=folder", f"data.path={write_folder(tmp_path / 'pets')}")["data"])
    assert default_workers(npy.train) == 0 and default_workers(folder.train) == 3
    data = open_stream(config("data.name=npy", f"data.path={tmp_path / 'npy'}"))
    assert data.train_x.workers == 0
    data = open_stream(config("data.name=npy", f"data.path={tmp_path / 'npy'}", "data.workers=2"))
    assert data.train_x.workers == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps through psutil")
@pytest.mark.slow
def test_streamed_rows_are_read_without_mapping_the_file_into_the_process(tmp_path):
    """Reading rows through the memory map maps whole page-cache folios around each one (about
    1.5 MB per 3 KB row was measured), so an epoch over a big file showed as that much process
    memory; rows are read with pread instead and the file stays out of the process."""
    import psutil

    folder = write_npy(tmp_path / "npy", n=4000)
    data = open_stream(config("data.name=npy", f"data.path={folder}", "data.workers=0"))
    loader = StreamLoader(data.train_x, data.train_y, 64, "cpu", seed=0)
    mapped = []
    for _ in loader:
        maps = {m.path: m.rss for m in psutil.Process().memory_maps(grouped=True)}
        mapped.append(maps.get(str(folder / "x.npy"), 0))
    assert max(mapped) <= 64 * 2**10  # at most what opening it maps (its first row); the file is 434 KB
    fd = data.train_x.source._fd
    os.fstat(fd)  # the file pread reads from is open while its source lives ...
    del data, loader
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)  # ... and closed with it, not left open for the life of the process

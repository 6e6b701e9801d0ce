"""Tests of trainlab.data: every format read from small files written here in the real layout.

Nothing here touches the internet: downloads go to a loopback HTTP server started by the test.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import struct
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.data import DataBundle, data_root, describe_datasets, load_data
from trainlab.data import datasets as ds
from trainlab.data.datasets import DATASETS, read_idx
from trainlab.data.download import download_file
from trainlab.data.loader import TensorLoader
from trainlab.data.split import per_class_subset, stratified_split, stratified_subset
from trainlab.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load(name: str, root: Path, path: Path | None = None, download: bool = False, image_size: int = 8):
    return DATASETS.get(name)(root, path, download, image_size)


# --- writers for the official formats ------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: 0, 0, type 0x08, ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_mnist(folder: Path, gz: bool = True, n_train: int = 20, n_test: int = 10, seed: int = 0):
    """Four tiny MNIST-format files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


def cifar_pickle(obj: dict) -> bytes:
    # Protocol 2 with bytes keys: the shape of the official (Python 2 era) batches.
    return pickle.dumps(obj, protocol=2)


def cifar_members(n_classes: int, per_batch: int = 6, seed: int = 0) -> tuple[dict[str, bytes], np.ndarray, list]:
    """Member name → pickle bytes for CIFAR-10 (n_classes=10) or CIFAR-100 (100)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (per_batch * 6, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, n_classes, per_batch * 6)]
    members = {}
    if n_classes == 10:
        for i in range(5):
            part = slice(i * per_batch, (i + 1) * per_batch)
            members[f"data_batch_{i + 1}"] = cifar_pickle(
                {b"batch_label": b"training batch", b"labels": labels[part], b"data": images[part], b"filenames": [b"x.png"] * per_batch}
            )
        members["test_batch"] = cifar_pickle({b"labels": labels[-per_batch:], b"data": images[-per_batch:]})
        members["batches.meta"] = cifar_pickle({b"label_names": [n.encode() for n in ds.CIFAR10_CLASSES], b"num_vis": 3072})
    else:
        n_train = per_batch * 5
        members["train"] = cifar_pickle({b"fine_labels": labels[:n_train], b"coarse_labels": [0] * n_train, b"data": images[:n_train]})
        members["test"] = cifar_pickle({b"fine_labels": labels[n_train:], b"coarse_labels": [0] * per_batch, b"data": images[n_train:]})
        members["meta"] = cifar_pickle({b"fine_label_names": [f"class{i}".encode() for i in range(100)], b"coarse_label_names": [b"c"]})
    return members, images, labels


def write_cifar(folder: Path, name: str, as_tar: bool) -> tuple[np.ndarray, list]:
    subdir, tarball = ds.CIFAR_LAYOUT[name].subdir, ds.CIFAR_LAYOUT[name].tarball
    members, images, labels = cifar_members(10 if name == "cifar10" else 100)
    folder.mkdir(parents=True, exist_ok=True)
    if as_tar:
        with tarfile.open(folder / tarball, "w:gz") as tar:
            for member, blob in members.items():
                info = tarfile.TarInfo(f"{subdir}/{member}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        (folder / subdir).mkdir()
        for member, blob in members.items():
            (folder / subdir / member).write_bytes(blob)
    return images, labels


# --- IDX ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    raw = load("mnist", tmp_path)
    assert raw.train_x.shape == (20, 1, 28, 28) and raw.test_x.shape == (10, 1, 28, 28)
    assert raw.train_x.dtype == torch.uint8 and raw.train_y.dtype == torch.int64  # bytes stay bytes
    assert torch.equal(raw.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert raw.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert raw.classes == [str(d) for d in range(10)]


def test_fashion_mnist_class_names(tmp_path):
    write_mnist(tmp_path / "fashion-mnist")
    assert load("fashion-mnist", tmp_path).classes[9] == "Ankle boot"


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_names_file_and_says_redownload(tmp_path, gz):
    write_mnist(tmp_path / "mnist", gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / "mnist" / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(UserError, match=name) as info:
        load("mnist", tmp_path)
    assert "download it again" in str(info.value)


def test_idx_bad_magic_and_wrong_count(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(UserError, match="magic"):
        read_idx(bad)
    long = tmp_path / "long"
    long.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"extra")
    with pytest.raises(UserError, match="needs"):
        read_idx(long)


def test_label_count_must_match_images(tmp_path):
    write_mnist(tmp_path / "mnist", gz=False)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.zeros(7, np.uint8), gz=False)
    with pytest.raises(UserError, match="7 labels"):
        load("mnist", tmp_path)


# --- CIFAR ----------------------------------------------------------------------------------


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar10_batches(tmp_path, as_tar):
    images, labels = write_cifar(tmp_path / "cifar10", "cifar10", as_tar)
    raw = load("cifar10", tmp_path)
    assert raw.train_x.shape == (30, 3, 32, 32) and raw.test_x.shape == (6, 3, 32, 32)
    assert raw.train_y.tolist() == labels[:30] and raw.test_y.tolist() == labels[30:]
    # Row layout: 1024 red, 1024 green, 1024 blue bytes, each plane row-major.
    assert raw.train_x[0, 1, 0, 5].item() == images[0][1024 + 5]  # uint8 pixels
    assert raw.train_x[7, 2, 3, 4].item() == images[7][2048 + 3 * 32 + 4]
    assert raw.classes == ds.CIFAR10_CLASSES


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar100_fine_labels(tmp_path, as_tar):
    images, labels = write_cifar(tmp_path / "cifar100", "cifar100", as_tar)
    raw = load("cifar100", tmp_path)
    assert raw.train_x.shape == (30, 3, 32, 32) and raw.test_x.shape == (6, 3, 32, 32)
    assert raw.train_y.tolist() == labels[:30]
    assert len(raw.classes) == 100 and raw.classes[42] == "class42"
    assert torch.equal(raw.test_x[0].flatten(), torch.from_numpy(images[30]))


def test_cifar_damaged_tarball_and_incomplete_folder(tmp_path):
    write_cifar(tmp_path / "cifar10", "cifar10", as_tar=True)
    tarball = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    tarball.write_bytes(tarball.read_bytes()[:-200])
    with pytest.raises(UserError, match="cifar-10-python.tar.gz is damaged"):
        load("cifar10", tmp_path)
    write_cifar(tmp_path / "c100", "cifar100", as_tar=False)
    (tmp_path / "c100" / "cifar-100-python" / "meta").unlink()
    with pytest.raises(UserError, match="lacks meta"):
        load("cifar100", tmp_path, path=tmp_path / "c100")


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar(tmp_path / "cifar10", "cifar10", as_tar=False)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        load("cifar10", tmp_path)


# --- folder of images ---------------------------------------------------------------------


def save_image(path: Path, mode: str, size: tuple[int, int], value: int, fmt: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, colour).save(path, format=fmt)


def test_folder_of_pngs_mixed_modes_is_rgb(tmp_path):
    root = tmp_path / "pets"
    save_image(root / "cat" / "a.png", "RGB", (20, 10), 200)
    save_image(root / "cat" / "b.jpg", "L", (6, 6), 100)
    save_image(root / "dog" / "c.bmp", "RGB", (12, 12), 50)
    (root / "dog" / "notes.txt").write_text("ignored: not an image")
    raw = load("folder", tmp_path, path=root, image_size=8)
    assert raw.classes == ["cat", "dog"]
    assert raw.train_x.shape == (3, 3, 8, 8) and raw.test_x is None
    assert raw.train_y.tolist() == [0, 0, 1]
    assert raw.train_x[0, 0].mean().item() == pytest.approx(200 / 255, abs=0.01)
    assert raw.train_x[1].std(dim=0).max().item() < 0.02  # grey image repeated to 3 channels


def test_folder_all_grey_with_train_and_test(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for c in ("a", "b"):
            for i in range(n):
                save_image(tmp_path / "folder" / split / c / f"{i}.png", "L", (9, 9), 30 * i)
    raw = load("folder", tmp_path, image_size=5)
    assert raw.train_x.shape == (6, 1, 5, 5) and raw.test_x.shape == (2, 1, 5, 5)
    assert raw.test_y.tolist() == [0, 1]


def test_folder_unreadable_image_is_named(tmp_path):
    save_image(tmp_path / "folder" / "a" / "ok.png", "RGB", (4, 4), 1)
    (tmp_path / "folder" / "b").mkdir()
    (tmp_path / "folder" / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png"):
        load("folder", tmp_path)


# --- npz ------------------------------------------------------------------------------------


def test_npz_flat_features_and_string_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float64)
    file = tmp_path / "feat.npz"
    np.savez(file, x=x, y=np.array(["b", "a", "c"] * 4), x_test=x[:3], y_test=np.array(["a", "a", "c"]))
    raw = load("npz", tmp_path, path=file)
    assert raw.train_x.shape == (12, 5) and raw.train_x.dtype == torch.float32
    assert torch.allclose(raw.train_x, torch.from_numpy(x).float())  # floats are kept as they are
    assert raw.classes == ["a", "b", "c"] and raw.train_y[:3].tolist() == [1, 0, 2]
    assert raw.test_y.tolist() == [0, 0, 2]


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_images(tmp_path, layout):
    base = np.random.default_rng(0).integers(0, 256, (6, 3, 7, 7), dtype=np.uint8)
    x = {"nhw": base[:, 0], "nhwc": base.transpose(0, 2, 3, 1), "nchw": base}[layout]
    np.savez(tmp_path / "npz.npz", x=x, y=np.arange(6) % 2)
    raw = load("npz", tmp_path)  # default: <root>/npz(.npz)
    expected = torch.from_numpy(base[:, :1] if layout == "nhw" else base).float() / 255
    assert raw.train_x.shape == expected.shape and torch.allclose(raw.train_x, expected)
    assert raw.test_x is None and raw.classes == ["0", "1"]


def test_npz_missing_y(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3)))
    with pytest.raises(UserError, match="no array 'y'"):
        load("npz", tmp_path, path=tmp_path / "d.npz")


# --- digits -------------------------------------------------------------------------------


def test_digits_shape_range_and_fixed_split():
    raw = load("digits", Path("/nonexistent"))
    assert raw.train_x.shape[1:] == (1, 8, 8) and len(raw.train_x) + len(raw.test_x) == 1797
    assert len(raw.test_x) == pytest.approx(0.2 * 1797, abs=10)
    assert raw.train_x.min() == 0 and raw.train_x.max() == 1
    assert torch.equal(load("digits", Path("/x")).test_y, raw.test_y)  # same split every time


# --- split ----------------------------------------------------------------------------------


def test_stratified_split_is_stratified_and_seeded():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 2 + [3] * 1)
    keep, val = stratified_split(y, 0.1, seed=3)
    assert torch.bincount(y[val], minlength=4).tolist() == [5, 3, 1, 0]  # >= 1 if count > 1
    assert sorted(torch.cat([keep, val]).tolist()) == list(range(len(y)))
    again_keep, again_val = stratified_split(y, 0.1, seed=3)
    assert torch.equal(val, again_val) and torch.equal(keep, again_keep)
    assert not torch.equal(stratified_split(y, 0.1, seed=4)[1], val)
    keep0, val0 = stratified_split(y, 0.0, seed=3)
    assert len(val0) == 0 and len(keep0) == len(y)


def test_subsets():
    y = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    sub = stratified_subset(y, 10, seed=0)
    assert torch.bincount(y[sub]).tolist() == [6, 3, 1]
    assert len(stratified_subset(y, 33, seed=0)) == 33
    assert len(stratified_subset(y, 500, seed=0)) == 100
    per = per_class_subset(y, 20, seed=0)
    assert torch.bincount(y[per]).tolist() == [20, 20, 10]
    assert torch.equal(per, per_class_subset(y, 20, seed=0)) and not torch.equal(per, per_class_subset(y, 20, seed=1))


# --- load_data ----------------------------------------------------------------------------


def test_load_data_classes_per_class_subset_val(tmp_path):
    x = np.arange(60, dtype=np.float32).reshape(60, 1)
    y = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "npz.npz", x=x, y=y, x_test=x[:9], y_test=y[[0, 20, 40] * 3])
    cfg = {"seed": 0, "data": {"name": "npz", "root": str(tmp_path), "classes": [2.0, 0.0], "per_class": 10, "val_fraction": 0.2}}
    b = load_data(cfg)
    assert isinstance(b, DataBundle) and b.classes == ["2", "0"] and b.num_classes == 2 and b.input_shape == (1,)
    assert torch.bincount(b.train_y).tolist() == [8, 8] and torch.bincount(b.val_y).tolist() == [2, 2]
    assert (b.train_x[b.train_y == 0] >= 40).all() and (b.train_x[b.train_y == 1] < 20).all()  # relabelled in order
    assert b.test_y.tolist() == [1, 0, 1, 0, 1, 0]
    b = load_data({"seed": 0, "data": {**cfg["data"], "classes": None, "per_class": None, "subset": 30, "val_fraction": 0.0}})
    assert len(b.train_y) == 30 and len(b.val_y) == 0 and b.val_x.shape == (0, 1)
    with pytest.raises(UserError, match="data.classes"):
        load_data({"seed": 0, "data": {**cfg["data"], "classes": [5.0]}})


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "env"))
    assert data_root({"root": str(tmp_path / "cfg")}) == tmp_path / "cfg"
    assert data_root({"root": None}) == tmp_path / "env"
    monkeypatch.delenv("TRAINLAB_DATA")
    assert data_root({}) == Path("~/.cache/trainlab").expanduser()


def test_describe_datasets(tmp_path):
    write_mnist(tmp_path / "mnist")
    rows = {r["name"]: r for r in describe_datasets({"root": str(tmp_path), "download": False})}
    assert set(rows) == set(DATASETS)
    assert rows["mnist"]["present"] and not rows["cifar10"]["present"] and rows["digits"]["present"]
    assert "data.download is off" in rows["cifar10"]["note"]
    assert rows["npz"]["folder"] == str(tmp_path / "npz")


# --- loader ---------------------------------------------------------------------------------


def test_loader_covers_every_sample_once_and_reproduces_epochs():
    x = torch.arange(23, dtype=torch.float32)[:, None]
    y = torch.arange(23)

    def jitter(xb, yb, generator):
        return xb + torch.rand(xb.shape, generator=generator), yb

    loader = TensorLoader(x, y, batch_size=5, transform=jitter, seed=7)
    assert len(loader) == 5 and loader.num_samples == 23
    loader.set_epoch(3)
    first = list(loader)
    assert sorted(torch.cat([yb for _, yb in first]).tolist()) == list(range(23))
    assert all(torch.all((xb - x[yb]).abs() < 1) for xb, yb in first)
    loader.set_epoch(4)
    other = torch.cat([yb for _, yb in loader])
    resumed = TensorLoader(x, y, batch_size=5, transform=jitter, seed=7)
    resumed.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(first, resumed):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert not torch.equal(other, torch.cat([yb for _, yb in first]))
    assert len(TensorLoader(x, y, 5, drop_last=True)) == 4
    ordered = torch.cat([yb for _, yb in TensorLoader(x, y, 5, shuffle=False)])
    assert ordered.tolist() == list(range(23))


# --- downloads (loopback only) --------------------------------------------------------------


@pytest.fixture
def file_server(tmp_path, monkeypatch):
    """A loopback HTTP server over tmp_path/served; yields its base URL."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_good_and_bad_hash(file_server, tmp_path):
    served, url = file_server
    (served / "blob.bin").write_bytes(b"hello trainlab" * 1000)
    good = hashlib.sha256(b"hello trainlab" * 1000).hexdigest()
    dest = tmp_path / "out" / "blob.bin"
    assert download_file(url + "blob.bin", dest, good) == dest
    assert dest.read_bytes() == b"hello trainlab" * 1000
    bad_dest = tmp_path / "out2" / "blob.bin"
    with pytest.raises(UserError, match="SHA-256"):
        download_file(url + "blob.bin", bad_dest, "0" * 64)
    assert not bad_dest.parent.exists()  # neither the file, its temporary part, nor the folder made for it is left
    with pytest.raises(UserError, match="404"):
        download_file(url + "missing.bin", tmp_path / "out3" / "m.bin", None)


def test_download_offline_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "mnist" / "x.gz"
    with pytest.raises(UserError, match="offline") as info:
        download_file(f"http://127.0.0.1:{port}/x.gz", dest, None, timeout=5)
    assert str(dest.parent) in str(info.value) and "TRAINLAB_DATA" in str(info.value)
    assert not dest.exists()


def test_public_set_downloads_missing_files(file_server, tmp_path, monkeypatch):
    served, url = file_server
    arrays = write_mnist(served)
    files = tuple(replace(f, url=url + f.name, sha256=hashlib.sha256((served / f.name).read_bytes()).hexdigest()) for f in ds.PUBLIC_SETS["mnist"].files)
    monkeypatch.setitem(ds.PUBLIC_SETS, "mnist", replace(ds.PUBLIC_SETS["mnist"], files=files))
    raw = load("mnist", tmp_path / "root", download=True)
    assert raw.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == sorted(f.name for f in files)


def test_absent_public_set_without_download(tmp_path):
    for name in ("mnist", "cifar10"):
        with pytest.raises(UserError, match="data.download") as info:
            load(name, tmp_path, download=False)
        assert str(tmp_path / name) in str(info.value)


# --- the real data ------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="shared MNIST copy not present")
def test_real_mnist():
    raw = load("mnist", SHARED_DATA)
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(raw.train_y).sum() == 60000 and raw.train_y.max() == 9
    assert raw.train_x.float().mean().item() / 255 == pytest.approx(0.1307, abs=1e-3)


def test_load_data_cached_loads_once_per_data_and_seed(monkeypatch):
    import trainlab.data as data_pkg
    from trainlab.config import load_config

    calls = []
    real = data_pkg.load_data
    monkeypatch.setattr(data_pkg, "load_data", lambda cfg: calls.append(1) or real(cfg))
    cache: dict = {}
    cfg = load_config(None, ["data.subset=200"])
    a = data_pkg.load_data_cached(cfg, cache)
    b = data_pkg.load_data_cached(load_config(None, ["data.subset=200", "optim.lr=0.1"]), cache)  # same data keys
    assert len(calls) == 1 and a is b
    data_pkg.load_data_cached(load_config(None, ["data.subset=200", "seed=1"]), cache, max_entries=1)
    assert len(calls) == 2 and len(cache) == 1  # a new seed splits differently; the bound evicts the old entry


def test_load_data_gives_floats_in_0_1_or_the_uint8_pixels(tmp_path):
    """load_data: float32 p / 255 by default; pixels=True keeps the bytes (a quarter of the memory)
    for callers that convert each batch."""
    arrays = write_mnist(tmp_path / "mnist", n_train=40)
    cfg = {"seed": 0, "data": {"name": "mnist", "root": str(tmp_path), "download": False, "val_fraction": 0.25}}
    floats, pixels = load_data(cfg), load_data(cfg, pixels=True)
    for split in ("train_x", "val_x", "test_x"):
        f, p = getattr(floats, split), getattr(pixels, split)
        assert f.dtype == torch.float32 and p.dtype == torch.uint8
        assert torch.equal(f, p.float() / 255)
    assert torch.equal(pixels.test_x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert torch.equal(floats.train_y, pixels.train_y)

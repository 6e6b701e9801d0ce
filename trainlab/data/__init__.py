"""Data (docs/design.md §1): named data sets, a data root, and the seeded, stratified validation split.

    bundle = load_data(cfg)          # cfg: the full config (uses cfg["seed"] and cfg["data"])
    bundle.train_x.shape             # (N, C, H, W) float32 in [0, 1], or (N, D) features
    load_data(cfg, pixels=True)      # MNIST/CIFAR-style sets stay uint8: converted per batch
    bundle.num_classes, bundle.input_shape

The data root holds one folder per data set, named as the data set (``mnist/``,
``fashion-mnist/``, ``cifar10/``, ...). It is ``data.root`` if set, else ``$TRAINLAB_DATA``,
else ``~/.cache/trainlab``. Files already there are used as they are; nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

from trainlab.data.core import (
    DEFAULT_ROOT,
    DataBundle,
    Selection,
    check_classes,
    check_raw,
    data_root,
    load_data,
    select_classes,
    select_samples,
)
from trainlab.data.datasets import DATASETS, PUBLIC_SETS, RawData, public_present
from trainlab.data.loader import TensorLoader
from trainlab.data.split import per_class_subset, stratified_split, stratified_subset
from trainlab.data.stream import stream_note


def load_data_cached(cfg: dict, cache: dict, max_entries: int | None = None) -> DataBundle:
    """:func:`load_data`, once per distinct (``data`` section, seed) held in ``cache``.

    Runs that share those keys split the data identically, so searches and lab experiments load
    it once; the bundle is shared, so callers must not modify it (``run.prepare`` makes its own
    on the device). ``max_entries`` bounds the memory held (oldest entries go first).
    """
    key = json.dumps({"seed": cfg["seed"], "data": cfg["data"]}, sort_keys=True)
    if key not in cache:
        while max_entries is not None and cache and len(cache) >= max_entries:
            cache.pop(next(iter(cache)))
        cache[key] = load_data(cfg)
    return cache[key]


def _describe_public(name: str, folder: Path, download: bool) -> dict:
    spec = PUBLIC_SETS[name]
    present = public_present(name, folder)
    if present:
        note = "ready"
    elif download:
        host = spec.files[0].url.split("/")[2]
        note = f"missing: downloaded from {host} on first use ({spec.size})"
    else:
        note = f"missing and data.download is off: put {spec.layout} here"
    return dict(name=name, folder=str(folder), present=present, note=note)


def describe_datasets(cfg_data: dict) -> list[dict]:
    """One row per data set for `trainlab data`: name, folder, present, note.

    data.path, when set, applies to the selected data set (data.name) only.
    """
    root = data_root(cfg_data)
    rows = []
    for name in DATASETS:
        chosen = cfg_data.get("path") if name == cfg_data.get("name") else None
        folder = Path(chosen).expanduser() if chosen else root / name
        if name == "digits":
            rows.append(dict(name=name, folder="(ships with scikit-learn)", present=True,
                             note="1,797 greyscale 8x8 digits, 10 classes; fixed 80/20 train/test split"))
        elif name in PUBLIC_SETS:
            rows.append(_describe_public(name, folder, bool(cfg_data.get("download", True))))
        elif name == "folder":
            rows.append(dict(name=name, folder=str(folder), present=folder.is_dir(),
                             note="one sub-folder of images per class (optionally inside train/ and test/); set data.path"))
        elif name == "npz":
            present = folder.is_file() or folder.with_suffix(".npz").is_file() or any(folder.glob("*.npz"))
            rows.append(dict(name=name, folder=str(folder), present=present,
                             note="an .npz with arrays x, y (optionally x_test, y_test, classes); set data.path"))
        elif name == "npy":
            rows.append(dict(name=name, folder=str(folder), present=(folder / "x.npy").is_file(),
                             note="a folder with x.npy and y.npy (optionally x_test.npy, y_test.npy, classes.npy); set data.path"))
        else:  # registered elsewhere: nothing to inspect
            rows.append(dict(name=name, folder=str(folder), present=folder.exists(), note=""))
        rows[-1]["stream"] = stream_note(name)
    return rows


__all__ = [
    "DATASETS", "RawData", "DataBundle", "Selection", "TensorLoader", "DEFAULT_ROOT", "data_root", "load_data",
    "load_data_cached", "describe_datasets", "select_classes", "select_samples", "check_raw", "check_classes",
    "stratified_split", "stratified_subset", "per_class_subset",
]

"""The in-memory data path: the data root, a loaded data set (:class:`DataBundle`), and which
samples a run uses (data.classes, per_class, subset, the seeded stratified validation split).

Below the streaming path (trainlab.data.stream), which selects the same samples from labels alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from trainlab.data.datasets import DATASETS, RawData
from trainlab.data.split import per_class_subset, stratified_split, stratified_subset
from trainlab.errors import UserError, short
from trainlab.preprocessing import to_unit_float
from trainlab.schema import defaults

DEFAULT_ROOT = Path("~/.cache/trainlab")


def data_root(cfg_data: dict) -> Path:
    """Folder holding one sub-folder per data set: data.root, else $TRAINLAB_DATA, else ~/.cache/trainlab."""
    root = cfg_data.get("root") or os.environ.get("TRAINLAB_DATA") or DEFAULT_ROOT
    return Path(root).expanduser()


@dataclass
class DataBundle:
    """The splits a run uses. Validation is carved from train; test is the official split or None."""

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor | None
    test_y: Tensor | None
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (C, H, W) for images, (D,) for features."""
        return tuple(self.train_x.shape[1:])


def _data_config(cfg: dict) -> dict:
    """cfg["data"] with schema defaults for any key left out (handy for tests and scripts)."""
    return {**defaults()["data"], **cfg.get("data", {})}


def _class_indices(wanted: list, classes: list[str]) -> list[int]:
    """Validate data.classes (floats from the config) against the data set's classes."""
    indices = []
    for value in wanted:
        index = int(value)
        if index != value or not 0 <= index < len(classes):
            raise UserError(
                f"bad value {short(value)} in data.classes: expected class indices 0..{len(classes) - 1} "
                f"({', '.join(f'{i}={n}' for i, n in enumerate(classes[:12]))}{', ...' if len(classes) > 12 else ''})"
            )
        indices.append(index)
    if not indices or len(set(indices)) != len(indices):
        raise UserError(f"bad value {short(wanted)} for data.classes: expected a non-empty list of distinct class indices")
    return indices


def _relabel(x: Tensor, y: Tensor, keep: list[int], num_classes: int) -> tuple[Tensor, Tensor]:
    """Keep samples of the classes ``keep`` and number them 0..k-1 in that order."""
    new_label = torch.full((num_classes,), -1, dtype=torch.int64)
    new_label[torch.tensor(keep)] = torch.arange(len(keep))
    mapped = new_label[y]
    mask = mapped >= 0
    return x[mask], mapped[mask]


def check_raw(raw: RawData, name: str) -> None:
    """What every data set must be to train a classifier on, checked once as it is read: samples
    with at least one value, every value finite, labels that match the samples."""
    for split, x, y in (("train", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
        if x is None:
            continue
        if x.ndim < 2 or x.shape[1:].numel() == 0:
            raise UserError(f"data set {name!r}: its {split} samples have shape {tuple(x.shape[1:])}, with no values; "
                            "check the file's header or arrays")
        if len(x) != len(y):
            raise UserError(f"data set {name!r}: {len(x)} {split} samples but {len(y)} labels")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise UserError(f"data set {name!r}: its {split} samples hold NaN or infinite values; "
                            "clean the data (e.g. numpy.nan_to_num) before training")


def check_classes(y: Tensor, name: str) -> None:
    """A classifier needs examples of at least two classes to learn anything."""
    present = torch.unique(y).numel()
    if present < 2:
        raise UserError(f"data set {name!r} has training images of {present} class{'es' if present != 1 else ''} only: "
                        "a classifier needs at least two (check data.classes, data.subset and the labels)")


def select_classes(raw: RawData, wanted: list) -> RawData:
    """The data set restricted to the classes ``wanted`` (data.classes), relabelled 0..k-1."""
    keep = _class_indices(wanted, raw.classes)
    train_x, train_y = _relabel(raw.train_x, raw.train_y, keep, len(raw.classes))
    test_x, test_y = raw.test_x, raw.test_y
    if test_x is not None:
        test_x, test_y = _relabel(test_x, test_y, keep, len(raw.classes))
    return RawData(train_x, train_y, test_x, test_y, [raw.classes[i] for i in keep])


@dataclass
class Selection:
    """Which samples of a data set's official training split a run uses, found from the labels
    alone: ``train``/``val`` index it, ``train_y``/``val_y`` are their labels after
    ``data.classes`` relabelling, and ``test_keep``/``test_y`` do the same for the test split."""

    train: Tensor
    train_y: Tensor
    val: Tensor
    val_y: Tensor
    test_keep: Tensor | None
    test_y: Tensor | None
    classes: list[str]


def select_samples(train_y: Tensor, test_y: Tensor | None, classes: list[str], cfg: dict) -> Selection:
    """Apply, in order: data.classes, data.per_class, data.subset, then the seeded, stratified
    validation split of data.val_fraction (0: empty validation). Only labels are read, so the
    streaming path selects exactly the samples the in-memory one does without decoding any."""
    data = _data_config(cfg)
    seed = int(cfg.get("seed", 0))
    idx, y = torch.arange(len(train_y)), train_y
    test_keep = None
    if data.get("classes") is not None:
        keep = _class_indices(data["classes"], classes)
        new_label = torch.full((len(classes),), -1, dtype=torch.int64)
        new_label[torch.tensor(keep)] = torch.arange(len(keep))
        mapped = new_label[y]
        idx, y = idx[mapped >= 0], mapped[mapped >= 0]
        if test_y is not None:
            mapped = new_label[test_y]
            test_keep, test_y = torch.nonzero(mapped >= 0).flatten(), mapped[mapped >= 0]
        classes = [classes[i] for i in keep]
    if data.get("per_class") is not None:
        sub = per_class_subset(y, int(data["per_class"]), seed)
        idx, y = idx[sub], y[sub]
    if data.get("subset") is not None:
        sub = stratified_subset(y, int(data["subset"]), seed)
        idx, y = idx[sub], y[sub]
    keep, val = stratified_split(y, float(data["val_fraction"]), seed)
    if len(keep) == 0:
        raise UserError(f"data set {data['name']!r} has no training images left after data.classes / per_class / subset")
    check_classes(y[keep], data["name"])
    return Selection(idx[keep], y[keep], idx[val], y[val], test_keep, test_y, classes)


def load_data(cfg: dict, pixels: bool = False) -> DataBundle:
    """Load cfg["data"]["name"] into memory and select its samples (:func:`select_samples`).

    ``pixels=True`` keeps images stored as bytes (IDX, CIFAR) as uint8 tensors, for callers that
    convert each batch (:func:`trainlab.preprocessing.to_unit_float`; trainlab's models do it
    themselves): 55 MB for all of MNIST instead of 220 MB. Otherwise every image is float32 in [0, 1].
    """
    data = _data_config(cfg)
    load = DATASETS.get(data["name"])
    path = Path(data["path"]).expanduser() if data.get("path") else None
    raw = load(data_root(data), path, bool(data["download"]), int(data["image_size"]))
    check_raw(raw, data["name"])
    s = select_samples(raw.train_y, raw.test_y, raw.classes, cfg)
    x, test_x = raw.train_x, raw.test_x
    if s.test_keep is not None:
        test_x = test_x[s.test_keep]
    test_y = s.test_y if s.test_y is not None else raw.test_y
    images = (lambda t: t) if pixels else (lambda t: None if t is None else to_unit_float(t))
    return DataBundle(data["name"], images(x[s.train]), s.train_y, images(x[s.val]), s.val_y, images(test_x), test_y,
                      s.classes)



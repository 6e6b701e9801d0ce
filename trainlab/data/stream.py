"""Data bigger than memory: batches streamed from disk through ``torch.utils.data`` (docs/design.md §9).

    data = open_stream(cfg)              # labels in memory; images stay on disk (LazyImages)
    loader = StreamLoader(data.train_x, data.train_y, 128, device, transform=augment, seed=cfg["seed"])
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)
        for xb, yb in loader:            # on the device, augmented: the very batches TensorLoader gives
            ...

The only per-sample work on the host is decoding (Pillow for image files; a memory-mapped read
and a uint8 → float conversion for arrays), done by ``DataLoader`` worker processes a few
batches ahead, into pinned memory on CUDA. Order and augmentation come from
:class:`~trainlab.data.loader.SeededBatches`, the same code as the in-memory loader: the
permutation is drawn on the training device, each batch is copied there and augmented as a
whole, so for the same seed both paths give the same batches, bit for bit.

A file that turns out corrupt, or a worker that dies (out of memory, a decoder crash), stops the
run with a :class:`~trainlab.errors.UserError` naming the file(s), never a hang: decoding errors
travel back from the worker as values, and ``DataLoader`` notices dead workers and time-outs.
"""
from __future__ import annotations

import math
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from trainlab.data.core import DataBundle, _data_config, data_root, load_data, select_samples
from trainlab.data.datasets import (
    CIFAR10_CLASSES,
    FASHION_CLASSES,
    GREY_MODES,
    MNIST_FILES,
    _corrupt,
    _dataset_folder,
    _ensure_public,
    _find_idx,
    _labels,
    _load_cifar,
    _to_unit_float,
    array_images,
    folder_layout,
    npy_arrays,
    npz_labels,
    open_npy,
    read_idx,
    read_image,
    stack_images,
)
from trainlab.data.loader import SeededBatches, Transform, shard
from trainlab.device import memory_bytes
from trainlab.errors import UserError
from trainlab.registry import Registry

STREAM_SOURCES = Registry("streaming source")

# A worker that has not delivered a batch for this long is treated as hung (a stalled network
# file system, a decoder stuck on a file): an error beats a run that waits forever.
WORKER_TIMEOUT_SECONDS = 600
SHOWN = 20  # files (or rows) named in an error message
RELEASE_BYTES = 64 * 2**20  # memory-mapped rows a process keeps mapped before unmapping them
FAULT_AROUND_BYTES = 64 * 2**10  # what Linux maps around one page fault (fault_around_bytes, default 64 KiB)


# --- where one split's samples live ----------------------------------------------------------


class ArraySource:
    """Samples stored as rows of an array: a memory-mapped .npy or IDX file (read from disk on
    access; the page cache, not the process, holds what was read) or a compact uint8 array
    (gzip IDX, CIFAR pickles), converted to float32 in [0, 1] one batch at a time by
    ``to_float``, the same function the in-memory loader applies to the whole array."""

    def __init__(self, array: np.ndarray, to_float: Callable[[np.ndarray], Tensor], origin: str,
                 reopen: Callable[[], np.ndarray] | None = None):
        self._array, self.to_float, self.origin, self.reopen = array, to_float, origin, reopen
        self.sample_shape = tuple(to_float(np.array(array[:1])).shape[1:])  # a copy: maps are read-only

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self.reopen()
        return self._array

    def __getstate__(self) -> dict:
        # A memory map is re-opened in each worker rather than pickled (which would copy it).
        state = dict(self.__dict__)
        state.pop("_fd", None)  # a file descriptor is opened again where it is used
        if self.reopen is not None:
            state["_array"] = None
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:  # opened by _pread_into
            os.close(self._fd)

    def __len__(self) -> int:
        return len(self.array)

    def read(self, indices: np.ndarray) -> Tensor:
        # Rows are read in file order (kinder to disks and the page cache), then put back in batch order.
        order = np.argsort(indices, kind="stable")
        rows = np.empty((len(indices), *self.array.shape[1:]), dtype=self.array.dtype)
        if isinstance(self.array.base, mmap.mmap) and self.array.flags.c_contiguous:
            self._pread_into(rows, indices, order)
        else:
            rows[order] = self.array[indices[order]]
            self._release(len(indices) * max(rows.nbytes // max(len(indices), 1), FAULT_AROUND_BYTES))
        return self.to_float(rows)

    def _pread_into(self, rows: np.ndarray, indices: np.ndarray, order: np.ndarray) -> None:
        """Read the rows of a memory-mapped file with pread, in file order, into ``rows``.

        Reading through the map would map whole page-cache folios around each row (up to 2 MB on
        kernels with large folios: measured ~1.5 MB mapped per 3 KB row, so an epoch mapped the
        whole file into the process between two releases); pread copies just the row's bytes and
        leaves the pages in the page cache, outside the process."""
        if getattr(self, "_fd", None) is None:
            self._fd = os.open(self.array.filename, os.O_RDONLY)
        size = rows[0].nbytes if len(rows) else 0
        flat = rows.reshape(len(rows), -1).view(np.uint8)
        for j in order:
            view = memoryview(flat[j])
            if os.preadv(self._fd, [view], self.array.offset + int(indices[j]) * size) != size:
                raise UserError(f"{self.origin} is shorter than its header says (row {int(indices[j])}); the file is "
                                "truncated: write it again")

    def _release(self, nbytes: int) -> None:
        """Unmap the pages of a memory map read so far, every RELEASE_BYTES mapped.

        A read maps more than it reads: on a page fault Linux maps the neighbouring pages already
        in the page cache too ("fault-around", 64 KiB), so each row scattered over the file counts
        as at least FAULT_AROUND_BYTES. Counted as the bytes of the rows alone, an epoch of random
        3 KB rows over a cached 1 GB file had the whole file mapped between two releases.

        Pages of a file mapping that a process has touched count in its resident memory until
        the kernel needs them back; an epoch over an 8 GB file would otherwise show as 8 GB
        of process memory. MADV_DONTNEED drops them from this process only: they stay in the
        page cache, so a re-read costs no disk access while memory is free.
        """
        mapping = getattr(self.array, "_mmap", None)
        if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        self._unreleased = getattr(self, "_unreleased", 0) + nbytes
        if self._unreleased >= RELEASE_BYTES:
            mapping.madvise(mmap.MADV_DONTNEED)
            self._unreleased = 0

    def describe(self, indices: np.ndarray) -> str:
        shown = ", ".join(str(int(i)) for i in indices[:SHOWN])
        return f"{self.origin} (rows {shown}{', ...' if len(indices) > SHOWN else ''})"


class ImageFileSource:
    """Samples stored as image files, decoded with Pillow and resized to ``size`` squared by
    :func:`~trainlab.data.datasets.read_image`, the in-memory loader's own function."""

    def __init__(self, files: list[Path], size: int, grey: bool):
        self.files, self.size, self.grey = list(files), int(size), grey
        self.sample_shape = (1 if grey else 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, indices: np.ndarray) -> Tensor:
        return stack_images([read_image(self.files[i], self.size) for i in indices], self.grey)

    def describe(self, indices: np.ndarray) -> str:
        shown = ", ".join(str(self.files[i]) for i in indices[:SHOWN])
        return f"{shown}{f' and {len(indices) - SHOWN} more' if len(indices) > SHOWN else ''}"


@dataclass
class StreamSource:
    """A data set opened for streaming: its splits' samples (on disk) and labels (in memory)."""

    train: ArraySource | ImageFileSource
    train_y: Tensor
    test: ArraySource | ImageFileSource | None
    test_y: Tensor | None
    classes: list[str]
    how: str  # how samples are read, for messages

    def decoded_bytes(self) -> int:
        """Bytes the decoded float32 splits would take in memory."""
        per_sample = 4 * math.prod(self.train.sample_shape)
        return per_sample * (len(self.train) + (len(self.test) if self.test is not None else 0))


# --- the sources, by data set name ------------------------------------------------------------


def _open_args(cfg_data: dict) -> tuple[Path, Path | None, bool, int]:
    path = Path(cfg_data["path"]).expanduser() if cfg_data.get("path") else None
    return data_root(cfg_data), path, bool(cfg_data["download"]), int(cfg_data["image_size"])


@STREAM_SOURCES.register("npy")
def open_npy_source(root: Path, path: Path | None, download: bool, image_size: int) -> StreamSource:
    """x.npy / x_test.npy memory-mapped (``np.load(mmap_mode="r")``), labels read whole."""
    arrays, source = npy_arrays(root, path, mmap=True)
    y_test = np.asarray(arrays["y_test"]).reshape(-1) if "y_test" in arrays else None
    classes = np.asarray(arrays["classes"]) if "classes" in arrays else None
    train_y, test_y, names = npz_labels(np.asarray(arrays["y"]).reshape(-1), y_test, classes, source)
    folder = Path(source)

    def split(name: str) -> ArraySource:
        file = folder / f"{name}.npy"
        return ArraySource(arrays[name], partial(array_images, source=str(file)), str(file), partial(open_npy, file, True))

    test = split("x_test") if "x_test" in arrays else None
    return StreamSource(split("x"), train_y, test, test_y, names, "memory-mapped .npy")


def idx_images(path: Path) -> tuple[np.ndarray, Callable[[], np.ndarray] | None]:
    """An IDX image file as a uint8 (N, H, W) array: memory-mapped when uncompressed (nothing is
    read until used), decompressed into memory (uint8, a quarter of the float32 size) when gzip."""
    if path.suffix == ".gz":
        return read_idx(path, ndim=3), None
    with open(path, "rb") as f:
        head = f.read(4 + 4 * 3)
    if len(head) < 16 or head[0] != 0 or head[1] != 0 or head[2] != 0x08 or head[3] != 3:
        return read_idx(path, ndim=3), None  # read_idx says precisely what is wrong
    shape = tuple(int(d) for d in np.frombuffer(head, dtype=">u4", count=3, offset=4))
    if path.stat().st_size != 16 + math.prod(shape):
        raise _corrupt(path, f"{path.stat().st_size} bytes, but its header {shape} needs {16 + math.prod(shape)}")
    reopen = partial(np.memmap, path, dtype=np.uint8, mode="r", offset=16, shape=shape)
    return reopen(), reopen


def _idx_to_float(rows: np.ndarray) -> Tensor:
    return _to_unit_float(rows[:, None])


def _idx_split(folder: Path, images: str, labels: str, n_classes: int) -> tuple[ArraySource, Tensor]:
    image_path, label_path = _find_idx(folder, images), _find_idx(folder, labels)
    x, reopen = idx_images(image_path)
    y = read_idx(label_path, ndim=1)
    if len(x) != len(y):
        raise _corrupt(label_path, f"{len(y)} labels for the {len(x)} images of {image_path.name}")
    return ArraySource(x, _idx_to_float, str(image_path), reopen), _labels(y, n_classes, str(label_path))


def _open_idx(name: str, classes: list[str], root: Path, path: Path | None, download: bool) -> StreamSource:
    folder = _dataset_folder(root, path, name)
    _ensure_public(name, folder, download)
    train, train_y = _idx_split(folder, MNIST_FILES[0], MNIST_FILES[1], len(classes))
    test, test_y = _idx_split(folder, MNIST_FILES[2], MNIST_FILES[3], len(classes))
    how = "memory-mapped IDX" if train.reopen is not None else "gzip IDX decompressed to uint8"
    return StreamSource(train, train_y, test, test_y, list(classes), how)


@STREAM_SOURCES.register("mnist")
def open_mnist_source(root: Path, path: Path | None, download: bool, image_size: int) -> StreamSource:
    return _open_idx("mnist", [str(d) for d in range(10)], root, path, download)


@STREAM_SOURCES.register("fashion-mnist")
def open_fashion_source(root: Path, path: Path | None, download: bool, image_size: int) -> StreamSource:
    return _open_idx("fashion-mnist", FASHION_CLASSES, root, path, download)


def _cifar_to_float(rows: np.ndarray) -> Tensor:
    return _to_unit_float(rows.reshape(-1, 3, 32, 32))


def _open_cifar(name: str, root: Path, path: Path | None, download: bool, default_classes: list[str]) -> StreamSource:
    """The CIFAR pickles read (and checked) as the in-memory loader reads them, kept as uint8 rows
    (a quarter of the float32 size) and converted a batch at a time."""
    raw = _load_cifar(name, root, path, download, default_classes)
    origin = str(_dataset_folder(root, path, name))

    def rows(x: Tensor) -> np.ndarray:
        return x.numpy().reshape(len(x), -1)

    return StreamSource(ArraySource(rows(raw.train_x), _cifar_to_float, origin), raw.train_y,
                        ArraySource(rows(raw.test_x), _cifar_to_float, origin), raw.test_y, raw.classes,
                        "CIFAR pickles held as uint8")


@STREAM_SOURCES.register("cifar10")
def open_cifar10_source(root: Path, path: Path | None, download: bool, image_size: int) -> StreamSource:
    return _open_cifar("cifar10", root, path, download, CIFAR10_CLASSES)


@STREAM_SOURCES.register("cifar100")
def open_cifar100_source(root: Path, path: Path | None, download: bool, image_size: int) -> StreamSource:
    return _open_cifar("cifar100", root, path, download, [str(i) for i in range(100)])


def image_mode(path: Path) -> str:
    """An image's mode from its header alone (Pillow opens lazily: no pixels are decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read the image {path} ({e}); delete or replace it") from None


@STREAM_SOURCES.register("folder")
def open_folder_source(root: Path, path: Path | None, download: bool, image_size: int) -> StreamSource:
    """Image files decoded lazily; greyscale or RGB decided, as in memory, by every image's
    mode, read from the file headers."""
    layout = folder_layout(root, path)
    grey = all(image_mode(f) in GREY_MODES for f in layout.train_files + layout.test_files)
    test = ImageFileSource(layout.test_files, image_size, grey) if layout.test_files else None
    test_y = torch.tensor(layout.test_labels, dtype=torch.int64) if test is not None else None
    return StreamSource(ImageFileSource(layout.train_files, image_size, grey),
                        torch.tensor(layout.train_labels, dtype=torch.int64), test, test_y, layout.classes,
                        "image files decoded by Pillow")


STREAM_NOTES = {
    "npy": "streams: x.npy memory-mapped",
    "mnist": "streams: IDX memory-mapped (gzip: held as uint8)",
    "fashion-mnist": "streams: IDX memory-mapped (gzip: held as uint8)",
    "cifar10": "streams: pickles held as uint8, decoded per batch",
    "cifar100": "streams: pickles held as uint8, decoded per batch",
    "folder": "streams: images decoded per batch by worker processes",
}


def stream_note(name: str) -> str:
    """What `trainlab data` says about streaming ``name``."""
    return STREAM_NOTES.get(name, "streams: yes") if name in STREAM_SOURCES else "in memory only"


# --- a split as a lazy tensor ------------------------------------------------------------------


def default_workers(source: ArraySource | ImageFileSource) -> int:
    """Worker processes when data.workers is unset. Image files: CPU cores - 1 (the main process
    trains), at most 8 — decoding a PNG or JPEG costs more than shipping its pixels between
    processes. Arrays (npy, IDX, CIFAR rows): 0 — a batch is one sorted read of a memory map or
    of uint8 rows, cheaper than a worker's round trip (MNIST, 1x128 MLP, one thread each: 0.87x
    of the in-memory speed in the main process, 0.34-0.52x with one worker)."""
    if isinstance(source, ArraySource):
        return 0
    return max(0, min((os.cpu_count() or 1) - 1, 8))


class DecodeError:
    """A decoding failure, sent back from a worker as a value, so its message (naming the file)
    reaches the user intact instead of wrapped in a worker traceback."""

    def __init__(self, message: str):
        self.message = message


class LazyImages:
    """The samples ``indices`` of ``source`` as a read-only, tensor-like (N, ...) float32 array
    on the host: ``shape``, ``ndim``, ``len``, and slicing, which decodes. Preprocessing and
    augmentations that need statistics fit on it unchanged, by the same chunked float64 passes
    they make over an in-memory tensor; :meth:`batches` decodes in worker processes."""

    dtype = torch.float32

    def __init__(self, source: ArraySource | ImageFileSource, indices, workers: int = 0, prefetch: int = 2,
                 device: torch.device | str = "cpu"):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.workers, self.prefetch = int(workers), int(prefetch)
        self.device = torch.device(device)

    def to(self, device: torch.device | str) -> LazyImages:
        """The same samples, decoded slices landing on ``device`` (where statistics are fitted,
        as they are for an in-memory split moved there). The images themselves stay on disk."""
        return LazyImages(self.source, self.indices, self.workers, self.prefetch, device)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.source.sample_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.source.sample_shape)

    def dim(self) -> int:
        return self.ndim

    def read(self, positions) -> Tensor:
        """Decode the samples at ``positions`` (indices into this split), in that order, on the host."""
        return self.source.read(self.indices[np.asarray(positions, dtype=np.int64)])

    def __getitem__(self, key) -> Tensor:
        """Decoded samples on ``device``: a slice, or an array/tensor of positions."""
        if isinstance(key, slice):
            return self.source.read(self.indices[key]).to(self.device)
        if isinstance(key, Tensor):
            key = key.cpu()
        return self.read(key).to(self.device)

    def subset(self, positions) -> LazyImages:
        """The samples at ``positions`` (indices into this split), still on disk."""
        positions = positions.cpu().numpy() if isinstance(positions, Tensor) else np.asarray(positions, dtype=np.int64)
        return LazyImages(self.source, self.indices[positions], self.workers, self.prefetch, self.device)

    def describe(self, positions) -> str:
        return self.source.describe(self.indices[np.asarray(positions, dtype=np.int64)])

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """The split in order, ``batch_size`` samples at a time, decoded by the workers."""
        labels = torch.zeros(len(self), dtype=torch.int64)
        plan = [list(range(lo, min(lo + batch_size, len(self)))) for lo in range(0, len(self), batch_size)]
        for _, (x, _) in _decoded(StreamDataset(self, labels), plan, self.workers, self.prefetch, pin=False):
            yield x

    def nbytes(self) -> int:
        return 4 * math.prod(self.shape)


class StreamDataset(Dataset):
    """A ``torch.utils.data`` map-style data set over a :class:`LazyImages` and its labels.
    ``__getitems__`` decodes a whole batch in one call (one sorted read of a memory map)."""

    def __init__(self, images: LazyImages, labels: Tensor):
        self.images, self.labels = images, labels.cpu()

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, positions: list[int]):
        try:
            x = self.images.read(positions)
        except UserError as e:
            return DecodeError(str(e))
        except Exception as e:  # noqa: BLE001 (any decoder failure becomes a message naming the files)
            return DecodeError(f"cannot decode {self.images.describe(positions)}: {type(e).__name__}: {e}")
        return x, self.labels[torch.as_tensor(positions, dtype=torch.int64)]

    def __getitem__(self, position: int):
        return self.__getitems__([position])


def _as_is(batch):
    """collate_fn: ``__getitems__`` already returns a whole batch."""
    return batch


class _Plan:
    """A batch sampler whose batches are replaced each epoch (so persistent workers survive)."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_dataloader(dataset: StreamDataset, plan: _Plan, workers: int, prefetch: int, pin: bool,
                    persistent: bool) -> DataLoader:
    """torch's DataLoader with trainlab's knobs. Its own generator, so starting workers never
    draws from the global RNG (which dropout uses): streaming leaves training randomness alone."""
    kw = dict(num_workers=workers, pin_memory=pin, collate_fn=_as_is, batch_sampler=plan, generator=torch.Generator())
    if workers > 0:
        kw.update(prefetch_factor=prefetch, persistent_workers=persistent, timeout=WORKER_TIMEOUT_SECONDS)
    return DataLoader(dataset, **kw)


def _worker_failure(e: RuntimeError, what: str) -> UserError:
    return UserError(
        f"a data loader worker stopped while the run waited for {what} ({e}). A worker dies when it runs out of "
        "memory (lower data.workers, data.prefetch or train.batch_size) or when a file crashes the image decoder "
        "(check, replace or remove the files named; data.workers=0 decodes in the main process and shows the "
        "error directly). Continue the run with --resume: checkpoints/last.pt holds the last saved step.")


def _checked(loader: DataLoader, plan: list[list[int]], images: LazyImages, where: Callable[[int], str]):
    """Iterate ``loader``, turning decode errors and dead or hung workers into UserErrors."""
    it = iter(loader)
    for b in range(len(plan)):
        try:
            item = next(it)
        except RuntimeError as e:
            if "DataLoader" not in str(e):
                raise
            # Workers decode ahead: the culprit is in one of the batches in flight.
            ahead = loader.num_workers * (loader.prefetch_factor or 0)
            in_flight = [i for batch in plan[b:b + ahead + 1] for i in batch]
            what = f"{where(b)} (or one of the {min(ahead, len(plan) - b - 1)} decoded ahead of it), samples {images.describe(in_flight)}"
            raise _worker_failure(e, what) from None
        if isinstance(item, DecodeError):
            raise UserError(item.message)
        yield b, item


def _decoded(dataset: StreamDataset, batches: list[list[int]], workers: int, prefetch: int, pin: bool):
    plan = _Plan()
    plan.batches = batches
    loader = make_dataloader(dataset, plan, workers, prefetch, pin, persistent=False)
    yield from _checked(loader, batches, dataset.images, lambda b: f"batch {b + 1} of {len(batches)}")


# --- the training loader -----------------------------------------------------------------------


class StreamLoader(SeededBatches):
    """Yields ``(xb, yb)`` on ``device``: decoded by DataLoader workers, copied (from pinned
    memory on CUDA), then augmented as a batch — the same batches as
    :class:`~trainlab.data.loader.TensorLoader` on the same data, seed and epoch.

    Resuming mid-epoch (:meth:`load_state_dict`) never decodes the batches already consumed:
    the epoch's plan simply starts at the saved batch. Under data parallelism each rank decodes
    only its :func:`~trainlab.data.loader.shard` of every global batch and augments that share
    (unlike :class:`~trainlab.data.loader.TensorLoader`, which augments the global batch on every
    rank: decoding is the expensive part here, so it is not repeated W times).
    """

    def __init__(self, images: LazyImages, labels: Tensor, batch_size: int, device: torch.device | str,
                 shuffle: bool = True, drop_last: bool = False, transform: Transform | None = None, seed: int = 0,
                 workers: int = 0, prefetch: int = 2, rank: int = 0, world_size: int = 1):
        if len(images) != len(labels):
            raise ValueError(f"images has {len(images)} samples but labels has {len(labels)}")
        self.device = torch.device(device)
        super().__init__(len(images), batch_size, shuffle, drop_last, transform, seed, self.device, rank, world_size)
        self.images = images
        self._plan = _Plan()
        self.loader = make_dataloader(StreamDataset(images, labels), self._plan, int(workers), int(prefetch),
                                      pin=self.device.type == "cuda", persistent=True)

    def _positions(self, order: Tensor | None, b: int) -> list[int]:
        lo, hi = self._bounds(b)
        idx = order[lo:hi] if order is not None else torch.arange(lo, hi)
        return shard(idx, self.rank, self.world_size).tolist()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order, start = self._start_epoch()
        order = order.cpu() if order is not None else None
        self._plan.batches = [self._positions(order, b) for b in range(start, len(self))]
        epoch = self._current

        def where(b: int) -> str:
            return f"batch {start + b + 1} of epoch {epoch + 1}"

        for _, (xb, yb) in _checked(self.loader, self._plan.batches, self.images, where):
            yield self._finish(xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True))


# --- choosing the path -------------------------------------------------------------------------


def open_source(cfg_data: dict) -> StreamSource:
    return STREAM_SOURCES.get(cfg_data["name"])(*_open_args(cfg_data))


def open_stream(cfg: dict, source: StreamSource | None = None):
    """The data set as a :class:`~trainlab.data.DataBundle` whose images are
    :class:`LazyImages` (on disk) and labels tensors, split exactly as :func:`load_data` splits."""
    data = _data_config(cfg)
    source = source or open_source(data)
    workers = default_workers(source.train) if data.get("workers") is None else int(data["workers"])
    prefetch = int(data.get("prefetch", 2))
    s = select_samples(source.train_y, source.test_y, source.classes, cfg)
    lazy = partial(LazyImages, workers=workers, prefetch=prefetch)
    test_x, test_y = None, None
    if source.test is not None:
        keep = s.test_keep if s.test_keep is not None else torch.arange(len(source.test))
        test_x, test_y = lazy(source.test, keep.numpy()), s.test_y if s.test_y is not None else source.test_y
    return DataBundle(data["name"], lazy(source.train, s.train.numpy()), s.train_y,
                      lazy(source.train, s.val.numpy()), s.val_y, test_x, test_y, s.classes)


def memory_limit_bytes(cfg_data: dict, device: torch.device) -> int:
    """data.memory_limit_gb, else a quarter of the device's memory (RAM on CPU)."""
    if cfg_data.get("memory_limit_gb") is not None:
        return int(float(cfg_data["memory_limit_gb"]) * 2**30)
    return memory_bytes(device) // 4


@dataclass
class DataPath:
    """Which path a run's data takes, and why (printed, and kept in summary.json)."""

    stream: bool
    reason: str


def open_data(cfg: dict, device: torch.device, pixels: bool = False):
    """Load or open cfg's data set per data.stream: returns (DataBundle, DataPath). ``pixels``:
    in memory, keep byte images uint8 (:func:`trainlab.data.load_data`)."""
    data = _data_config(cfg)
    mode, name = data["stream"], data["name"]
    if mode == "off":
        return load_data(cfg, pixels), DataPath(False, "data.stream=off: loaded into memory")
    if name not in STREAM_SOURCES:
        if mode == "on":
            raise UserError(f"data.stream=on, but data set {name!r} cannot stream (data sets that can: "
                            f"{', '.join(STREAM_SOURCES)}). Use data.stream=auto or off, or save the arrays as x.npy "
                            "and y.npy in a folder and use data.name=npy data.path=FOLDER.")
        return load_data(cfg, pixels), DataPath(False, f"data.stream=auto: {name} cannot stream; loaded into memory")
    source = open_source(data)
    if mode == "on":
        return open_stream(cfg, source), DataPath(True, f"data.stream=on: streaming ({source.how})")
    size, limit = source.decoded_bytes(), memory_limit_bytes(data, device)
    sizes = f"the decoded data set ({_gb(size)})"
    if size > limit:
        return open_stream(cfg, source), DataPath(True, f"data.stream=auto: streaming ({source.how}), because {sizes} "
                                                        f"exceeds the memory limit ({_gb(limit)}, data.memory_limit_gb)")
    return load_data(cfg, pixels), DataPath(False, f"data.stream=auto: loaded into memory, because {sizes} fits the memory "
                                           f"limit ({_gb(limit)}, data.memory_limit_gb)")


def _gb(size: int) -> str:
    return f"{size / 2**30:.3g} GB"

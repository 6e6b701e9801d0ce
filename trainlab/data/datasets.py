"""The data sets trainlab knows by name, each read from its standard distribution format.

Every entry of :data:`DATASETS` is a function

    load(root: Path, path: Path | None, download: bool, image_size: int) -> RawData

where ``root`` is the data root (one sub-folder per data set, named as the data set) and
``path`` overrides the data set's folder (or, for ``npz``, the file). Images come back shaped
(N, C, H, W): uint8 pixels where the files hold bytes (the IDX and CIFAR sets: a quarter of
float32's memory), float32 in [0, 1] otherwise; flat features as (N, D), labels as int64.

Public sets (mnist, fashion-mnist, cifar10, cifar100) are looked for in ``<root>/<name>/`` first;
only what is missing is downloaded, from the official URL, and checked against its SHA-256.

Security: the CIFAR files are Python pickles, and unpickling can run code. trainlab reads them
only from the folder the user named (or downloaded with a verified checksum), and with an
unpickler that refuses every global except the few NumPy array constructors the official files
use, so a doctored file fails with an error instead of executing anything.
"""
from __future__ import annotations

import gzip
import io
import math
import pickle
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from trainlab.data.download import download_file
from trainlab.data.split import stratified_split
from trainlab.errors import UserError, first_line, short
from trainlab.registry import Registry

DATASETS = Registry("data set")


@dataclass
class RawData:
    """A data set as read from disk: train split, optional official test split, class names."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor | None
    test_y: Tensor | None
    classes: list[str]


# --- official files --------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file of a public data set: its name on disk, official URL and SHA-256."""

    name: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class PublicSet:
    """Where a public data set comes from. ``files`` are what a download fetches."""

    files: tuple[RemoteFile, ...]
    source: str  # where the official files are, for a user who fetches them by hand
    size: str  # shown to the user before a download
    layout: str  # what that user should put in the data set's folder


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_set(base_url: str, sha256s: tuple[str, str, str, str], size: str) -> PublicSet:
    files = tuple(RemoteFile(f"{n}.gz", base_url + f"{n}.gz", h) for n, h in zip(MNIST_FILES, sha256s))
    layout = ", ".join(f"{n}.gz" for n in MNIST_FILES) + " (gzip, or the same names without .gz uncompressed)"
    return PublicSet(files, base_url, size, layout)


# SHA-256s of the official .gz files (the same bytes on LeCun's site, torchvision's ossci mirror
# and TensorFlow's cvdf mirror; published by Keras, TFDS and torchvision's prototype datasets).
# They are only checked on download: a user's own gzip of the same data has other bytes, and the
# IDX reader validates the content itself.
PUBLIC_SETS: dict[str, PublicSet] = {
    "mnist": _idx_set(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
        "about 11 MB",
    ),
    "fashion-mnist": _idx_set(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
        "about 30 MB",
    ),
    "cifar10": PublicSet(
        (RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "about 163 MB",
        "cifar-10-python.tar.gz, or its extracted folder cifar-10-batches-py/ "
        "(data_batch_1..5, test_batch, batches.meta)",
    ),
    "cifar100": PublicSet(
        (RemoteFile("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                    "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "about 161 MB",
        "cifar-100-python.tar.gz, or its extracted folder cifar-100-python/ (train, test, meta)",
    ),
}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dataset_folder(root: Path, path: Path | None, name: str) -> Path:
    """``path`` when the user named one, else ``<root>/<name>``."""
    return Path(path).expanduser() if path is not None else Path(root).expanduser() / name


def _missing_message(name: str, folder: Path, spec: PublicSet) -> str:
    return (
        f"data set {name!r} is not in {folder}/ and data.download is off. Put {spec.layout} there "
        f"(official files: {spec.source}), turn data.download on, or set data.root (or TRAINLAB_DATA) "
        f"to a folder that has a {name}/ sub-folder holding them."
    )


def fetch_public(name: str, folder: Path) -> None:
    """Download every file of public set ``name`` that ``folder`` lacks, verified by SHA-256."""
    spec = PUBLIC_SETS[name]
    hint = (
        f"Fetch {spec.layout} from {spec.source} and put them in {folder}/ by hand, or set data.root "
        f"(or TRAINLAB_DATA) to a folder that has a {name}/ sub-folder holding them."
    )
    print(f"trainlab: {name} is not in {folder}/; downloading it ({spec.size})", file=sys.stderr)
    for f in spec.files:
        if not (folder / f.name).exists():
            download_file(f.url, folder / f.name, f.sha256, hint=hint)


def _uint8_pixels(array: np.ndarray) -> Tensor:
    """uint8 pixels 0..255 as a uint8 tensor (a writable copy: np.frombuffer's buffer is read-only).
    :func:`trainlab.data.load_data` turns them into floats in [0, 1] unless asked for pixels."""
    return torch.from_numpy(np.array(array, dtype=np.uint8, copy=True))


def _to_unit_float(array: np.ndarray) -> Tensor:
    """uint8 pixels 0..255 → float32 in [0, 1]."""
    # The float copy is made by NumPy, so read-only buffers (np.frombuffer) are never shared.
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).div_(255.0)


def _labels(array, n_classes: int | None = None, source: str = "") -> Tensor:
    """Integer labels → int64 tensor, checked to lie in 0..n_classes-1."""
    y = torch.as_tensor(np.asarray(array).astype(np.int64))
    if len(y) and (int(y.min()) < 0 or (n_classes is not None and int(y.max()) >= n_classes)):
        allowed = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
        raise UserError(f"{source}: labels must be {allowed}, found {int(y.min())}..{int(y.max())}")
    return y


def _corrupt(path: Path, why: str) -> UserError:
    """The error for a file that exists but cannot be what it claims to be."""
    return UserError(f"{path} is damaged ({why}). Delete it and download it again (trainlab re-downloads it when data.download is on).")


# --- scikit-learn digits ---------------------------------------------------------------------


@DATASETS.register("digits")
def load_digits(root: Path, path: Path | None, download: bool, image_size: int) -> RawData:
    """scikit-learn's 1,797 8x8 digits (values 0..16), split 80/20 into train and test.

    The set has no official split, so a fixed seed (not the run's seed) makes one: every run,
    whatever its seed, is scored on the same test images.
    """
    # Imported here: scikit-learn takes a second or two to import and only this data set needs it.
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    y = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = stratified_split(y, 0.2, seed=0)
    return RawData(x[train_idx], y[train_idx], x[test_idx], y[test_idx], [str(d) for d in range(10)])


# --- IDX (MNIST, Fashion-MNIST) --------------------------------------------------------------

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    """The uncompressed content of ``path``, gunzipped when it ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise _corrupt(path, f"not a complete gzip file: {e}") from None


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a NumPy array, validating its header.

    Format (LeCun): two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    then each dimension as a big-endian uint32, then the data. The data must be exactly as long
    as the dimensions say, so a truncated download is caught here and not as odd accuracy later.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise _corrupt(path, f"bad IDX magic number {data[:4].hex() or 'empty file'}")
    dims = data[3]
    if ndim is not None and dims != ndim:
        raise _corrupt(path, f"expected {ndim} dimensions, the header says {dims}")
    header = 4 + 4 * dims
    if len(data) < header:
        raise _corrupt(path, "the header is cut short")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: a forged header cannot overflow
    if len(data) != expected:
        raise _corrupt(path, f"{len(data)} bytes, but its header {shape} needs {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    """``stem`` uncompressed if present (faster to read), else ``stem.gz``, else None."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_pair(folder: Path, images: str, labels: str, n_classes: int) -> tuple[Tensor, Tensor]:
    """Images (N, 1, H, W) as uint8 pixels and their labels, checked to match in number."""
    image_path, label_path = _find_idx(folder, images), _find_idx(folder, labels)
    x, y = read_idx(image_path, ndim=3), read_idx(label_path, ndim=1)
    if x.dtype != np.uint8:
        raise _corrupt(image_path, f"expected unsigned-byte pixels, the header says {x.dtype}")
    if len(x) != len(y):
        raise _corrupt(label_path, f"{len(y)} labels for the {len(x)} images of {image_path.name}")
    return _uint8_pixels(x[:, None]), _labels(y, n_classes, str(label_path))


def _load_idx_set(name: str, classes: list[str], root: Path, path: Path | None, download: bool) -> RawData:
    """MNIST-style set: four IDX files in the data set's folder."""
    folder = _dataset_folder(root, path, name)
    _ensure_public(name, folder, download)
    train_x, train_y = _idx_pair(folder, MNIST_FILES[0], MNIST_FILES[1], len(classes))
    test_x, test_y = _idx_pair(folder, MNIST_FILES[2], MNIST_FILES[3], len(classes))
    return RawData(train_x, train_y, test_x, test_y, list(classes))


@DATASETS.register("mnist")
def load_mnist(root: Path, path: Path | None, download: bool, image_size: int) -> RawData:
    """MNIST handwritten digits: 60,000 + 10,000 greyscale 28x28 images, 10 classes."""
    return _load_idx_set("mnist", [str(d) for d in range(10)], root, path, download)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(root: Path, path: Path | None, download: bool, image_size: int) -> RawData:
    """Fashion-MNIST (Zalando): 60,000 + 10,000 greyscale 28x28 clothing images, 10 classes."""
    return _load_idx_set("fashion-mnist", FASHION_CLASSES, root, path, download)


# --- CIFAR python pickles --------------------------------------------------------------------

# The only globals the official CIFAR pickles (and NumPy arrays pickled by Python 3) refer to.
# numpy 2 reads the numpy.core names of older pickles as well as its own numpy._core ones.
_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
})


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and NumPy arrays, and nothing that can run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(blob: bytes, source: str) -> dict:
    """Decode one CIFAR pickle (Python 2 era, hence encoding="bytes"); keys become str."""
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001  found by tests/test_fuzz.py: a flipped byte makes the unpickler raise
        # MemoryError (a huge length field), LookupError (an unknown encoding name), ... — with
        # only array constructors allowed, any error means the bytes are not a CIFAR batch.
        raise _corrupt(Path(source), f"not a CIFAR python batch: {first_line(e)}") from None
    if not isinstance(obj, dict):
        raise _corrupt(Path(source), f"expected a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


@dataclass(frozen=True)
class CifarLayout:
    """How an official CIFAR python distribution is laid out."""

    subdir: str  # the folder inside the tarball
    tarball: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


CIFAR_LAYOUT = {
    "cifar10": CifarLayout("cifar-10-batches-py", "cifar-10-python.tar.gz", tuple(f"data_batch_{i}" for i in range(1, 6)),
                           "test_batch", "batches.meta", "labels", "label_names"),
    "cifar100": CifarLayout("cifar-100-python", "cifar-100-python.tar.gz", ("train",), "test", "meta",
                            "fine_labels", "fine_label_names"),
}


def _extracted_folder(folder: Path, layout: CifarLayout) -> Path | None:
    """The folder holding extracted batches: ``<folder>/<subdir>/``, or ``<folder>`` itself."""
    return next((d for d in (folder / layout.subdir, folder) if (d / layout.test).is_file()), None)


def _tar_blobs(tar_path: Path, layout: CifarLayout) -> dict[str, tuple[bytes, str]]:
    """The wanted members of the tarball, read in one sequential pass.

    Reading straight from the tarball keeps read-only data roots usable and never writes paths
    taken from an archive; one pass matters because seeking back in a .tar.gz decompresses it
    again from the start.
    """
    wanted = {f"{layout.subdir}/{m}": m for m in layout.members}
    blobs = {}
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            for info in tar:
                member = wanted.get(info.name.removeprefix("./"))
                if member is not None and info.isfile():
                    blobs[member] = (tar.extractfile(info).read(), f"{tar_path}:{info.name}")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _corrupt(tar_path, f"not a complete .tar.gz: {e}") from None
    missing = [f"{layout.subdir}/{m}" for m in layout.members if m not in blobs]
    if missing:
        raise _corrupt(tar_path, f"it has no {', '.join(missing)}")
    return blobs


def _cifar_blobs(folder: Path, layout: CifarLayout) -> dict[str, tuple[bytes, str]]:
    """member → (pickle bytes, where it came from), from the extracted folder or the tarball."""
    extracted = _extracted_folder(folder, layout)
    if extracted is None:
        return _tar_blobs(folder / layout.tarball, layout)
    missing = [m for m in layout.members if not (extracted / m).is_file()]
    if missing:
        raise UserError(f"{extracted}/ lacks {', '.join(missing)}: it is an incomplete copy of {layout.subdir}/. "
                        "Delete it and download it again.")
    return {m: ((extracted / m).read_bytes(), str(extracted / m)) for m in layout.members}


def _cifar_batch(batch: dict, label_key: str, source: str, n_classes: int) -> tuple[Tensor, Tensor]:
    """A batch dict → images (N, 3, 32, 32) as uint8 pixels and labels.

    Each row of ``data`` is 1024 red, then 1024 green, then 1024 blue bytes, each plane row-major,
    so a plain reshape gives channels-first images.
    """
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _corrupt(Path(source), f"expected 'data' of shape (N, 3072) and '{label_key}'")
    if not isinstance(labels, (list, tuple, np.ndarray)) or not np.issubdtype(np.asarray(labels).dtype, np.integer):
        raise _corrupt(Path(source), f"expected '{label_key}' to be a list of integer labels, found {type(labels).__name__}")
    if len(labels) != len(data):
        raise _corrupt(Path(source), f"{len(labels)} labels for {len(data)} images")
    return _uint8_pixels(data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)), _labels(labels, n_classes, source)


def _names(meta: dict, key: str, fallback: list[str]) -> list[str]:
    """Class names from a meta pickle (bytes in the official files), else ``fallback``."""
    names = meta.get(key)
    if names is None or (isinstance(names, (list, tuple)) and not names):
        return fallback
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in names):
        raise UserError(f"the CIFAR meta file's {key!r} must be a list of class names, found {type(names).__name__}; "
                        "delete the data set's folder and download it again")
    return [n.decode(errors="replace") if isinstance(n, bytes) else n for n in names]


def public_present(name: str, folder: Path) -> bool:
    """Does ``folder`` hold everything public set ``name`` needs (so nothing is downloaded)?"""
    if name in CIFAR_LAYOUT:
        layout = CIFAR_LAYOUT[name]
        return _extracted_folder(folder, layout) is not None or (folder / layout.tarball).is_file()
    return all(_find_idx(folder, stem) is not None for stem in MNIST_FILES)


def _ensure_public(name: str, folder: Path, download: bool) -> None:
    """Download what is missing, or say exactly what to put where when downloading is off."""
    if public_present(name, folder):
        return
    if not download:
        raise UserError(_missing_message(name, folder, PUBLIC_SETS[name]))
    fetch_public(name, folder)


def _load_cifar(name: str, root: Path, path: Path | None, download: bool, default_classes: list[str]) -> RawData:
    """CIFAR-10 or -100 from the official python distribution."""
    layout = CIFAR_LAYOUT[name]
    folder = _dataset_folder(root, path, name)
    _ensure_public(name, folder, download)
    blobs = _cifar_blobs(folder, layout)
    classes = _names(_unpickle(*blobs.pop(layout.meta)), layout.names_key, default_classes)
    parts = []
    for member in (*layout.train, layout.test):
        blob, source = blobs.pop(member)  # pop: free each pickle's bytes once decoded
        parts.append(_cifar_batch(_unpickle(blob, source), layout.label_key, source, len(classes)))
    *train, (test_x, test_y) = parts
    return RawData(torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test_x, test_y, classes)


@DATASETS.register("cifar10")
def load_cifar10(root: Path, path: Path | None, download: bool, image_size: int) -> RawData:
    """CIFAR-10: 50,000 + 10,000 colour 32x32 images, 10 classes."""
    return _load_cifar("cifar10", root, path, download, CIFAR10_CLASSES)


@DATASETS.register("cifar100")
def load_cifar100(root: Path, path: Path | None, download: bool, image_size: int) -> RawData:
    """CIFAR-100: 50,000 + 10,000 colour 32x32 images, 100 fine classes."""
    return _load_cifar("cifar100", root, path, download, [str(i) for i in range(100)])


# --- a folder of images ----------------------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _class_dirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that are classes (sorted by name; hidden folders skipped)."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))


def read_image(path: Path, size: int, channels: int | None = None) -> np.ndarray:
    """One image as uint8 (size, size) if greyscale or (size, size, 3) if colour; ``channels``
    (1 or 3) forces one of the two, as a trained model's input needs.

    ``ImageOps.fit`` centre-crops to a square before resizing, so objects keep their aspect
    ratio instead of being squashed.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()
            mode = {1: "L", 3: "RGB"}.get(channels) or ("L" if im.mode in GREY_MODES else "RGB")
            im = ImageOps.fit(im.convert(mode), (size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read the image {path} ({e}); delete or replace it") from None


def _split_files(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Every image file under ``folder/<class>/`` for the given class names, with its label index."""
    files, labels = [], []
    for c, name in enumerate(classes):
        class_dir = folder / name
        if class_dir.is_dir():
            found = _image_files(class_dir)
            files += found
            labels += [c] * len(found)
    return files, labels


@dataclass
class FolderLayout:
    """The files of a folder data set, before any is decoded: what both the in-memory loader
    and the streaming source read."""

    train_files: list[Path]
    train_labels: list[int]
    test_files: list[Path]
    test_labels: list[int]
    classes: list[str]


def folder_layout(root: Path, path: Path | None) -> FolderLayout:
    """One sub-folder per class, or ``train/`` and ``test/`` each laid out so; checked for
    missing or empty class folders."""
    folder = _dataset_folder(root, path, "folder")
    if not folder.is_dir():
        raise UserError(f"image folder {folder}/ does not exist: set data.path to a folder with one sub-folder of images per class")
    train_dir = folder / "train" if (folder / "train").is_dir() else folder
    test_dir = folder / "test" if train_dir != folder and (folder / "test").is_dir() else None
    classes = [d.name for d in _class_dirs(train_dir)]
    if not classes:
        raise UserError(f"{train_dir}/ has no sub-folders: put each class's images in its own sub-folder (e.g. {train_dir}/cat/, {train_dir}/dog/)")
    train_files, train_labels = _split_files(train_dir, classes)
    empty = [name for c, name in enumerate(classes) if c not in set(train_labels)]
    if empty:
        raise UserError(f"class folders with no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {train_dir}/: {', '.join(empty)}")
    test_files, test_labels = [], []
    if test_dir is not None:
        unknown = [d.name for d in _class_dirs(test_dir) if d.name not in classes]
        if unknown:
            raise UserError(f"{test_dir}/ has classes that {train_dir}/ lacks: {', '.join(unknown)}")
        test_files, test_labels = _split_files(test_dir, classes)
    return FolderLayout(train_files, train_labels, test_files, test_labels, classes)


def stack_images(images: list[np.ndarray], grey: bool) -> Tensor:
    """(N, C, H, W) float tensor; greyscale images are repeated to 3 channels in a colour set."""
    if grey:
        return _to_unit_float(np.stack(images)[:, None])
    rgb = [im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2) for im in images]
    return _to_unit_float(np.stack(rgb).transpose(0, 3, 1, 2))


@DATASETS.register("folder")
def load_folder(root: Path, path: Path | None, download: bool, image_size: int) -> RawData:
    """Your own images: one sub-folder per class, or ``train/`` and ``test/`` each laid out so.

    Images (png, jpg, jpeg, bmp, gif, webp) are centre-cropped and resized to ``image_size``
    squared; the set is greyscale (1 channel) if every image is, else RGB.
    """
    layout = folder_layout(root, path)
    train_images = [read_image(f, image_size) for f in layout.train_files]
    test_images = [read_image(f, image_size) for f in layout.test_files]
    grey = all(im.ndim == 2 for im in train_images + test_images)
    train_x = stack_images(train_images, grey)
    test_x = stack_images(test_images, grey) if test_images else None
    test_y = torch.tensor(layout.test_labels, dtype=torch.int64) if test_images else None
    return RawData(train_x, torch.tensor(layout.train_labels, dtype=torch.int64), test_x, test_y, layout.classes)


# --- arrays in an .npz file ------------------------------------------------------------------


def _npz_file(root: Path, path: Path | None) -> Path:
    """The .npz to read: ``path`` (a file, or a folder holding exactly one .npz), else <root>/npz."""
    target = _dataset_folder(root, path, "npz")
    if target.is_dir():
        found = sorted(target.glob("*.npz"))
        if len(found) != 1:
            raise UserError(f"{target}/ holds {len(found)} .npz files; set data.path to the one to use")
        return found[0]
    if not target.is_file() and target.with_suffix(".npz").is_file():
        return target.with_suffix(".npz")
    if not target.is_file():
        raise UserError(f"{target} does not exist: set data.path to an .npz file with arrays x and y (optionally x_test, y_test)")
    return target


def array_images(x: np.ndarray, source: str) -> Tensor:
    """x as float32: (N, D) features, or images given as (N, H, W), (N, H, W, C) or (N, C, H, W).

    A 4-d array is channels-last when its last axis looks like channels (1, 3 or 4) and its
    second does not; uint8 is scaled by 1/255, floats are kept as they are.
    """
    if x.ndim not in (2, 3, 4):
        raise UserError(f"{source}: x must be (N, D) features or (N, H, W) / (N, H, W, C) / (N, C, H, W) images, got shape {x.shape}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        return _to_unit_float(x)
    if np.issubdtype(x.dtype, np.floating) or x.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if np.issubdtype(x.dtype, np.integer) and (x.size == 0 or (x.min() >= 0 and x.max() <= 255)):
        return _to_unit_float(x.astype(np.uint8))
    raise UserError(f"{source}: x must be uint8 pixels, integers in 0..255 or floats, got {x.dtype}")


def npz_labels(y_train: np.ndarray, y_test: np.ndarray | None, names: np.ndarray | None, source: str) -> tuple[Tensor, Tensor | None, list[str]]:
    """Labels → indices 0..K-1 and class names.

    Integer labels index the ``classes`` array when the file has one; otherwise the distinct
    label values (numbers or strings, over train and test) become the classes in sorted order.
    """
    y_all = y_train if y_test is None else np.concatenate([y_train, y_test])
    if np.issubdtype(y_all.dtype, np.floating):
        if not np.all(np.equal(np.mod(y_all, 1), 0)):
            raise UserError(f"{source}: y must hold class labels (integers or strings), found fractional values")
        y_train, y_test, y_all = (a.astype(np.int64) if a is not None else None for a in (y_train, y_test, y_all))
    if names is not None and np.issubdtype(y_all.dtype, np.integer):
        classes = [str(n) for n in names]
        to_tensor = lambda a: _labels(a, len(classes), source)  # noqa: E731
    else:
        values = np.unique(y_all)
        classes = [str(v) for v in values]
        to_tensor = lambda a: torch.from_numpy(np.searchsorted(values, a).astype(np.int64))  # noqa: E731
    return to_tensor(y_train), (to_tensor(y_test) if y_test is not None else None), classes


@DATASETS.register("npz")
def load_npz(root: Path, path: Path | None, download: bool, image_size: int) -> RawData:
    """Arrays from an .npz file: ``x``, ``y``, optional ``x_test``, ``y_test`` and ``classes``."""
    file = _npz_file(root, path)
    source = str(file)
    try:
        with np.load(file, allow_pickle=False) as z:  # allow_pickle=False: an .npz cannot run code
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001  found by tests/test_fuzz.py: a damaged .npy header raises even
        # SyntaxError (NumPy parses it with ast.literal_eval); besides OSError, BadZipFile, zlib.error, ...
        raise UserError(f"cannot read {file} as an .npz file ({first_line(e)}); is it complete? "
                        "Write it again with numpy.savez") from None
    not_arrays = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]  # np.load hands back raw bytes
    if not_arrays:
        raise UserError(f"{source}: {', '.join(map(short, not_arrays[:5]))} are not NumPy arrays; write the file with numpy.savez")
    for key in ("x", "y"):
        if key not in arrays:
            raise UserError(f"{source} has no array {key!r} (found: {', '.join(arrays) or 'none'}); it needs x and y")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"{source}: x_test and y_test must come together")
    for key in ("x", "y", "x_test", "y_test", "classes"):
        if key in arrays and arrays[key].ndim == 0:
            raise UserError(f"{source}: {key} is a single number, not an array of samples")
    x, y = arrays["x"], arrays["y"].reshape(-1)
    x_test, y_test = arrays.get("x_test"), arrays.get("y_test")
    y_test = y_test.reshape(-1) if y_test is not None else None
    if len(x) != len(y) or (x_test is not None and len(x_test) != len(y_test)):
        raise UserError(f"{source}: x and y (and x_test and y_test) must have the same number of samples")
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise UserError(f"{source}: x_test samples have shape {x_test.shape[1:]}, x samples {x.shape[1:]}")
    train_y, test_y, classes = npz_labels(y, y_test, arrays.get("classes"), source)
    test_x = array_images(x_test, source) if x_test is not None else None
    return RawData(array_images(x, source), train_y, test_x, test_y, classes)


# --- a directory of .npy arrays --------------------------------------------------------------


def npy_files(root: Path, path: Path | None) -> dict[str, Path]:
    """The arrays of an ``npy`` data set: ``x.npy`` and ``y.npy`` (required), ``x_test.npy``,
    ``y_test.npy`` and ``classes.npy`` (optional), in data.path or ``<root>/npy``."""
    folder = _dataset_folder(root, path, "npy")
    if not (folder / "x.npy").is_file() or not (folder / "y.npy").is_file():
        raise UserError(f"{folder}/ needs x.npy (images or features) and y.npy (labels); optionally x_test.npy, "
                        "y_test.npy and classes.npy. Set data.path to such a folder.")
    if (folder / "x_test.npy").is_file() != (folder / "y_test.npy").is_file():
        raise UserError(f"{folder}/: x_test.npy and y_test.npy must come together")
    names = ("x", "y", "x_test", "y_test", "classes")
    return {n: folder / f"{n}.npy" for n in names if (folder / f"{n}.npy").is_file()}


def open_npy(file: Path, mmap: bool) -> np.ndarray:
    """One .npy array, memory-mapped (read from disk on access) or read whole; never unpickled."""
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"cannot read {file} as a .npy array ({e}); write it with numpy.save") from None


def npy_arrays(root: Path, path: Path | None, mmap: bool) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of an ``npy`` directory, checked to agree in length and sample shape."""
    files = npy_files(root, path)
    arrays = {n: open_npy(f, mmap) for n, f in files.items()}
    source = str(files["x"].parent)
    for x, y in (("x", "y"), ("x_test", "y_test")):
        if x in arrays and len(arrays[x]) != len(arrays[y]):
            raise UserError(f"{source}: {x}.npy has {len(arrays[x])} samples but {y}.npy has {len(arrays[y])}")
    if "x_test" in arrays and arrays["x_test"].shape[1:] != arrays["x"].shape[1:]:
        raise UserError(f"{source}: x_test samples have shape {arrays['x_test'].shape[1:]}, x samples {arrays['x'].shape[1:]}")
    return arrays, source


@DATASETS.register("npy")
def load_npy(root: Path, path: Path | None, download: bool, image_size: int) -> RawData:
    """Arrays in a folder of .npy files (x, y, optional x_test, y_test, classes), read whole;
    the same folder streams from disk with data.stream (arrays memory-mapped)."""
    arrays, source = npy_arrays(root, path, mmap=False)
    y_test = arrays["y_test"].reshape(-1) if "y_test" in arrays else None
    train_y, test_y, classes = npz_labels(arrays["y"].reshape(-1), y_test, arrays.get("classes"), source)
    test_x = array_images(arrays["x_test"], source) if "x_test" in arrays else None
    return RawData(array_images(arrays["x"], source), train_y, test_x, test_y, classes)

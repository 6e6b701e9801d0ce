"""Data preprocessing (lecture "Training Neural Networks I", *Data Preprocessing*).

Every preprocessor is an ``nn.Module`` that is **fitted on the training split only** and then
travels inside the model: its statistics are registered buffers, so they are saved in the
model's ``state_dict`` and applied, batched and on the model's device, by ``forward``. Fitting
on validation or test data would leak them into the model; the caller (the data pipeline)
guarantees that only ``x_train`` reaches :meth:`Preprocessor.fit`.

    pre = create_preprocessing("zca", epsilon=1e-5, x_train=x_train)   # (N,C,H,W) in [0,1]
    pre = build_preprocessor({"name": "zca", "epsilon": 1e-5}, x_train)  # from the config section
    model = nn.Sequential(pre, net)                                      # saved together

The lecture's advice for images is "center only" (mean image for AlexNet, per-channel mean for
VGG, per-channel mean and std for ResNet); PCA and whitening are provided for the lab and for
flat feature vectors, where they matter more.

Statistics are computed in float64 (two passes: mean first, then centred second moments, chunk
by chunk so a CIFAR-sized set never needs a float64 copy of itself) and stored as float32, which
every device (including MPS, which has no float64) can use.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainlab.errors import UserError
from trainlab.registry import Component, Registry
from trainlab.schema import SCHEMA


@dataclass(frozen=True)
class PreprocessInfo(Component):
    """A preprocessor entry: ``make`` is the :class:`Preprocessor` class; ``options`` maps its
    constructor's keywords to keys of the ``preprocess`` config section."""

    def __call__(self, cfg_preprocess: dict) -> Preprocessor:
        """The config adapter: an unfitted preprocessor with options from the ``preprocess`` section."""
        return self.make(**self.options_from(cfg_preprocess))


PREPROCESSORS: Registry[PreprocessInfo] = Registry("preprocessor", entry=PreprocessInfo, section="preprocess")

# Rows per float64 chunk: 4096 x 3072 doubles is 100 MB, small next to the data set itself.
_CHUNK_ROWS = 4096


def to_unit_float(x: Tensor) -> Tensor:
    """uint8 pixels p → float32 p / 255 in [0, 1]; any other tensor as it is.

    MNIST-, Fashion-MNIST- and CIFAR-style sets stay uint8 (one byte a pixel) on the host and the
    device; each batch becomes float32 only when it is used (augmentation, the model's input),
    so a run never holds a 4x larger float32 copy of a whole split.
    """
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def _option(cfg: dict, key: str):
    """cfg[key], or the config schema's default, so a partial dict (tests, scripts) works."""
    return cfg[key] if key in cfg else SCHEMA[f"preprocess.{key}"].default


def _check_ndim(x: Tensor) -> None:
    if x.dim() not in (2, 4):
        raise UserError(
            f"preprocessing expects images (N,C,H,W) or flat features (N,D); got shape {tuple(x.shape)}"
        )


def _fit_device(x: Tensor) -> torch.device:
    # MPS has no float64; statistics are computed on the CPU there and moved back as float32.
    return torch.device("cpu") if x.device.type == "mps" else x.device


def _float64_chunks(x: Tensor, rows: int = _CHUNK_ROWS) -> Iterator[Tensor]:
    device = _fit_device(x)
    for start in range(0, len(x), rows):
        chunk = x[start : start + rows].to(device, torch.float64)
        yield chunk.div_(255.0) if x.dtype == torch.uint8 else chunk  # uint8 pixels: as to_unit_float


def mean_and_variance(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Mean and (biased, 1/M) variance of ``x`` over the batch dim and ``dims``, in float64.

    Two passes (mean, then centred squares) because E[x^2] - E[x]^2 loses digits when the mean
    is large next to the spread. Results keep the reduced dims (size 1) for broadcasting,
    without the batch dim.
    """
    reduce = (0, *dims)
    count = len(x) * math.prod(x.shape[d] for d in dims)
    total = sum(chunk.sum(reduce, keepdim=True) for chunk in _float64_chunks(x))
    mean = total / count
    squares = sum(((chunk - mean) ** 2).sum(reduce, keepdim=True) for chunk in _float64_chunks(x))
    return mean[0], (squares / count)[0]


def mean_and_covariance(x: Tensor, to_rows: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D,D) of the rows ``to_rows(x)``, in float64.

    Sigma = 1/M * sum_i (x_i - mu)(x_i - mu)^T  (the lecture notes' ``X.T @ X / N``, biased).
    ``to_rows`` maps a chunk of the batch to (rows, D): flatten each sample for PCA, or every
    pixel's colour for AlexNet's RGB lighting noise. Chunked, so only a slice is ever float64.
    """
    total, count = None, 0
    for chunk in _float64_chunks(x):
        rows = to_rows(chunk)
        total = rows.sum(0) if total is None else total + rows.sum(0)
        count += len(rows)
    mean = total / count
    cov = torch.zeros(len(mean), len(mean), dtype=torch.float64, device=mean.device)
    for chunk in _float64_chunks(x):
        rows = to_rows(chunk) - mean
        cov.addmm_(rows.T, rows)
    return mean, cov / count


def eigen_descending(cov: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending, clamped at 0) and eigenvectors (columns) of a symmetric matrix.

    ``torch.linalg.eigh`` on the DxD covariance: for D = 3072 (CIFAR) a few seconds, far
    cheaper than an SVD of the NxD data. Round-off can make zero eigenvalues slightly
    negative; a variance cannot be, and 1/sqrt would turn it into NaN.
    """
    values, vectors = torch.linalg.eigh(cov)
    return values.flip(0).clamp_min(0), vectors.flip(1)


class Preprocessor(nn.Module):
    """Base class: ``cls(**options)``, then ``fit(x_train)``, then ``forward(x)``.

    Subclasses declare their statistics with :meth:`_declare` (empty buffers until fitted) and
    fill them in :meth:`_fit`. Because a buffer's shape is only known after fitting, loading a
    fitted ``state_dict`` into a fresh, unfitted module resizes the buffers first — that is how
    a checkpoint is restored without the training data.
    """

    def __init__(self):
        super().__init__()
        # The shape of one training sample, (C,H,W) or (D,), saved with the statistics; the
        # Python copy lets forward check shapes without a device sync.
        self.register_buffer("input_shape", torch.empty(0, dtype=torch.long))
        self._sample_shape: tuple[int, ...] | None = None

    def _declare(self, *names: str) -> None:
        for name in names:
            self.register_buffer(name, torch.empty(0))

    @property
    def fitted(self) -> bool:
        return self._sample_shape is not None

    def fit(self, x_train: Tensor) -> Preprocessor:
        """Compute the statistics from the training split (N,C,H,W) or (N,D); returns self."""
        _check_ndim(x_train)
        if len(x_train) < 2:
            raise UserError("preprocessing needs at least 2 training samples to estimate statistics")
        self._fit(x_train)
        self.input_shape = torch.tensor(x_train.shape[1:], dtype=torch.long, device=x_train.device)
        self._sample_shape = tuple(x_train.shape[1:])
        return self

    def _fit(self, x: Tensor) -> None:
        raise NotImplementedError

    def _store(self, name: str, value: Tensor, like: Tensor) -> None:
        setattr(self, name, value.to(like.device, torch.float32).contiguous())

    def _require_fitted(self) -> tuple[int, ...]:
        if self._sample_shape is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(x_train) or load a state_dict")
        return self._sample_shape

    def _check_input(self, x: Tensor) -> None:
        expected = self._require_fitted()
        if tuple(x.shape[1:]) != expected:
            raise UserError(
                f"{type(self).__name__} was fitted on samples of shape {expected}, "
                f"got a batch of shape {tuple(x.shape)}: preprocess with the data it was fitted on"
            )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape after ``forward``. ``input_shape`` is one sample's, (C,H,W) or (D,), or a
        batch's, (N,C,H,W) or (N,D), whose leading N is kept."""
        return tuple(input_shape)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Resize our buffers to the saved ones: an unfitted module has empty placeholders, and a
        # preprocessor's buffers are entirely determined by the data it was fitted on.
        for name, buffer in self._buffers.items():
            key = prefix + name
            if buffer is not None and key in state_dict and state_dict[key].shape != buffer.shape:
                self._buffers[name] = torch.empty(state_dict[key].shape, dtype=buffer.dtype, device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if self.input_shape.numel() > 0:
            self._sample_shape = tuple(self.input_shape.tolist())

    def extra_repr(self) -> str:
        return f"input_shape={self._sample_shape}" if self.fitted else "unfitted"


@PREPROCESSORS.register("none")
class Identity(Preprocessor):
    """x' = x: no preprocessing (the data's [0,1] pixels go to the network as they are)."""

    @property
    def fitted(self) -> bool:
        return True

    def fit(self, x_train: Tensor) -> Identity:
        return self

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return ""


@PREPROCESSORS.register("mean_image")
class MeanImage(Preprocessor):
    """Subtract the mean image (AlexNet): x' = x - mu, mu = 1/N sum_i x_i, shape (C,H,W).

    The lecture's ``X -= np.mean(X, axis=0)``: every pixel of every channel centred on its
    own training mean (for flat data, every feature).
    """

    def __init__(self):
        super().__init__()
        self._declare("mean")

    def _fit(self, x: Tensor) -> None:
        mean, _ = mean_and_variance(x, ())
        self._store("mean", mean, x)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return x - self.mean


def _channel_dims(x: Tensor) -> tuple[int, ...]:
    # Images share statistics over the spatial positions of a channel; flat data has no
    # channels, so each feature is its own "channel" (the lecture's per-column X / np.std(X, 0)).
    return (2, 3) if x.dim() == 4 else ()


@PREPROCESSORS.register("channel_mean")
class ChannelMean(Preprocessor):
    """Subtract the per-channel mean (VGG): x'_c = x_c - mu_c, mu_c = mean of channel c over
    all training images and positions (3 numbers for RGB). Flat (N,D) data: per feature."""

    def __init__(self):
        super().__init__()
        self._declare("mean")

    def _fit(self, x: Tensor) -> None:
        mean, _ = mean_and_variance(x, _channel_dims(x))
        self._store("mean", mean, x)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return x - self.mean


@PREPROCESSORS.register("standardize")
class Standardize(Preprocessor):
    """Per-channel mean and std (ResNet): x'_c = (x_c - mu_c) / sigma_c.

    The lecture's ``X -= np.mean(X, axis=0); X /= np.std(X, axis=0)`` per channel for images,
    per feature for flat data. A constant channel/feature (sigma = 0, e.g. the always-black
    border pixels of the digits) is only centred: dividing it by 0 would make NaNs.
    """

    def __init__(self):
        super().__init__()
        self._declare("mean", "std")

    def _fit(self, x: Tensor) -> None:
        mean, var = mean_and_variance(x, _channel_dims(x))
        std = var.sqrt()
        self._store("mean", mean, x)
        self._store("std", torch.where(std > 1e-8, std, torch.ones_like(std)), x)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return (x - self.mean) / self.std


class _LinearProjection(Preprocessor):
    """Shared by PCA, PCA whitening and ZCA: x' = (x - mu) @ matrix, on flattened samples.

    Buffers: ``mean`` (D,), ``eigenvalues`` (D,) of the training covariance, descending (kept
    for reports: explained variance), and ``matrix``, the linear map each subclass builds from
    the eigen-decomposition Sigma = U diag(lambda) U^T.
    """

    def __init__(self):
        super().__init__()
        self._declare("mean", "eigenvalues", "matrix")

    def _fit(self, x: Tensor) -> None:
        mean, cov = mean_and_covariance(x, lambda chunk: chunk.flatten(1))
        values, vectors = eigen_descending(cov)
        self._store("mean", mean, x)
        self._store("eigenvalues", values, x)
        self._store("matrix", self._matrix(values, vectors), x)

    def _matrix(self, values: Tensor, vectors: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def kept_variance(self) -> float:
        """Fraction of the training variance that survives: sum of kept lambda / sum of all."""
        total = self.eigenvalues.sum()
        return float(self.eigenvalues[: self.matrix.shape[1]].sum() / total) if total > 0 else 1.0

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return (x.flatten(1) - self.mean) @ self.matrix

    def extra_repr(self) -> str:
        if not self.fitted:
            return "unfitted"
        return f"{super().extra_repr()}, k={self.matrix.shape[1]}, kept_variance={self.kept_variance:.4f}"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        self._require_fitted()
        batch = tuple(input_shape[:1]) if len(input_shape) in (2, 4) else ()
        return (*batch, self.matrix.shape[1])


@PREPROCESSORS.register("pca", options={"components": "components"})
class PCA(_LinearProjection):
    """Project the centred data on the top-k principal components: x' = U_k^T (x - mu), (N,k).

    Sigma = 1/N sum_i (x_i - mu)(x_i - mu)^T = U diag(lambda) U^T with lambda descending (the
    notes' ``cov = X.T @ X / N; U,S,V = svd(cov); Xrot_reduced = X @ U[:, :k]``). Images are
    flattened. ``preprocess.components``: a number >= 1 is k itself; a fraction f in (0,1)
    keeps the smallest k whose components carry at least f of the variance,
    sum_{j<=k} lambda_j / sum_j lambda_j >= f.
    """

    def __init__(self, components: float = 0.99):
        super().__init__()
        self.components = components

    def _num_components(self, values: Tensor) -> int:
        dims = len(values)
        components = self.components
        if components >= 1:
            k = int(components)
            if k != components:
                raise UserError(f"preprocess.components={components}: a count of components must be an integer")
            if k > dims:
                raise UserError(f"preprocess.components={k} but the data has only {dims} dimensions; use at most {dims}")
            return k
        if components <= 0:
            raise UserError(f"preprocess.components={components}: expected an integer >= 1 or a fraction in (0, 1)")
        total = values.sum()
        if total <= 0:  # constant data: any single direction "keeps" all (zero) variance
            return 1
        kept = values.cumsum(0) / total
        return min(int((kept < components).sum()) + 1, dims)

    def _matrix(self, values: Tensor, vectors: Tensor) -> Tensor:
        return vectors[:, : self._num_components(values)]


def _inverse_sqrt(values: Tensor, epsilon: float) -> Tensor:
    """1/sqrt(lambda + eps): eps keeps near-zero-variance directions from exploding."""
    return (values + epsilon).rsqrt()


@PREPROCESSORS.register("pca_whiten", options={"components": "components", "epsilon": "epsilon"})
class PCAWhiten(PCA):
    """PCA whitening: x' = diag(1/sqrt(lambda_k + eps)) U_k^T (x - mu), shape (N,k).

    The notes' ``Xwhite = Xrot / np.sqrt(S + 1e-5)``: after rotating onto the principal axes each
    dimension is divided by its standard deviation, so the training data's covariance becomes
    diag(lambda/(lambda + eps)) ~ I. k is chosen as in PCA (``preprocess.components``), eps is
    ``preprocess.epsilon``.
    """

    def __init__(self, components: float = 0.99, epsilon: float = 1e-5):
        super().__init__(components)
        self.epsilon = epsilon

    def _matrix(self, values: Tensor, vectors: Tensor) -> Tensor:
        k = self._num_components(values)
        return vectors[:, :k] * _inverse_sqrt(values[:k], self.epsilon)


@PREPROCESSORS.register("zca", options={"epsilon": "epsilon"})
class ZCA(_LinearProjection):
    """ZCA whitening: x' = U diag(1/sqrt(lambda + eps)) U^T (x - mu), same shape as x.

    PCA whitening followed by the rotation back to pixel space (all D components): the
    covariance is ~I like PCA whitening, but among all whitening transforms ZCA's output stays
    closest to the input, so images still look like (edge-enhanced) images.
    """

    def __init__(self, epsilon: float = 1e-5):
        super().__init__()
        self.epsilon = epsilon

    def _matrix(self, values: Tensor, vectors: Tensor) -> Tensor:
        return (vectors * _inverse_sqrt(values, self.epsilon)) @ vectors.T

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).view(x.shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)


def create_preprocessing(name: str, x_train: Tensor | None = None, **options) -> Preprocessor:
    """The preprocessor ``name`` (an ``nn.Module``), fitted on ``x_train`` when given, e.g.
    ``create_preprocessing("pca_whiten", components=0.95, epsilon=1e-5, x_train=x_train)``.

    ``x_train``: (N,C,H,W) images or (N,D) features, float32 in [0,1]; never validation or
    test data (their statistics would leak into the model). Put it in front of the network
    (``nn.Sequential(pre, net)``) so its statistics are saved with the weights. An unknown name
    or option raises :class:`trainlab.errors.ConfigError`.
    """
    pre = PREPROCESSORS.get(name).create(**options)
    return pre.fit(x_train) if x_train is not None else pre


def build_preprocessor(cfg_preprocess: dict, x_train: Tensor) -> Preprocessor:
    """The config adapter of :func:`create_preprocessing`: ``cfg_preprocess["name"]`` with its
    options from the section, fitted on the training split only."""
    info = PREPROCESSORS.get(_option(cfg_preprocess, "name"))
    return create_preprocessing(info.name, x_train, **info.options_from(cfg_preprocess))


__all__ = [
    "PREPROCESSORS",
    "Preprocessor",
    "Identity",
    "MeanImage",
    "ChannelMean",
    "Standardize",
    "PCA",
    "PCAWhiten",
    "ZCA",
    "PreprocessInfo",
    "create_preprocessing",
    "build_preprocessor",
    "mean_and_variance",
    "mean_and_covariance",
    "eigen_descending",
]

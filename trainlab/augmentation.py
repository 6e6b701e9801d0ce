"""Data augmentation (the slides, reference/002, and the 2017 lecture 7 transcript, reference/000:
*Regularization: Data Augmentation*).

"Randomly transform the image in some way during training such that the label is preserved";
at test time, marginalise the noise out by averaging a fixed set of crops and flips.

Every augmentation works on a whole batch at once, on the batch's device, with independent
randomness per sample, and draws that randomness only from the ``torch.Generator`` it is given
(never the global RNG), so a seeded run is repeatable and data loading order cannot change it.
There are no per-sample Python loops: per-sample parameters are (N,)-shaped tensors, and
crops, boxes and warps are built from index arithmetic or ``F.affine_grid``/``F.grid_sample``
(the airbench way: ``batch_flip_lr``, ``batch_crop``).

    augment = create_augmentation(["flip", "crop", "cutout"], crop_padding=2, cutout_size=4, seed=0)
    x, y = augment(x, y)            # any batch, e.g. from a torch DataLoader, on its own device

    augment = build_augment(cfg["augment"], num_classes=10, x_train=x_train)   # from the config
    gen = torch.Generator().manual_seed(cfg["seed"])
    x, y = augment(x, y, gen)       # y: int64 (N,), or soft (N, C) when mixup/cutmix is on

Augmentations see raw images in [0, 1] (preprocessing lives in the model and runs after them).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trainlab.errors import ConfigError, UserError
from trainlab.preprocessing import eigen_descending, mean_and_covariance
from trainlab.registry import Component, Registry, check_bounds, check_keywords
from trainlab.schema import SCHEMA


@dataclass(frozen=True)
class AugmentInfo(Component):
    """An augmentation entry: ``make`` is the :class:`Augmentation` class; ``options`` maps its
    constructor's keywords to keys of the ``augment`` config section."""

    def __call__(self, cfg_augment: dict) -> Augmentation:
        """The config adapter: this augmentation with its options read from the ``augment`` section."""
        return self.make(**self.options_from(cfg_augment))


AUGMENTATIONS: Registry[AugmentInfo] = Registry("augmentation", entry=AugmentInfo, section="augment")

# ITU-R BT.601 luma, the grey level torchvision's and PIL's colour jitter use.
_LUMA = (0.299, 0.587, 0.114)


def _default(key: str):
    value = SCHEMA[f"augment.{key}"].default
    return tuple(value) if isinstance(value, list) else value


def require_images(x: Tensor, name: str) -> None:
    if x.dim() != 4:
        raise UserError(f"augmentation {name} needs images (N,C,H,W); data is flat")


# --- randomness: drawn on the generator's device, then moved to the batch ------------------
# Only per-sample parameters are random, (N,) or (N,k) numbers, so the move is cheap, and the
# same seed gives the same augmentation on every device.


def _uniform(gen: torch.Generator, shape, low: float, high: float, like: Tensor) -> Tensor:
    u = torch.rand(shape, generator=gen, device=gen.device).to(like.device, like.dtype)
    return low + (high - low) * u


def _randint(gen: torch.Generator, high: int, n: int, device) -> Tensor:
    """Integers uniform in {0, ..., high - 1}, one per sample."""
    return torch.randint(high, (n,), generator=gen, device=gen.device).to(device)


def _permutation(gen: torch.Generator, n: int, device) -> Tensor:
    return torch.randperm(n, generator=gen, device=gen.device).to(device)


def _beta(gen: torch.Generator, alpha: float, n: int, like: Tensor) -> Tensor:
    """n draws of Beta(alpha, alpha). torch's Beta cannot take a generator, so numpy samples
    it from a seed drawn from ``gen``: still fully determined by the generator."""
    seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device).item())
    draws = np.random.default_rng(seed).beta(alpha, alpha, size=n)
    return torch.from_numpy(draws).to(like.device, like.dtype)


# --- shared image helpers -------------------------------------------------------------------


def _per_sample(v: Tensor) -> Tensor:
    """(N,) → (N,1,1,1), to broadcast one number per image over its pixels."""
    return v.view(-1, 1, 1, 1)


def _box_mask(top: Tensor, left: Tensor, bottom: Tensor, right: Tensor, h: int, w: int) -> Tensor:
    """(N,1,H,W) bool mask of the boxes rows [top, bottom) x cols [left, right), one per sample;
    parts outside the image are simply not there (clipping for free)."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _warp(x: Tensor, theta: Tensor, padding_mode: str) -> Tensor:
    """Resample x at theta @ (u, v, 1) for each output position (u, v) in [-1, 1] coordinates.

    align_corners=False puts -1 and 1 on the image's outer edges, so theta = identity samples
    exactly the pixel centres and returns x unchanged.
    """
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _gray(x: Tensor) -> Tensor:
    """(N,1,H,W) grey level: BT.601 luma for RGB, the channel mean otherwise."""
    if x.shape[1] == 3:
        weights = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


# --- the augmentations ---------------------------------------------------------------------


class Augmentation:
    """A batch transform ``(x, y, gen) -> (x, y)``; subclasses implement :meth:`apply`.

    ``needs_images``: refuses flat (N,D) data. ``needs_fit``: call :meth:`fit` with the
    training split first. ``mixes_labels``: returns soft targets (N, num_classes).
    """

    name = "augmentation"
    needs_images = True
    needs_fit = False
    mixes_labels = False

    def fit(self, x_train: Tensor) -> Augmentation:
        return self

    def __call__(self, x: Tensor, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        if not isinstance(gen, torch.Generator):
            raise TypeError(f"augmentation {self.name} needs a torch.Generator (got {type(gen).__name__}); "
                            "it never draws from the global RNG")
        if self.needs_images:
            require_images(x, self.name)
        return self.apply(x, y, gen)

    def apply(self, x: Tensor, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def _register(name: str, **options: str):
    """Register an Augmentation class under ``name``; ``options``: constructor keyword → key of
    the ``augment`` config section."""

    def add(cls):
        cls.name = name
        return AUGMENTATIONS.register(name, options=options)(cls)

    return add


@_register("flip")
@dataclass(eq=False)
class RandomFlip(Augmentation):
    """Horizontal flip: x'[n] = x[n][..., ::-1] with probability p, else x[n].

    One uniform u_n per sample, flipped where u_n < p ("if you take a cat and flip it
    horizontally, it's still a cat").
    """

    p: float = 0.5

    def apply(self, x, y, gen):
        flip = torch.rand(len(x), generator=gen, device=gen.device).to(x.device) < self.p
        return torch.where(_per_sample(flip), x.flip(-1), x), y


@_register("crop", padding="crop_padding")
@dataclass(eq=False)
class RandomCrop(Augmentation):
    """Random crop of the zero-padded image, i.e. a random translation by up to ``padding`` px:
    x'[n, c, i, j] = pad(x, p)[n, c, i + dy_n, j + dx_n],  dy_n, dx_n uniform in {0, ..., 2p}.
    """

    padding: int = _default("crop_padding")

    def apply(self, x, y, gen):
        p = self.padding
        n, _, h, w = x.shape
        padded = F.pad(x, (p, p, p, p))
        dy = _randint(gen, 2 * p + 1, n, x.device)
        dx = _randint(gen, 2 * p + 1, n, x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N,H,1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N,1,W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        # Advanced indices around a slice put their broadcast dims first: (N,H,W,C).
        return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous(), y


@_register("resized_crop", scale="scale", ratio="ratio")
@dataclass(eq=False)
class RandomResizedCrop(Augmentation):
    """Random resized crop ("random crops and scales"), resized back to H x W (bilinear).

    Area fraction s ~ U(scale), aspect r with log r ~ U(log ratio); the crop is
    w = sqrt(s H W r), h = sqrt(s H W / r) at a uniform position. As in torchvision, up to 10
    (s, r) draws per sample and the first that fits is used (vectorised: all 10 are drawn);
    if none fits, the last is clipped to the image.
    """

    scale: tuple[float, float] = _default("scale")
    ratio: tuple[float, float] = _default("ratio")
    tries: int = 10

    def apply(self, x, y, gen):
        n, _, h, w = x.shape
        area = _uniform(gen, (n, self.tries), *self.scale, x) * (h * w)
        aspect = _uniform(gen, (n, self.tries), math.log(self.ratio[0]), math.log(self.ratio[1]), x).exp()
        crop_w, crop_h = (area * aspect).sqrt(), (area / aspect).sqrt()
        fits = (crop_w <= w) & (crop_h <= h)
        # index of the first draw that fits; the last draw when none does
        pick = torch.where(fits.any(1), fits.int().argmax(1), self.tries - 1)[:, None]
        crop_w = crop_w.gather(1, pick)[:, 0].clamp(max=w)
        crop_h = crop_h.gather(1, pick)[:, 0].clamp(max=h)
        left = _uniform(gen, n, 0.0, 1.0, x) * (w - crop_w)
        top = _uniform(gen, n, 0.0, 1.0, x) * (h - crop_h)
        # output [-1, 1] → the crop's extent in input [-1, 1] coordinates
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = crop_w / w
        theta[:, 1, 1] = crop_h / h
        theta[:, 0, 2] = (2 * left + crop_w) / w - 1
        theta[:, 1, 2] = (2 * top + crop_h) / h - 1
        return _warp(x, theta, padding_mode="border"), y


@_register("jitter", brightness="brightness", contrast="contrast", saturation="saturation")
@dataclass(eq=False)
class ColorJitter(Augmentation):
    """Colour jitter ("randomize contrast and brightness"), factors per sample, in this order:

    brightness  x' = b x                      b ~ U(1 - brightness, 1 + brightness)
    contrast    x' = c x + (1 - c) mean(g)     c ~ U(1 - contrast, 1 + contrast)
    saturation  x' = s x + (1 - s) g           s ~ U(1 - saturation, 1 + saturation)

    g is the grey image (BT.601 luma); saturation is a no-op for 1-channel images. Each step is
    clipped to [0, 1], the range of a real pixel (as torchvision does).
    """

    brightness: float = _default("brightness")
    contrast: float = _default("contrast")
    saturation: float = _default("saturation")

    def _factor(self, gen, strength: float, x: Tensor) -> Tensor:
        return _per_sample(_uniform(gen, len(x), 1.0 - strength, 1.0 + strength, x))

    def apply(self, x, y, gen):
        b = self._factor(gen, self.brightness, x)
        c = self._factor(gen, self.contrast, x)
        s = self._factor(gen, self.saturation, x)
        x = (x * b).clamp(0, 1)
        x = torch.lerp(_gray(x).mean((1, 2, 3), keepdim=True), x, c).clamp(0, 1)
        if x.shape[1] > 1:
            x = torch.lerp(_gray(x), x, s).clamp(0, 1)
        return x, y


@_register("lighting", std="lighting_std")
@dataclass(eq=False)
class Lighting(Augmentation):
    """AlexNet's PCA colour noise ("fancy PCA", Krizhevsky et al. 2012).

    1. PCA of all [R, G, B] pixels of the training set: Sigma = P diag(lambda) P^T (fit).
    2. Per image draw alpha ~ N(0, std^2) for each component.
    3. Add the same offset to every pixel: x'[n, :, i, j] = x[n, :, i, j] + P (alpha_n * lambda).

    Works for any channel count (1 channel: a random brightness shift). Pixels are in [0, 1],
    so lambda is in [0, 1] units, as in the common ImageNet implementations.
    """

    std: float = _default("lighting_std")
    eigenvalues: Tensor | None = field(default=None, repr=False)
    eigenvectors: Tensor | None = field(default=None, repr=False)
    needs_fit = True

    def fit(self, x_train: Tensor) -> Lighting:
        require_images(x_train, self.name)
        channels = x_train.shape[1]
        _, cov = mean_and_covariance(x_train, lambda chunk: chunk.movedim(1, -1).reshape(-1, channels))
        values, vectors = eigen_descending(cov)
        self.eigenvalues, self.eigenvectors = values.float(), vectors.float()
        return self

    def apply(self, x, y, gen):
        if self.eigenvalues is None:
            raise RuntimeError("lighting needs the training set's colour PCA: call fit(x_train) first")
        if x.shape[1] != len(self.eigenvalues):
            raise UserError(f"lighting was fitted on {len(self.eigenvalues)}-channel images, got {x.shape[1]} channels")
        alpha = torch.randn(len(x), x.shape[1], generator=gen, device=gen.device).to(x.device, x.dtype) * self.std
        values = self.eigenvalues.to(x.device, x.dtype)
        vectors = self.eigenvectors.to(x.device, x.dtype)
        offset = (alpha * values) @ vectors.T  # row n: P (alpha_n * lambda)
        return x + offset[:, :, None, None], y


@_register("affine", rotate="rotate", shear="shear", translate="translate")
@dataclass(eq=False)
class RandomAffine(Augmentation):
    """Random rotation, shear and translation ("translation, rotation, stretching, shearing").

    Per sample: angle a ~ U(-rotate, rotate) deg, shear k = tan(U(-shear, shear) deg),
    shift t ~ U(-translate, translate) of the side. Each output pixel p samples the input at
    R(a) [[1, k], [0, 1]] p + t (pixel units about the centre; corners outside become 0).
    """

    rotate: float = _default("rotate")
    shear: float = _default("shear")
    translate: float = _default("translate")

    def apply(self, x, y, gen):
        n, _, h, w = x.shape
        angle = torch.deg2rad(_uniform(gen, n, -self.rotate, self.rotate, x))
        k = torch.tan(torch.deg2rad(_uniform(gen, n, -self.shear, self.shear, x)))
        tx = _uniform(gen, n, -self.translate, self.translate, x)
        ty = _uniform(gen, n, -self.translate, self.translate, x)
        cos, sin = angle.cos(), angle.sin()
        # M = R @ Shear in pixel units; theta = S^-1 M S with S = diag(W/2, H/2) so a rotation
        # stays a rotation on non-square images; a shift of t sides is 2t in [-1, 1] units.
        theta = torch.stack(
            [
                torch.stack([cos, (cos * k - sin) * h / w, 2 * tx], 1),
                torch.stack([sin * w / h, sin * k + cos, 2 * ty], 1),
            ],
            1,
        )
        return _warp(x, theta, padding_mode="zeros"), y


@_register("cutout", size="cutout_size")
@dataclass(eq=False)
class Cutout(Augmentation):
    """Cutout (DeVries & Taylor 2017): "set random image regions to zero".

    A size x size square centred at (cy, cx), uniform over the image, is zeroed; near the
    border it is clipped, so the network also sees partly occluded edges.
    """

    size: int = _default("cutout_size")

    def apply(self, x, y, gen):
        n, _, h, w = x.shape
        top = _randint(gen, h, n, x.device) - self.size // 2
        left = _randint(gen, w, n, x.device) - self.size // 2
        hole = _box_mask(top, left, top + self.size, left + self.size, h, w)
        return x.masked_fill(hole, 0), y


def soft_targets(y: Tensor, num_classes: int | None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Integer labels (N,) → one-hot rows (N, num_classes); soft targets (N, C) pass through."""
    if y.dim() == 2:
        return y.to(dtype)
    if num_classes is None:
        raise ValueError("mixing labels needs num_classes: pass soft targets (N, C) or set .num_classes "
                         "(build_augment does)")
    return F.one_hot(y.long(), num_classes).to(dtype)


def _target_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


class _Mixing(Augmentation):
    """Pairs each sample n with sample perm(n) and mixes images and targets with one weight:
    y' = lam y_n + (1 - lam) y_perm(n), lam being exactly the fraction of x'_n that is x_n."""

    mixes_labels = True
    alpha: float
    num_classes: int | None

    def _mix_targets(self, y: Tensor, lam: Tensor, perm: Tensor, x: Tensor) -> Tensor:
        y = soft_targets(y, self.num_classes, _target_dtype(x))
        return torch.lerp(y[perm], y, lam.to(y.dtype)[:, None])


@_register("mixup", alpha="mix_alpha")
@dataclass(eq=False)
class Mixup(_Mixing):
    """Mixup (Zhang et al. 2018): "train on random blends of images", e.g. 40% cat, 60% dog.

    x' = lam x_n + (1 - lam) x_perm(n),  y' = lam y_n + (1 - lam) y_perm(n),
    lam ~ Beta(alpha, alpha) per sample, perm a random pairing. Works on flat data too.
    """

    alpha: float = _default("mix_alpha")
    num_classes: int | None = None
    needs_images = False

    def apply(self, x, y, gen):
        n = len(x)
        lam = _beta(gen, self.alpha, n, x)
        perm = _permutation(gen, n, x.device)
        mixed = torch.lerp(x[perm], x, lam.view(-1, *[1] * (x.dim() - 1)))
        return mixed, self._mix_targets(y, lam, perm, x)


@_register("cutmix", alpha="mix_alpha")
@dataclass(eq=False)
class CutMix(_Mixing):
    """CutMix (Yun et al. 2019): paste a box of image perm(n) into image n.

    Box side sqrt(1 - lam0) of each image side, lam0 ~ Beta(alpha, alpha), centre uniform,
    clipped at the border. The target weight is the area actually kept after clipping:
    lam = 1 - (box area) / (H W), so y' = lam y_n + (1 - lam) y_perm(n) matches the pixels.
    """

    alpha: float = _default("mix_alpha")
    num_classes: int | None = None

    def apply(self, x, y, gen):
        n, _, h, w = x.shape
        cut = (1 - _beta(gen, self.alpha, n, x).double()).sqrt()
        box_h, box_w = (cut * h).round().long(), (cut * w).round().long()
        top = _randint(gen, h, n, x.device) - box_h // 2
        left = _randint(gen, w, n, x.device) - box_w // 2
        top, bottom = top.clamp(0, h), (top + box_h).clamp(0, h)
        left, right = left.clamp(0, w), (left + box_w).clamp(0, w)
        perm = _permutation(gen, n, x.device)
        box = _box_mask(top, left, bottom, right, h, w)
        lam = 1 - ((bottom - top) * (right - left)).to(x.dtype) / (h * w)
        return torch.where(box, x[perm], x), self._mix_targets(y, lam, perm, x)


# --- composing ------------------------------------------------------------------------------


class AugmentPipeline:
    """Applies augmentations in order. If any mixes labels, integer labels are turned into
    one-hot targets first, so the output is always soft (N, num_classes) in that case.

    ``augment(x, y, gen)`` draws from ``gen``; ``augment(x, y)`` from the pipeline's own
    generator (seeded by ``seed``), for loops that do not keep one.
    """

    def __init__(self, augmentations: Sequence[Augmentation], num_classes: int | None, seed: int | None = None):
        self.augmentations = list(augmentations)
        self.num_classes = num_classes
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.soft_targets = any(a.mixes_labels for a in self.augmentations)
        for a in self.augmentations:
            if a.mixes_labels:
                a.num_classes = num_classes

    def fit(self, x_train: Tensor) -> AugmentPipeline:
        for a in self.augmentations:
            if a.needs_fit:
                a.fit(x_train)
        return self

    def __call__(self, x: Tensor, y: Tensor, gen: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        gen = self.generator if gen is None else gen
        if self.soft_targets:
            y = soft_targets(y, self.num_classes, _target_dtype(x))
        for a in self.augmentations:
            x, y = a(x, y, gen)
        return x, y

    def __repr__(self) -> str:
        return f"AugmentPipeline({self.augmentations}, num_classes={self.num_classes})"


def augment_option_keys() -> list[str]:
    """Every option an augmentation takes, by its ``augment`` config key (crop_padding, ...)."""
    return list(dict.fromkeys(key for name in AUGMENTATIONS for key in AUGMENTATIONS.get(name).options.values()))


def create_augmentation(names: Sequence[str], num_classes: int | None = None, x_train: Tensor | None = None,
                        seed: int | None = None, **options) -> AugmentPipeline:
    """The augmentations ``names`` composed in order, batched and on the batch's device:

        augment = create_augmentation(["flip", "crop", "cutout"], crop_padding=2, cutout_size=4, seed=0)
        x, y = augment(x, y)      # a batch (N, C, H, W) in [0, 1], e.g. from a torch DataLoader

    ``options`` are named as the ``augment`` config keys (crop_padding, cutout_size, scale,
    ratio, brightness, contrast, saturation, lighting_std, rotate, shear, translate, mix_alpha);
    each defaults to the value in its augmentation's signature. ``num_classes`` is needed by
    mixup/cutmix (they return soft targets), ``x_train`` by lighting (fitted on it) and lets
    flat data be refused before training. An unknown name, or an option that none of ``names``
    takes, raises :class:`trainlab.errors.ConfigError`.
    """
    names = [names] if isinstance(names, str) else list(names)
    infos = [AUGMENTATIONS.get(name) for name in names]
    check_keywords("create_augmentation", options, augment_option_keys())
    check_bounds("create_augmentation", options, {key: f"augment.{key}" for key in options})
    used = {key for info in infos for key in info.options.values()}
    unused = [key for key in options if key not in used]
    if unused:
        raise ConfigError(f"option {unused[0]!r} is not used by any of the augmentations {names}; "
                          f"they take: {', '.join(sorted(used)) or 'no options'}")
    pipeline = AugmentPipeline([info(options) for info in infos], num_classes, seed)
    if any(a.mixes_labels for a in pipeline.augmentations) and num_classes is None:
        raise ConfigError(f"{', '.join(a.name for a in pipeline.augmentations if a.mixes_labels)} mixes labels "
                          "into soft targets: pass num_classes")
    if x_train is None:
        unfitted = [a.name for a in pipeline.augmentations if a.needs_fit]
        if unfitted:
            raise ValueError(f"augmentation {', '.join(unfitted)} must be fitted: pass x_train")
        return pipeline
    for a in pipeline.augmentations:
        if a.needs_images:
            require_images(x_train, a.name)
    return pipeline.fit(x_train)


def build_augment(cfg_augment: dict, num_classes: int, x_train: Tensor | None = None,
                  seed: int | None = None) -> AugmentPipeline | None:
    """The config adapter of :func:`create_augmentation`: ``cfg_augment["names"]`` in order with
    the options they take from the section; None when the list is empty."""
    names = list(cfg_augment.get("names", []))
    if not names:
        return None
    used = {key for name in names for key in AUGMENTATIONS.get(name).options.values()}
    options = {key: cfg_augment[key] for key in used if key in cfg_augment}
    return create_augmentation(names, num_classes, x_train, seed, **options)


# --- test-time augmentation -----------------------------------------------------------------


# Test-time views (``augment.tta``, ``--tta``).
TTA_MODES = SCHEMA["augment.tta"].choices
# Multi-scale testing: the lecture's ResNet resizes to 5 scales {224, 256, 384, 480, 640} for
# 224 crops, i.e. 1 to ~2.9 times the crop; small images tolerate less, so 3 scales up to 1.5.
TTA_SCALES = (1.0, 1.25, 1.5)


def _five_crops(x: Tensor, h: int, w: int) -> list[Tensor]:
    """Centre and 4 corner crops of size h×w from an image at least that large."""
    big_h, big_w = x.shape[-2:]
    top, left = (big_h - h) // 2, (big_w - w) // 2
    corners = [(top, left), (0, 0), (0, big_w - w), (big_h - h, 0), (big_h - h, big_w - w)]
    return [x[..., t : t + h, c : c + w] for t, c in corners]


def tta_views(x: Tensor, mode: str) -> list[Tensor]:
    """The fixed views whose predictions are averaged at test time ("average a fixed set of crops").

    none   → [x]
    flip   → [x, flip(x)]
    crops  → the centre and 4 corner crops of x zero-padded by pad = max(1, H // 8), i.e. x
             shifted by (0, 0) and (±pad, ±pad), each with and without a horizontal flip: 10
             views, all the size of x, the first being x itself. Deterministic.
    scales → multi-scale testing (the lecture's ResNet: "Resize image at 5 scales ... For each
             size, use 10 224×224 crops: 4 corners + center, + flips"): the 10 ``crops`` views
             at scale 1, then for each s in :data:`TTA_SCALES` above 1, x resized (bilinear) to
             round(s·H) × round(s·W) and its centre and 4 corner H×W crops, with and without a
             flip: 10 views per scale, 30 in all, each the size of x.
    """
    if mode == "none":
        return [x]
    require_images(x, f"tta={mode}")
    if mode == "flip":
        return [x, x.flip(-1)]
    h, w = x.shape[-2:]
    if mode in ("crops", "scales"):
        pad = max(1, h // 8)
        crops = _five_crops(F.pad(x, (pad, pad, pad, pad)), h, w)
        views = crops + [c.flip(-1) for c in crops]
        if mode == "scales":
            for s in TTA_SCALES[1:]:
                big = F.interpolate(x, size=(round(s * h), round(s * w)), mode="bilinear", align_corners=False)
                crops = _five_crops(big, h, w)
                views += crops + [c.flip(-1) for c in crops]
        return views
    raise UserError(f"unknown test-time augmentation {mode!r}; choose one of: {', '.join(TTA_MODES)}")


__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "AugmentPipeline",
    "RandomFlip",
    "RandomCrop",
    "RandomResizedCrop",
    "ColorJitter",
    "Lighting",
    "RandomAffine",
    "Cutout",
    "Mixup",
    "CutMix",
    "AugmentInfo",
    "create_augmentation",
    "build_augment",
    "soft_targets",
    "tta_views",
    "TTA_MODES",
    "TTA_SCALES",
    "require_images",
]

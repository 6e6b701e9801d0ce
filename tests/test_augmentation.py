"""Batched augmentations: shapes, per-sample randomness from the given generator only,
identity settings, and each technique's formula."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainlab.augmentation import (
    AUGMENTATIONS,
    ColorJitter,
    CutMix,
    Cutout,
    Lighting,
    Mixup,
    RandomAffine,
    RandomCrop,
    RandomFlip,
    RandomResizedCrop,
    build_augment,
    tta_views,
)
from trainlab.errors import UserError

NAMES = ["flip", "crop", "resized_crop", "jitter", "lighting", "affine", "cutout", "mixup", "cutmix"]
MIXING = {"mixup", "cutmix"}


def images(n=16, c=3, h=12, w=12, seed=0) -> torch.Tensor:
    """Random images in [0.05, 0.95]: no sample equals its own flip or shift, and jitter's
    clipping at 0 and 1 stays rare."""
    gen = torch.Generator().manual_seed(seed)
    return 0.05 + 0.9 * torch.rand(n, c, h, w, generator=gen)


def seeded(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(name: str, x_train: torch.Tensor | None = None, num_classes: int = 10, **cfg):
    aug = AUGMENTATIONS.get(name)(cfg)
    if aug.needs_fit:
        aug.fit(images(64) if x_train is None else x_train)
    if aug.mixes_labels:
        aug.num_classes = num_classes
    return aug


def labels(n=16, num_classes=10) -> torch.Tensor:
    return torch.arange(n) % num_classes


def test_registry_has_every_augmentation():
    assert AUGMENTATIONS.names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_preserves_shape_and_dtype(name):
    x, y = images(), labels()
    out, target = make(name)(x, y, seeded())
    assert out.shape == x.shape and out.dtype == x.dtype
    if name in MIXING:
        assert target.shape == (16, 10) and target.dtype == torch.float32
        torch.testing.assert_close(target.sum(1), torch.ones(16))
    else:
        assert torch.equal(target, y)


@pytest.mark.parametrize("name", NAMES)
def test_randomness_differs_across_samples_of_one_batch(name):
    x = images(1).expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    y = torch.zeros(16, 10)
    y[:, 0] = 1.0
    if name in MIXING:
        # copies mix into copies; the per-sample weights show in the targets of distinct classes
        y = torch.eye(16)
        out, target = make(name, num_classes=16)(images(16), y, seeded())
        assert len(torch.unique(target.max(1).values)) > 8
    else:
        out, _ = make(name)(x, y, seeded())
        distinct = {tuple(o.flatten().tolist()) for o in out}
        # a shared draw would give 1; flip has only 2 outcomes, the others many
        assert len(distinct) == 2 if name == "flip" else len(distinct) > 8


@pytest.mark.parametrize("name", NAMES)
def test_a_seeded_generator_reproduces_exactly_and_another_seed_differs(name):
    x, y = images(), labels()
    aug = make(name)
    first = aug(x, y, seeded(7))
    again = aug(x, y, seeded(7))
    other = aug(x, y, seeded(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("name", NAMES)
def test_never_touches_the_global_rng(name):
    x, y = images(), labels()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    make(name)(x, y, seeded())
    assert torch.equal(torch.get_rng_state(), state)


def test_a_generator_is_required():
    with pytest.raises(TypeError, match="torch.Generator"):
        make("flip")(images(), labels(), None)


@pytest.mark.parametrize(
    "aug",
    [
        RandomFlip(p=0.0),
        RandomCrop(padding=0),
        RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0)),
        ColorJitter(brightness=0.0, contrast=0.0, saturation=0.0),
        Lighting(std=0.0).fit(images(64)),
        RandomAffine(rotate=0.0, shear=0.0, translate=0.0),
        Cutout(size=0),
    ],
    ids=lambda a: a.name,
)
def test_identity_settings_are_the_identity(aug):
    x, y = images(), labels()
    out, target = aug(x, y, seeded())
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    assert torch.equal(target, y)


def test_identity_settings_from_config():
    cfg = dict(crop_padding=0, scale=[1, 1], ratio=[1, 1], brightness=0, contrast=0, saturation=0,
               lighting_std=0, rotate=0, shear=0, translate=0)
    x, y = images(), labels()
    augment = build_augment({**cfg, "names": ["crop", "resized_crop", "jitter", "lighting", "affine"]}, 10, x)
    torch.testing.assert_close(augment(x, y, seeded())[0], x, atol=1e-5, rtol=0)


def test_flip_flips_exactly_the_chosen_samples():
    x = images(64)
    out, _ = RandomFlip()(x, labels(64), seeded(3))
    chosen = torch.rand(64, generator=seeded(3)) < 0.5  # one uniform per sample, flip if < p
    assert 10 < chosen.sum() < 54
    for n in range(64):
        assert torch.equal(out[n], x[n].flip(-1) if chosen[n] else x[n])


def test_crop_is_a_translation_by_at_most_padding_with_zero_fill():
    x, pad = images(32, h=8, w=8), 2
    out, _ = RandomCrop(padding=pad)(x, labels(32), seeded())
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    shifts = set()
    for n in range(32):
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(out[n], padded[n, :, dy:dy + 8, dx:dx + 8])]
        assert found, f"sample {n} is not a crop of the padded image"
        shifts.add(found[0])
    assert len(shifts) > 8  # offsets drawn per sample


def test_resized_crop_zooms_by_the_side_fraction():
    # a horizontal ramp x[j] = j: a crop of area s at aspect 1 has slope sqrt(s) after resizing back
    h = w = 16
    ramp = torch.arange(w, dtype=torch.float32).expand(8, 1, h, w).contiguous()
    out, _ = RandomResizedCrop(scale=(0.25, 0.25), ratio=(1.0, 1.0))(ramp, labels(8), seeded())
    slopes = out[:, 0, :, 1:] - out[:, 0, :, :-1]
    torch.testing.assert_close(slopes, torch.full_like(slopes, 0.5), atol=1e-4, rtol=0)
    starts = out[:, 0, 0, 0]
    assert starts.min() >= 0 and starts.max() <= w / 2 and len(torch.unique(starts)) == 8


def test_resized_crop_redraws_until_the_crop_fits_so_the_area_is_exact():
    # s = 0.64 and r in [0.5, 2]: a crop 0.8 sqrt(r) wide fits only for r in [0.64, 1.5625];
    # torchvision's rule (first of 10 draws that fits) keeps every area exactly 0.64
    h = w = 16
    ramps = torch.stack(torch.meshgrid(torch.arange(h) + 0.0, torch.arange(w) + 0.0, indexing="xy"))
    x = ramps.expand(32, 2, h, w).contiguous()  # channel 0: column index, channel 1: row index
    out, _ = RandomResizedCrop(scale=(0.64, 0.64), ratio=(0.5, 2.0))(x, labels(32), seeded())
    # slopes crop_w / W and crop_h / H; median, as within half a pixel of the image edge the
    # bilinear sample is clamped to the border pixel
    width = (out[:, 0, :, 1:] - out[:, 0, :, :-1]).flatten(1).median(1).values
    height = (out[:, 1, 1:, :] - out[:, 1, :-1, :]).flatten(1).median(1).values
    torch.testing.assert_close(width * height, torch.full((32,), 0.64), atol=1e-4, rtol=0)
    aspect = width / height
    assert aspect.min() >= 0.64 - 1e-4 and aspect.max() <= 1.5625 + 1e-4 and aspect.std() > 0.1


def test_resized_crop_with_unreachable_aspect_still_stays_inside_the_image():
    x = images(8)
    out, _ = RandomResizedCrop(scale=(1.0, 1.0), ratio=(4.0, 4.0))(x, labels(8), seeded())
    assert torch.isfinite(out).all() and out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6


def test_brightness_scales_each_image_by_one_factor_in_range():
    x = images() * 0.5  # no clipping at 1
    out, _ = ColorJitter(brightness=0.4, contrast=0.0, saturation=0.0)(x, labels(), seeded())
    ratio = out / x
    factor = ratio.flatten(1)[:, 0]
    torch.testing.assert_close(ratio, factor.view(-1, 1, 1, 1).expand_as(x), atol=1e-5, rtol=0)
    assert factor.min() >= 0.6 and factor.max() <= 1.4 and factor.std() > 0.05


def test_contrast_keeps_the_mean_grey_and_scales_deviations():
    x = 0.4 + 0.2 * images()
    out, _ = ColorJitter(brightness=0.0, contrast=0.5, saturation=0.0)(x, labels(), seeded())
    grey = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    mean_grey = (x * grey).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    factor = (out - mean_grey) / (x - mean_grey)
    c = factor.flatten(1).median(1).values
    torch.testing.assert_close(out, mean_grey + c.view(-1, 1, 1, 1) * (x - mean_grey), atol=1e-5, rtol=0)
    assert c.min() >= 0.5 and c.max() <= 1.5 and c.std() > 0.05


def test_saturation_keeps_grey_and_is_a_no_op_on_one_channel():
    x = images()
    out, _ = ColorJitter(brightness=0.0, contrast=0.0, saturation=0.9)(x, labels(), seeded())
    grey = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    changed = (out - x).abs().flatten(1).max(1).values > 1e-3
    assert changed.sum() > 12
    unclipped = ((out > 0) & (out < 1)).all(1, keepdim=True)
    g_in, g_out = (x * grey).sum(1, keepdim=True), (out * grey).sum(1, keepdim=True)
    assert (g_in - g_out)[unclipped].abs().max() < 1e-5
    mono = images(c=1)
    out, _ = ColorJitter(brightness=0.0, contrast=0.0, saturation=0.9)(mono, labels(), seeded())
    torch.testing.assert_close(out, mono, atol=1e-6, rtol=0)


def coloured(n=512, seed=0) -> torch.Tensor:
    """Images of one random colour each (+ a little noise): a full-rank RGB covariance."""
    gen = torch.Generator().manual_seed(seed)
    colour = torch.rand(n, 3, 1, 1, generator=gen) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    return colour + 0.02 * torch.rand(n, 3, 6, 6, generator=gen)


def test_lighting_fits_the_pixel_colour_covariance():
    x = coloured()
    aug = Lighting(std=0.1).fit(x)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    lam = np.sort(np.linalg.eigvalsh(np.cov(pixels.T, bias=True)))[::-1]
    np.testing.assert_allclose(aug.eigenvalues.numpy(), lam, rtol=1e-4)


def test_lighting_adds_one_offset_per_image_along_the_principal_components():
    x = coloured(2000)
    aug = Lighting(std=0.1).fit(x)
    out, _ = aug(x, torch.zeros(2000, dtype=torch.long), seeded())
    offset = out - x
    # the same colour offset on every pixel of an image
    torch.testing.assert_close(offset, offset[:, :, :1, :1].expand_as(offset), atol=1e-6, rtol=0)
    # offset = P (alpha * lambda), so alpha = (P^T offset) / lambda ~ N(0, 0.1^2)
    alpha = offset[:, :, 0, 0] @ aug.eigenvectors / aug.eigenvalues
    torch.testing.assert_close(alpha.std(0), torch.full((3,), 0.1), atol=0.01, rtol=0)
    torch.testing.assert_close(alpha.mean(0), torch.zeros(3), atol=0.01, rtol=0)


def test_lighting_must_be_fitted_and_checks_channels():
    with pytest.raises(RuntimeError, match="fit"):
        Lighting()(images(), labels(), seeded())
    with pytest.raises(UserError, match="3-channel"):
        Lighting().fit(images())(images(c=1), labels(), seeded())


def test_affine_translation_only_shifts_the_image():
    h = w = 16
    ramp = torch.arange(w, dtype=torch.float32).expand(32, 1, h, w).contiguous()
    out, _ = RandomAffine(rotate=0.0, shear=0.0, translate=0.1)(ramp, labels(32), seeded())
    inner = out[:, 0, 3:-3, 3:-3]  # away from the zero-filled border
    shift = inner - ramp[:, 0, 3:-3, 3:-3]
    torch.testing.assert_close(shift, shift[:, :1, :1].expand_as(shift), atol=1e-4, rtol=0)
    # shifts up to 10% of the side, and really reaching out there (a few of 32 draws near the edge)
    assert 0.075 * w < shift.abs().max() <= 0.1 * w + 1e-4 and len(torch.unique(shift[:, 0, 0])) == 32


def test_affine_rotation_turns_about_the_centre_without_scaling():
    h = w = 33
    yy, xx = torch.meshgrid(torch.arange(h) - 16.0, torch.arange(w) - 16.0, indexing="ij")
    blob = torch.exp(-(xx**2 + yy**2) / 40).expand(8, 1, h, w).contiguous()  # round: rotation-invariant
    out, _ = RandomAffine(rotate=90.0, shear=0.0, translate=0.0)(blob, labels(8), seeded())
    torch.testing.assert_close(out, blob, atol=0.02, rtol=0)
    bar = torch.zeros(32, 1, h, w)
    bar[:, :, 15:18, 4:-4] = 1.0  # a horizontal bar: its rotation shows in its principal axis
    out, _ = RandomAffine(rotate=60.0, shear=0.0, translate=0.0)(bar, labels(32), seeded())
    assert torch.allclose(out[:, 0, 16, 16], torch.ones(32), atol=1e-5)  # the centre stays put
    mass = out[:, 0]
    mu20, mu02, mu11 = (mass * xx**2).sum((1, 2)), (mass * yy**2).sum((1, 2)), (mass * xx * yy).sum((1, 2))
    angle = torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))
    assert angle.abs().max() <= 60.5 and angle.abs().max() > 40 and angle.std() > 20


def test_cutout_zeroes_exactly_a_size_squared_square_when_inside():
    x, size = images(64, h=16, w=16) + 1.0, 5  # strictly positive: zeros come from cutout only
    out, _ = Cutout(size=size)(x, labels(64), seeded())
    inside, clipped = 0, {"top": 0, "bottom": 0, "left": 0, "right": 0}
    for n in range(64):
        zero = out[n] == 0
        assert torch.equal(zero, zero[:1].expand_as(zero))  # all channels together
        rows = zero[0].any(1).nonzero().flatten()
        cols = zero[0].any(0).nonzero().flatten()
        assert len(rows) > 0
        height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert zero[0].sum() == height * width  # a filled rectangle
        assert torch.equal(out[n][~zero], x[n][~zero])  # nothing else touched
        if rows[0] > 0 and cols[0] > 0 and rows[-1] < 15 and cols[-1] < 15:
            assert (height, width) == (size, size)
            inside += 1
        else:
            assert height <= size and width <= size
            clipped["top"] += int(rows[0] == 0 and height < size)
            clipped["bottom"] += int(rows[-1] == 15 and height < size)
            clipped["left"] += int(cols[0] == 0 and width < size)
            clipped["right"] += int(cols[-1] == 15 and width < size)
    # the centre is uniform over the image, so the square is clipped on every side sometimes
    assert inside > 20 and min(clipped.values()) > 1, clipped


def constant_images(n=32, h=10, w=10, seed=0) -> torch.Tensor:
    """Each sample one distinct grey level c_n, so the pixel mix of an output is measurable:
    mean(x'_n) = sum_k (fraction of image k in x'_n) c_k."""
    levels = torch.randperm(n, generator=seeded(seed)).float() / n + 0.01
    return levels.view(n, 1, 1, 1).expand(n, 3, h, w).contiguous(), levels


@pytest.mark.parametrize("name", sorted(MIXING))
@pytest.mark.parametrize("soft_input", [False, True])
def test_mixing_targets_mix_in_the_same_proportion_as_the_pixels(name, soft_input):
    n = 32
    x, levels = constant_images(n)
    y = torch.eye(n) if soft_input else torch.arange(n)  # one class per sample
    aug = (Mixup if name == "mixup" else CutMix)(alpha=0.7)
    if not soft_input:
        aug.num_classes = n
    out, target = aug(x, y, seeded(5))
    assert target.shape == (n, n)
    torch.testing.assert_close(target.sum(1), torch.ones(n))
    torch.testing.assert_close(out.mean((1, 2, 3)), target @ levels, atol=1e-5, rtol=0)
    weight = target.max(1).values
    assert ((weight > 0.01) & (weight < 0.99)).sum() > n // 2  # really mixed, per sample


def test_cutmix_pastes_one_clipped_box_and_weights_by_its_area():
    n, h, w = 64, 10, 10
    x, levels = constant_images(n, h, w)
    out, target = CutMix(alpha=1.0, num_classes=n)(x, torch.arange(n), seeded(1))
    clipped = 0
    for i in range(n):
        pasted = out[i, 0] != levels[i]
        kept = 1 - pasted.float().mean()
        assert target[i, i] == pytest.approx(kept.item(), abs=1e-6) or pasted.sum() == 0
        if pasted.any():
            rows = pasted.any(1).nonzero().flatten()
            cols = pasted.any(0).nonzero().flatten()
            assert pasted.sum() == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)  # one box
            clipped += int(rows[0] == 0 or cols[0] == 0 or rows[-1] == h - 1 or cols[-1] == w - 1)
    assert clipped > 5  # the clipped case is exercised


def test_mixup_works_on_flat_data():
    x = torch.rand(16, 20, generator=seeded())
    out, target = Mixup(num_classes=4)(x, labels(16, 4), seeded())
    assert out.shape == x.shape and target.shape == (16, 4)


def test_mixing_needs_num_classes_for_integer_labels():
    with pytest.raises(ValueError, match="num_classes"):
        Mixup()(images(), labels(), seeded())


@pytest.mark.parametrize("name", [n for n in NAMES if n != "mixup"])
def test_flat_input_is_refused_by_image_augmentations(name):
    flat = torch.rand(8, 20)
    with pytest.raises(UserError, match=rf"augmentation {name} needs images \(N,C,H,W\); data is flat"):
        make(name)(flat, labels(8), seeded())
    with pytest.raises(UserError, match="needs images"):
        build_augment({"names": [name]}, 10, flat)


def test_build_augment_composes_in_order_and_makes_soft_targets_when_mixing():
    assert build_augment({"names": []}, 10) is None
    x, y = images(), labels()
    plain = build_augment({"names": ["flip", "crop"]}, 10, x)
    assert [a.name for a in plain.augmentations] == ["flip", "crop"] and not plain.soft_targets
    out, target = plain(x, y, seeded())
    assert torch.equal(target, y)
    # mixing anywhere in the list: targets are soft from the start, so every op sees (N, C)
    mixing = build_augment({"names": ["mixup", "lighting", "flip"], "mix_alpha": 0.4}, 10, x)
    assert mixing.soft_targets and mixing.augmentations[1].eigenvalues is not None
    out, target = mixing(x, y, seeded())
    assert target.shape == (16, 10) and out.shape == x.shape
    # the pipeline is the composition of its parts, drawing from one generator in order
    gen_a, gen_b = seeded(4), seeded(4)
    expected, expected_y = x, torch.nn.functional.one_hot(y, 10).float()
    for aug in mixing.augmentations:
        expected, expected_y = aug(expected, expected_y, gen_b)
    out, target = mixing(x, y, gen_a)
    assert torch.equal(out, expected) and torch.equal(target, expected_y)


def test_build_augment_needs_x_train_for_lighting():
    with pytest.raises(ValueError, match="x_train"):
        build_augment({"names": ["lighting"]}, 10)


def test_tta_none_and_flip():
    x = images(4)
    (view,) = tta_views(x, "none")
    assert view is x
    views = tta_views(x, "flip")
    assert len(views) == 2 and torch.equal(views[0], x) and torch.equal(views[1], x.flip(-1))


def test_tta_crops_are_ten_fixed_views_centre_corners_and_flips():
    x = images(4, h=16, w=16)
    views = tta_views(x, "crops")
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    assert all(torch.equal(a, b) for a, b in zip(views, tta_views(x, "crops")))  # deterministic
    assert torch.equal(views[0], x)  # the centre crop of the padded image is the image
    for crop, flipped in zip(views[:5], views[5:]):
        assert torch.equal(flipped, crop.flip(-1))
    # the corner crops of the zero-padded image are x shifted by (+-pad, +-pad), pad = H // 8
    assert {shift_of(v, x, 2) for v in views[1:5]} == {(2, 2), (2, -2), (-2, 2), (-2, -2)}
    assert len({tuple(v.flatten().tolist()) for v in views}) == 10
    small = images(2, h=6, w=6)  # 6 // 8 = 0, but pad is at least 1
    assert {shift_of(v, small, 1) for v in tta_views(small, "crops")[1:5]} == {(1, 1), (1, -1), (-1, 1), (-1, -1)}


def shift_of(view: torch.Tensor, x: torch.Tensor, most: int) -> tuple[int, int] | None:
    """(dy, dx) such that view[..., i, j] = x[..., i - dy, j - dx], zero where that is outside."""
    h, w = x.shape[-2:]
    for dy in range(-most, most + 1):
        for dx in range(-most, most + 1):
            padded = torch.nn.functional.pad(x, (most, most, most, most))
            if torch.equal(view, padded[..., most - dy : most - dy + h, most - dx : most - dx + w]):
                return dy, dx
    return None


def test_tta_refuses_flat_data_and_unknown_modes():
    flat = torch.rand(4, 20)
    assert tta_views(flat, "none")[0] is flat
    with pytest.raises(UserError, match="needs images"):
        tta_views(flat, "crops")
    with pytest.raises(UserError, match="unknown test-time augmentation"):
        tta_views(images(2), "mirror")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", NAMES)
def test_runs_on_the_batch_device_with_a_cpu_generator(name):
    x, y = images().cuda(), labels().cuda()
    out, target = make(name, x_train=images(64).cuda())(x, y, seeded())
    assert out.device == x.device and target.device == x.device
    cpu_out, _ = make(name)(x.cpu(), y.cpu(), seeded())
    torch.testing.assert_close(out.cpu(), cpu_out, atol=1e-5, rtol=0)

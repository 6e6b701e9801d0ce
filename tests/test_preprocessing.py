"""Each preprocessor against the lecture's formula, on flat and image data."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from trainlab.errors import UserError
from trainlab.preprocessing import PREPROCESSORS, Preprocessor, build_preprocessor

NAMES = ["none", "mean_image", "channel_mean", "standardize", "pca", "pca_whiten", "zca"]


def correlated(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Data with strongly correlated dimensions, a spread of variances (eigenvalues from 1 down
    to 1e-2 in the std, all far above epsilon), a per-dimension mean and a spatial trend, in float32."""
    gen = torch.Generator().manual_seed(seed)
    d = int(np.prod(shape))
    mixing = torch.randn(d, d, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(mixing)
    scales = torch.logspace(0, -1, d, dtype=torch.float64)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64) * scales @ q.T
    mean = torch.linspace(0.2, 0.8, d, dtype=torch.float64)
    return (0.1 * z + mean).float().view(n, *shape)


def covariance(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(len(x), -1).double()
    flat = flat - flat.mean(0)
    return flat.T @ flat / len(flat)


IMAGE = (3, 4, 4)
FLAT = (20,)


@pytest.fixture(params=[IMAGE, FLAT], ids=["images", "flat"], scope="module")
def data(request):
    # module-scoped to keep the file fast; no test modifies it in place
    return correlated(2000, request.param)


def test_registry_has_every_lecture_technique():
    assert PREPROCESSORS.names() == NAMES


def test_none_is_identity(data):
    pre = build_preprocessor({"name": "none"}, data)
    assert torch.equal(pre(data), data)


def test_mean_image_centres_every_pixel_on_train_and_keeps_train_statistics(data):
    pre = build_preprocessor({"name": "mean_image"}, data)
    out = pre(data)
    assert out.shape == data.shape
    assert out.mean(0).abs().max() < 1e-5
    torch.testing.assert_close(out, data - data.double().mean(0).float(), atol=1e-6, rtol=0)
    # later batches are centred with the training mean, not their own
    assert torch.allclose(pre(data + 0.25).mean(0), torch.full(data.shape[1:], 0.25), atol=1e-5)


def test_channel_mean_centres_each_channel_not_each_pixel():
    x = correlated(2000, IMAGE)
    out = build_preprocessor({"name": "channel_mean"}, x)(x)
    assert out.mean((0, 2, 3)).abs().max() < 1e-5
    # the per-pixel means are not removed (the data has a spatial trend): this is not mean_image
    assert out.mean(0).abs().max() > 0.05
    expected = x - x.double().mean((0, 2, 3), keepdim=True).float()
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_channel_mean_on_flat_data_is_per_feature():
    x = correlated(2000, FLAT)
    out = build_preprocessor({"name": "channel_mean"}, x)(x)
    assert out.mean(0).abs().max() < 1e-5


def test_standardize_gives_zero_mean_unit_std_per_channel():
    x = correlated(2000, IMAGE) * torch.tensor([1.0, 3.0, 0.2]).view(1, 3, 1, 1)
    out = build_preprocessor({"name": "standardize"}, x)(x)
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)


def test_standardize_on_flat_data_is_per_feature_and_constant_features_stay_finite():
    x = correlated(2000, FLAT)
    x[:, 0] = 0.0  # e.g. the always-black corner pixel of the digits
    out = build_preprocessor({"name": "standardize"}, x)(x)
    assert torch.isfinite(out).all()
    assert torch.all(out[:, 0] == 0)
    torch.testing.assert_close(out.mean(0), torch.zeros(20), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1:].std(0, unbiased=False), torch.ones(19), atol=1e-4, rtol=0)


def test_zca_whitens_to_identity_covariance_and_keeps_shape(data):
    pre = build_preprocessor({"name": "zca", "epsilon": 1e-7}, data)
    out = pre(data)
    assert out.shape == data.shape
    assert pre.output_shape(tuple(data.shape[1:])) == tuple(data.shape[1:])
    d = out[0].numel()
    torch.testing.assert_close(covariance(out), torch.eye(d, dtype=torch.float64), atol=2e-3, rtol=0)


def test_zca_matches_the_formula_including_epsilon(data):
    eps = 1e-2  # large enough to matter: wrong use of epsilon changes the output visibly
    out = build_preprocessor({"name": "zca", "epsilon": eps}, data)(data)
    flat = data.reshape(len(data), -1).double().numpy()
    centred = flat - flat.mean(0)
    lam, u = np.linalg.eigh(centred.T @ centred / len(flat))
    expected = centred @ (u @ np.diag(1 / np.sqrt(lam + eps)) @ u.T)
    np.testing.assert_allclose(out.reshape(len(data), -1).numpy(), expected, atol=1e-4)


def test_pca_whiten_gives_identity_covariance_in_k_dims(data):
    pre = build_preprocessor({"name": "pca_whiten", "components": 7, "epsilon": 1e-7}, data)
    out = pre(data)
    assert out.shape == (len(data), 7)
    torch.testing.assert_close(covariance(out), torch.eye(7, dtype=torch.float64), atol=2e-3, rtol=0)


def test_pca_whiten_divides_by_sqrt_eigenvalue_plus_epsilon(data):
    eps = 0.5  # far above every eigenvalue: the whitened variances are lambda / (lambda + eps)
    out = build_preprocessor({"name": "pca_whiten", "components": 3, "epsilon": eps}, data)(data)
    lam = np.sort(np.linalg.eigvalsh(covariance(data).numpy()))[::-1][:3]
    np.testing.assert_allclose(np.diag(covariance(out).numpy()), lam / (lam + eps), rtol=1e-3)


def eigenvalues_descending(x: torch.Tensor) -> np.ndarray:
    return np.sort(np.linalg.eigvalsh(covariance(x).numpy()))[::-1]


def test_pca_with_int_components_keeps_the_top_k_directions(data):
    pre = build_preprocessor({"name": "pca", "components": 5}, data)
    out = pre(data)
    assert out.shape == (len(data), 5)
    assert pre.output_shape(tuple(data.shape[1:])) == (5,)
    assert pre.output_shape(tuple(data.shape)) == (len(data), 5)
    # rotated onto the principal axes: uncorrelated, variances = the top eigenvalues
    cov = covariance(out).numpy()
    np.testing.assert_allclose(np.diag(cov), eigenvalues_descending(data)[:5], rtol=1e-4)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-5


def test_pca_fraction_keeps_that_variance_with_the_fewest_components(data):
    pre = build_preprocessor({"name": "pca", "components": 0.9}, data)
    out = pre(data)
    lam = eigenvalues_descending(data)
    kept = covariance(out).trace().item() / lam.sum()
    k = out.shape[1]
    assert kept >= 0.9
    assert lam[: k - 1].sum() / lam.sum() < 0.9  # one fewer component would not do
    assert 1 < k < len(lam)
    assert pre.kept_variance == pytest.approx(kept, rel=1e-4)


def test_pca_of_images_flattens():
    x = correlated(500, IMAGE)
    assert build_preprocessor({"name": "pca", "components": 4}, x)(x).shape == (500, 4)


def test_pca_rejects_more_components_than_dimensions():
    x = correlated(100, FLAT)
    with pytest.raises(UserError, match="only 20 dimensions"):
        build_preprocessor({"name": "pca", "components": 21}, x)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_into_an_unfitted_module(name, data):
    cfg = {"name": name, "components": 0.95, "epsilon": 1e-3}
    fitted = build_preprocessor(cfg, data)
    fresh = PREPROCESSORS.get(name)({"name": name})  # different cfg: the state alone decides
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.fitted
    batch = data[:64] + 0.01
    assert torch.equal(fresh(batch), fitted(batch))
    assert fresh.output_shape(tuple(data.shape[1:])) == fitted.output_shape(tuple(data.shape[1:]))


def test_preprocessor_inside_a_model_restores_from_the_model_state_dict():
    x = correlated(500, IMAGE)
    model = nn.Sequential(build_preprocessor({"name": "pca_whiten", "components": 6}, x), nn.Linear(6, 2))
    restored = nn.Sequential(PREPROCESSORS.get("pca_whiten")({}), nn.Linear(6, 2))
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored(x[:8]), model(x[:8]))


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_matches_forward(name, data):
    pre = build_preprocessor({"name": name, "components": 3}, data)
    assert pre(data[:5]).shape == pre.output_shape(tuple(data[:5].shape))
    assert pre(data[:5]).shape[1:] == pre.output_shape(tuple(data.shape[1:]))


def test_unfitted_forward_and_wrong_shapes_are_refused():
    with pytest.raises(RuntimeError, match="not fitted"):
        PREPROCESSORS.get("standardize")({})(torch.zeros(2, 3))
    pre = build_preprocessor({"name": "mean_image"}, correlated(50, IMAGE))
    with pytest.raises(UserError, match=r"fitted on samples of shape \(3, 4, 4\)"):
        pre(torch.zeros(2, 1, 4, 4))
    with pytest.raises(UserError, match="images"):
        build_preprocessor({"name": "standardize"}, torch.zeros(10, 4, 4))


def test_statistics_are_float32_buffers_and_fit_returns_self():
    x = correlated(200, IMAGE)
    pre = PREPROCESSORS.get("zca")({})
    assert isinstance(pre, Preprocessor) and pre.fit(x) is pre
    buffers = dict(pre.named_buffers())
    assert set(buffers) == {"input_shape", "mean", "eigenvalues", "matrix"}
    assert all(b.dtype == torch.float32 for n, b in buffers.items() if n != "input_shape")
    assert set(pre.state_dict()) == set(buffers)

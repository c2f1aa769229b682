"""Spatial weights and every SW-CLIP loss against straightforward loop implementations of the
formulas of docs/method.md ("Spatial weights", "SW-CLIP loss"), plus the special cases and
gradient flow."""

import math

import numpy as np
import pytest
import torch

from swclip_core.losses import (
    LossWeights,
    clip_infonce,
    neighbourhood_consistency,
    regional_fairness,
    soft_labels,
    spatial_weights,
    sw_infonce,
    swclip_loss,
)

from .reference import ref_haversine

B = 9


# ---- reference implementations: plain Python loops straight from docs/method.md ----


def ref_weights(lat, lon, scale, cutoff, kernel, street, city, sb, cb):
    n = len(lat)
    w = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            d = ref_haversine(lat[i], lon[i], lat[j], lon[j])
            k = (
                math.exp(-d / scale)
                if kernel == "exponential"
                else math.exp(-(d**2) / (2 * scale**2))
            )
            if cutoff is not None and d > cutoff:
                k = 0.0
            if street is not None and street[i] == street[j] != -1:
                k += sb
            if city is not None and city[i] == city[j] != -1:
                k += cb
            w[i, j] = k
    return w


def ref_log_softmax(row, skip=None):
    """log softmax over the entries of a list, leaving out index ``skip``."""
    idx = [j for j in range(len(row)) if j != skip]
    m = max(row[j] for j in idx)
    lse = m + math.log(sum(math.exp(row[j] - m) for j in idx))
    return {j: row[j] - lse for j in idx}


def ref_soft_ce(logits, w):
    """−1/B Σ_i Σ_j y_ij log softmax_j(logits)_ij with y = rows of w over their sums."""
    n = len(logits)
    total = 0.0
    for i in range(n):
        row_sum = sum(w[i])
        logp = ref_log_softmax(list(logits[i]))
        total -= sum(w[i][j] / row_sum * logp[j] for j in range(n))
    return total / n


def ref_sw_infonce(logits, w):
    return 0.5 * (ref_soft_ce(logits, w) + ref_soft_ce(logits.T, w.T))


def ref_nc(z, w, temperature):
    n = len(z)
    zn = [v / math.sqrt(sum(x * x for x in v)) for v in z]
    losses = []
    for i in range(n):
        w_row = [0.0 if j == i else w[i][j] for j in range(n)]
        total = sum(w_row)
        if total <= 0:
            continue
        s = [float(np.dot(zn[i], zn[j])) / temperature for j in range(n)]
        logp = ref_log_softmax(s, skip=i)
        losses.append(-sum(w_row[j] / total * logp[j] for j in range(n) if j != i))
    return sum(losses) / len(losses) if losses else 0.0


def ref_fairness(logits, region):
    n = len(logits)
    p = []
    for i in range(n):
        row = logits[i]
        p.append(math.exp(row[i]) / sum(math.exp(x) for x in row))
    groups = {}
    for i in range(n):
        if region[i] != -1:
            groups.setdefault(int(region[i]), []).append(p[i])
    if len(groups) < 2:
        return 0.0
    means = [sum(v) / len(v) for v in groups.values()]
    mu = sum(means) / len(means)
    return sum((m - mu) ** 2 for m in means) / len(means)


# ---- fixtures ----


@pytest.fixture
def batch():
    rng = np.random.default_rng(42)
    # A town-sized cluster plus two far-away points, so the kernel has both near and far pairs.
    lat = np.r_[54.09 + rng.normal(0, 0.003, B - 2), 51.5, -33.9]
    lon = np.r_[-4.63 + rng.normal(0, 0.005, B - 2), -0.12, 151.2]
    street = np.array([0, 0, 1, 1, -1, -1, 2, 3, 3])
    city = np.array([5, 5, 5, 5, 5, -1, -1, 7, 8])
    region = np.array([0, 0, 1, 1, 1, -1, 2, 2, -1])
    img = rng.normal(size=(B, 6))
    txt = rng.normal(size=(B, 6))
    logits = (
        10.0
        * (img / np.linalg.norm(img, axis=1, keepdims=True))
        @ (txt / np.linalg.norm(txt, axis=1, keepdims=True)).T
    )
    return {
        "lat": lat,
        "lon": lon,
        "street": street,
        "city": city,
        "region": region,
        "img": img,
        "txt": txt,
        "logits": logits,
    }


def t(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


# ---- spatial weights and soft labels ----


@pytest.mark.parametrize("kernel", ["exponential", "gaussian"])
@pytest.mark.parametrize("cutoff", [None, 800.0])
@pytest.mark.parametrize("bonuses", [(0.0, 0.0), (0.3, 0.1)])
def test_spatial_weights_match_reference(batch, kernel, cutoff, bonuses):
    sb, cb = bonuses
    got = spatial_weights(
        t(batch["lat"]),
        t(batch["lon"]),
        scale_m=250.0,
        cutoff_m=cutoff,
        kernel=kernel,
        street=torch.tensor(batch["street"]),
        city=torch.tensor(batch["city"]),
        street_bonus=sb,
        city_bonus=cb,
    )
    ref = ref_weights(
        batch["lat"], batch["lon"], 250.0, cutoff, kernel, batch["street"], batch["city"], sb, cb
    )
    assert got.shape == (B, B) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-12)
    assert torch.all(got >= 0) and torch.equal(got, got.T)


def test_spatial_weights_cutoff_none_equals_inf_and_dtype_follows_lat(batch):
    a = spatial_weights(t(batch["lat"]), t(batch["lon"]), scale_m=100.0, cutoff_m=None)
    b = spatial_weights(t(batch["lat"]), t(batch["lon"]), scale_m=100.0, cutoff_m=math.inf)
    assert torch.equal(a, b)
    f32 = spatial_weights(
        torch.tensor(batch["lat"], dtype=torch.float32),
        torch.tensor(batch["lon"], dtype=torch.float32),
        scale_m=100.0,
        cutoff_m=None,
    )
    assert f32.dtype == torch.float32
    # float32 degrees are rounded to ~0.4 m; from those inputs the distances are float64-exact.
    lat32, lon32 = (batch[k].astype(np.float32).astype(np.float64) for k in ("lat", "lon"))
    ref = ref_weights(lat32, lon32, 100.0, None, "exponential", None, None, 0, 0)
    np.testing.assert_allclose(f32.numpy(), ref, rtol=1e-6, atol=1e-12)


def test_unknown_codes_never_match():
    lat = torch.zeros(3, dtype=torch.float64)
    w = spatial_weights(
        lat,
        torch.tensor([0.0, 90.0, 180.0], dtype=torch.float64),  # far apart: kernel ~ 0
        scale_m=1.0,
        cutoff_m=10.0,
        street=torch.tensor([-1, -1, 4]),
        street_bonus=1.0,
    )
    np.testing.assert_array_equal(w.numpy(), [[1, 0, 0], [0, 1, 0], [0, 0, 2]])


def test_spatial_weights_rejects_bad_arguments(batch):
    lat, lon = t(batch["lat"]), t(batch["lon"])
    with pytest.raises(ValueError, match="kernel"):
        spatial_weights(lat, lon, scale_m=1.0, cutoff_m=None, kernel="triangle")
    with pytest.raises(ValueError, match="scale_m"):
        spatial_weights(lat, lon, scale_m=0.0, cutoff_m=None)


def test_soft_labels_rows_are_distributions(batch):
    w = spatial_weights(t(batch["lat"]), t(batch["lon"]), scale_m=300.0, cutoff_m=None)
    y = soft_labels(w)
    for i in range(B):
        for j in range(B):
            assert y[i, j].item() == pytest.approx(w[i, j].item() / w[i].sum().item(), rel=1e-12)
    with pytest.raises(ValueError, match="sums to 0"):
        soft_labels(torch.zeros(2, 2))


# ---- losses against the references ----


def test_clip_infonce_matches_reference(batch):
    got = clip_infonce(t(batch["logits"]))
    assert got.item() == pytest.approx(ref_sw_infonce(batch["logits"], np.eye(B)), rel=1e-10)


def test_sw_infonce_with_identity_equals_clip(batch):
    logits32 = torch.tensor(batch["logits"], dtype=torch.float32)
    diff = sw_infonce(logits32, torch.eye(B)) - clip_infonce(logits32)
    assert abs(diff.item()) < 1e-6


@pytest.mark.parametrize("asymmetric", [False, True])
def test_sw_infonce_matches_reference(batch, asymmetric):
    w = ref_weights(batch["lat"], batch["lon"], 400.0, None, "exponential", None, None, 0, 0)
    if asymmetric:  # the text→image direction must use wᵀ
        w = w + np.triu(np.random.default_rng(3).uniform(0, 0.5, (B, B)), 1)
    got = sw_infonce(t(batch["logits"]), t(w))
    assert got.item() == pytest.approx(ref_sw_infonce(batch["logits"], w), rel=1e-10)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_neighbourhood_consistency_matches_reference(batch, temperature):
    w = ref_weights(batch["lat"], batch["lon"], 300.0, 800.0, "exponential", None, None, 0, 0)
    assert (w - np.diag(np.diag(w))).sum(axis=1).min() == 0  # some rows are skipped
    got = neighbourhood_consistency(t(batch["img"]), t(w), temperature)
    assert got.item() == pytest.approx(ref_nc(batch["img"], w, temperature), rel=1e-9)


def test_neighbourhood_consistency_no_row_kept_is_zero_and_differentiable(batch):
    z = t(batch["img"], grad=True)
    loss = neighbourhood_consistency(z, torch.eye(B, dtype=torch.float64), 0.1)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert z.grad is not None and torch.all(z.grad == 0)


def test_regional_fairness_matches_reference(batch):
    got = regional_fairness(t(batch["logits"]), torch.tensor(batch["region"]))
    ref = ref_fairness(batch["logits"], batch["region"])
    assert ref > 0
    assert got.item() == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("region", [[-1] * B, [3] * B, [3] * (B - 1) + [-1]])
def test_regional_fairness_zero_with_fewer_than_two_regions(batch, region):
    logits = t(batch["logits"], grad=True)
    loss = regional_fairness(logits, torch.tensor(region))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_swclip_loss_is_the_spec_combination(batch):
    w = ref_weights(
        batch["lat"], batch["lon"], 300.0, None, "gaussian", None, batch["city"], 0, 0.2
    )
    weights = LossWeights(lambda_nc=0.7, lambda_fair=2.0, nc_temperature=0.2)
    total, parts = swclip_loss(
        t(batch["logits"]),
        t(batch["img"]),
        t(batch["txt"]),
        t(w),
        torch.tensor(batch["region"]),
        weights,
    )
    sw = ref_sw_infonce(batch["logits"], w)
    nc = 0.5 * (ref_nc(batch["img"], w, 0.2) + ref_nc(batch["txt"], w, 0.2))
    fair = ref_fairness(batch["logits"], batch["region"])
    assert parts["sw_infonce"] == pytest.approx(sw, rel=1e-9)
    assert parts["nc"] == pytest.approx(nc, rel=1e-9)
    assert parts["fairness"] == pytest.approx(fair, rel=1e-9)
    assert total.item() == pytest.approx(sw + 0.7 * nc + 2.0 * fair, rel=1e-9)
    assert parts["total"] == pytest.approx(total.item())


def test_swclip_loss_without_regions(batch):
    total, parts = swclip_loss(
        t(batch["logits"]), t(batch["img"]), t(batch["txt"]), torch.eye(B), None, LossWeights()
    )
    assert parts["fairness"] == 0.0
    assert total.item() == pytest.approx(parts["sw_infonce"] + 0.5 * parts["nc"])


def test_loss_weight_defaults_are_documented_as_provisional():
    defaults = LossWeights()
    assert (defaults.lambda_nc, defaults.lambda_fair, defaults.nc_temperature) == (0.5, 0.1, 0.1)
    assert "provisional" in LossWeights.__doc__


# ---- gradients ----


def _model_outputs(batch, dtype):
    img = torch.tensor(batch["img"], dtype=dtype, requires_grad=True)
    txt = torch.tensor(batch["txt"], dtype=dtype, requires_grad=True)
    img_n = torch.nn.functional.normalize(img, dim=1)
    txt_n = torch.nn.functional.normalize(txt, dim=1)
    return img, txt, 10.0 * img_n @ txt_n.T


LOSSES = {
    "clip": lambda logits, img, txt, w, region: clip_infonce(logits),
    "sw": lambda logits, img, txt, w, region: sw_infonce(logits, w),
    "nc": lambda logits, img, txt, w, region: neighbourhood_consistency(img, w, 0.1),
    "fairness": lambda logits, img, txt, w, region: regional_fairness(logits, region),
    "total": lambda logits, img, txt, w, region: swclip_loss(
        logits, img, txt, w, region, LossWeights()
    )[0],
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradients_flow_and_are_finite(batch, name):
    img, txt, logits = _model_outputs(batch, torch.float32)
    w = spatial_weights(
        torch.tensor(batch["lat"], dtype=torch.float32),
        torch.tensor(batch["lon"], dtype=torch.float32),
        scale_m=300.0,
        cutoff_m=1_000.0,
        street=torch.tensor(batch["street"]),
        street_bonus=0.5,
    )
    loss = LOSSES[name](logits, img, txt, w, torch.tensor(batch["region"]))
    assert torch.isfinite(loss)
    loss.backward()
    leaves = (img,) if name == "nc" else (img, txt)  # nc here sees the image branch only
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        assert leaf.grad.abs().sum() > 0


def test_extreme_logit_scale_stays_finite(batch):
    # A CLIP logit scale at its clamp (100) and a tiny nc temperature must not overflow.
    img, txt, _ = _model_outputs(batch, torch.float32)
    logits = (
        100.0
        * torch.nn.functional.normalize(img, dim=1)
        @ torch.nn.functional.normalize(txt, dim=1).T
    )
    w = torch.eye(B) + 0.5
    weights = LossWeights(nc_temperature=1e-3)
    total, _ = swclip_loss(logits, img, txt, w, torch.tensor(batch["region"]), weights)
    total.backward()
    assert (
        torch.isfinite(total) and torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()
    )


def test_half_precision_logits_are_computed_in_float32(batch):
    logits = torch.tensor(batch["logits"], dtype=torch.bfloat16)
    got = sw_infonce(logits, torch.eye(B))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_sw_infonce(logits.double().numpy(), np.eye(B)), rel=1e-5)

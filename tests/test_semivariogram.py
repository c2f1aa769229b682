"""The semivariogram peer: fitting, the re-weighted InfoNCE, and `swclip train --objective
semivariogram` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from swclip_core.cli import main
from swclip_core.losses import clip_infonce
from swclip_core.semivariogram import (
    Semivariogram,
    empirical_semivariogram,
    fit_semivariogram,
    plot_semivariogram,
    semivariogram_infonce,
)

from .conftest import PHOTOS


def spherical(h, nugget, sill, a):
    """Written out independently of the module: the textbook spherical model."""
    return np.array(
        [
            nugget + (sill - nugget) * (1.5 * x / a - 0.5 * (x / a) ** 3) if x < a else sill
            for x in h
        ]
    )


def exponential(h, nugget, sill, a):
    return np.array([nugget + (sill - nugget) * (1 - math.exp(-3 * x / a)) for x in h])


@pytest.mark.parametrize(
    ("model", "truth"), [("spherical", spherical), ("exponential", exponential)]
)
def test_fit_recovers_nugget_sill_and_range(model, truth):
    rng = np.random.default_rng(1)
    d = rng.uniform(0, 20_000, 30_000)
    g = truth(d, 0.2, 0.9, 5_000.0) + rng.normal(0, 0.05, d.size)
    vg = fit_semivariogram(d, g, model=model, n_bins=25)
    assert vg.fit == "curve_fit" and vg.model == model
    assert vg.nugget == pytest.approx(0.2, abs=0.03)
    assert vg.sill == pytest.approx(0.9, abs=0.02)
    assert vg.range_m == pytest.approx(5_000.0, rel=0.1)
    # gamma() is the fitted model, for numpy and torch alike
    h = np.array([0.0, 1_000.0, 4_999.0, 8_000.0])
    expected = truth(h, vg.nugget, vg.sill, vg.range_m)
    assert np.allclose(vg.gamma(h), expected, atol=1e-9)
    assert torch.allclose(vg.gamma(torch.as_tensor(h)), torch.as_tensor(expected), atol=1e-9)


def test_quantile_bins_hold_equal_counts_and_their_means():
    rng = np.random.default_rng(2)
    d = rng.permutation(np.arange(1000.0))
    g = rng.uniform(size=1000)
    mean_d, mean_g, count = empirical_semivariogram(d, g, n_bins=10)
    assert count.tolist() == [100] * 10
    order = np.argsort(d)
    assert np.allclose(mean_d, d[order].reshape(10, 100).mean(axis=1))
    assert np.allclose(mean_g, g[order].reshape(10, 100).mean(axis=1))
    _, _, log_count = empirical_semivariogram(d, g, n_bins=10, binning="log")
    assert log_count.sum() == 1000


def test_fallbacks_when_a_curve_cannot_be_fitted():
    flat = fit_semivariogram(np.full(50, 300.0), np.linspace(0, 1, 50))
    assert flat.fit.startswith("flat") and flat.nugget == flat.sill == pytest.approx(0.5)
    assert np.allclose(flat.gamma(np.array([0.0, 10.0, 1e6])), 0.5)
    two = fit_semivariogram(
        np.r_[np.full(20, 10.0), np.full(20, 900.0)], np.r_[[0.2] * 20, [0.8] * 20]
    )
    assert two.fit.startswith("moments") and two.nugget == pytest.approx(0.2)
    assert two.sill == pytest.approx(0.8)


def reference_loss(logits, dist, cosine, vg, hard_weight, false_neg_weight, margin):
    """The docstring's formula, one pair at a time."""
    s = logits.detach().double().numpy()
    d, c = dist.numpy(), cosine.numpy()
    b = s.shape[0]

    def rho(x):
        return (vg.gamma(np.array([x]))[0] - vg.nugget) / (vg.sill - vg.nugget)

    def weight(i, j):
        if i == j:
            return 1.0
        if d[i, j] >= vg.range_m and 1 - c[i, j] < vg.gamma(np.array([d[i, j]]))[0] - margin:
            return hard_weight
        return false_neg_weight + (1 - false_neg_weight) * rho(d[i, j])

    def direction(s, weight):
        total = 0.0
        for i in range(b):
            denominator = sum(weight(i, j) * math.exp(s[i, j]) for j in range(b))
            total += -math.log(math.exp(s[i, i]) / denominator)
        return total / b

    return 0.5 * (direction(s, weight) + direction(s.T, lambda i, j: weight(j, i)))


def batch(seed=3, b=7):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, b, generator=gen) * 3).requires_grad_(True)
    xy = torch.rand(b, 2, generator=gen) * 8_000
    dist = torch.cdist(xy, xy).double()
    cosine = torch.rand(b, b, generator=gen).double() * 2 - 1
    vg = Semivariogram(nugget=0.3, sill=1.0, range_m=3_000.0, model="spherical")
    return logits, dist, cosine, vg


def test_loss_matches_an_explicit_loop():
    logits, dist, cosine, vg = batch()
    loss = semivariogram_infonce(
        logits, dist, vg, cosine=cosine, hard_weight=3.0, false_neg_weight=0.2, margin=0.1
    )
    expected = reference_loss(logits, dist, cosine, vg, 3.0, 0.2, 0.1)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    # the batch exercises all three cases: near pairs, hard far pairs, ordinary far pairs
    far = dist >= vg.range_m
    hard = far & (1 - cosine < torch.as_tensor(vg.gamma(dist.numpy())) - 0.1)
    assert hard.any() and (far & ~hard).any() and (~far).sum() > 7


def test_unit_weights_give_clip_infonce_and_gradients_flow():
    logits, dist, cosine, vg = batch(seed=4)
    plain = semivariogram_infonce(
        logits, dist, vg, cosine=cosine, hard_weight=1.0, false_neg_weight=1.0
    )
    assert float(plain.detach()) == pytest.approx(float(clip_infonce(logits).detach()), rel=1e-6)
    loss = semivariogram_infonce(logits, dist, vg, cosine=cosine)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_a_zero_weight_removes_a_colocated_negative():
    logits = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    dist = torch.full((4, 4), 50_000.0, dtype=torch.float64)
    dist.fill_diagonal_(0.0)
    dist[0, 1] = dist[1, 0] = 0.0  # two photos of the same place
    cosine = torch.full((4, 4), -1.0, dtype=torch.float64)  # nothing looks alike: no hard negative
    vg = Semivariogram(nugget=0.2, sill=0.9, range_m=1_000.0)
    loss = semivariogram_infonce(logits, dist, vg, cosine=cosine, false_neg_weight=0.0)
    s = logits.detach()
    keep = ~torch.eye(4, dtype=torch.bool)
    keep[0, 1] = keep[1, 0] = False
    keep |= torch.eye(4, dtype=torch.bool)
    masked = s.masked_fill(~keep, -math.inf)
    expected = 0.5 * (
        torch.nn.functional.cross_entropy(masked, torch.arange(4))
        + torch.nn.functional.cross_entropy(masked.T, torch.arange(4))
    )
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0


def test_json_round_trip_and_png(tmp_path):
    rng = np.random.default_rng(5)
    d = rng.uniform(0, 5_000, 2_000)
    vg = fit_semivariogram(d, spherical(d, 0.1, 0.6, 2_000.0) + rng.normal(0, 0.02, d.size))
    vg.save(tmp_path / "vg.json")
    assert Semivariogram.load(tmp_path / "vg.json") == vg
    path = plot_semivariogram(vg, tmp_path / "vg.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_trains_the_semivariogram_objective(tmp_path, feature_cache):
    run = tmp_path / "vg-run"
    code = main(
        [
            "train",
            str(PHOTOS),
            "--objective",
            "semivariogram",
            "--out",
            str(run),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(np.isfinite(e["semivariogram_infonce"]) for e in epochs)
    fitted = json.loads((run / "semivariogram.json").read_text())
    assert fitted["dissimilarity"] == "1 - cos"
    assert fitted["n_pairs"] == 41 * 40  # every image against every other caption
    assert 0 <= fitted["nugget"] <= fitted["sill"] <= 2
    assert (run / "semivariogram.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "config.json").read_text())["objective"] == "semivariogram"

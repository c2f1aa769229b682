"""Retrieval and predictions (docs/method.md, "Predictions") against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swclip_core import retrieval
from swclip_core.errors import InputError
from swclip_core.geo import haversine_m
from swclip_core.retrieval import predict_locations, top_k


@pytest.mark.parametrize("rows", [5, 1, 37, None])
def test_top_k_matches_full_sort_in_blocks(rows):
    gen = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(37, 16, generator=gen), dim=1)
    gallery = F.normalize(torch.randn(101, 16, generator=gen), dim=1)
    scores, index = top_k(queries, gallery, 7, rows=rows)
    full = queries @ gallery.T
    expected = torch.argsort(full, dim=1, descending=True)[:, :7]
    assert torch.equal(index, expected)
    assert torch.allclose(scores, torch.gather(full, 1, expected))


def test_top_k_blocks_fit_the_memory_budget(monkeypatch):
    block_shapes = []
    topk = torch.Tensor.topk

    def recording_topk(scores, *args, **kwargs):
        block_shapes.append(tuple(scores.shape))
        return topk(scores, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", recording_topk)
    monkeypatch.setattr(retrieval, "MAX_BLOCK_BYTES", 10 * 101 * 4)  # 10 rows of 101 float32
    gen = torch.Generator().manual_seed(1)
    queries, gallery = torch.randn(37, 8, generator=gen), torch.randn(101, 8, generator=gen)
    _, index = top_k(queries, gallery, 3)
    # the 37 queries read the gallery once, 27 entries at a time (37 x 27 scores fit, 37 x 28 not)
    blocks = [shape for shape in block_shapes if shape[1] > 2 * 3]
    assert blocks == [(37, 27)] * 3 + [(37, 20)]
    assert all(rows * columns * 4 <= retrieval.MAX_BLOCK_BYTES for rows, columns in block_shapes)
    full = queries @ gallery.T
    assert torch.equal(index, torch.argsort(full, dim=1, descending=True)[:, :3])


def test_many_queries_read_the_gallery_once_per_group(monkeypatch):
    """A layer of photos larger than QUERY_GROUP: groups of queries, each streaming the gallery
    (given as a memory-mapped array, as a cached gallery is)."""
    monkeypatch.setattr(retrieval, "QUERY_GROUP", 16)
    monkeypatch.setattr(retrieval, "MAX_BLOCK_BYTES", 16 * 30 * 4)
    gen = torch.Generator().manual_seed(2)
    queries, gallery = torch.randn(40, 8, generator=gen), torch.randn(101, 8, generator=gen)
    scores, index = top_k(queries, gallery.numpy(), 4)
    full = queries @ gallery.T
    assert torch.equal(index, torch.argsort(full, dim=1, descending=True)[:, :4])
    assert torch.allclose(scores, torch.gather(full, 1, index))


def test_top_k_never_asks_for_more_than_the_gallery():
    _, index = top_k(torch.eye(3), torch.eye(3)[:2], 5)
    assert index.shape == (3, 2)


def test_top1_takes_the_best_entry_and_reports_spread():
    lat, lon = np.array([10.0, 10.0, 50.0]), np.array([20.0, 20.1, 0.0])
    pred = predict_locations(
        np.array([[0.9, 0.8]]), np.array([[1, 0]]), lat, lon, method="top1", temperature=0.1
    )
    assert (pred.lat[0], pred.lon[0]) == (10.0, 20.1)
    w = np.exp(np.array([0.9, 0.8]) / 0.1)
    w /= w.sum()
    expected_radius = w[1] * haversine_m(10.0, 20.0, 10.0, 20.1)
    assert pred.uncertainty_m[0] == pytest.approx(expected_radius, rel=1e-9)
    assert pred.confidence[0] == pytest.approx(w[0])


def test_weighted_prediction_is_the_normalised_mean_unit_vector():
    lat = np.array([0.0, 0.0, 45.0])
    lon = np.array([0.0, 90.0, 45.0])
    scores = np.array([[0.5, 0.5, 0.1]])
    index = np.array([[0, 1, 2]])
    pred = predict_locations(scores, index, lat, lon, method="weighted", temperature=0.2)
    w = np.exp(scores[0] / 0.2)
    w /= w.sum()
    vec = np.zeros(3)
    for weight, la, lo in zip(w, lat, lon, strict=True):
        phi, lam = math.radians(la), math.radians(lo)
        vec += weight * np.array(
            [math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)]
        )
    vec /= np.linalg.norm(vec)
    assert pred.lat[0] == pytest.approx(math.degrees(math.asin(vec[2])), abs=1e-9)
    assert pred.lon[0] == pytest.approx(math.degrees(math.atan2(vec[1], vec[0])), abs=1e-9)
    radius = sum(
        wi * haversine_m(la, lo, pred.lat[0], pred.lon[0])
        for wi, la, lo in zip(w, lat, lon, strict=True)
    )
    assert pred.uncertainty_m[0] == pytest.approx(radius, rel=1e-9)


def test_weighted_prediction_crosses_the_antimeridian_correctly():
    lat, lon = np.array([0.0, 0.0]), np.array([179.9, -179.9])
    for method, radius in (("weighted", 0.0), ("mode", 50_000.0)):  # the two are 22 km apart
        pred = predict_locations(
            np.array([[0.5, 0.5]]), np.array([[0, 1]]), lat, lon, method=method,
            mode_radius_m=radius,
        )  # fmt: skip
        assert abs(abs(pred.lon[0]) - 180.0) < 1e-6  # not 0°, which a naive mean of degrees gives


def test_mode_prediction_averages_the_heaviest_group_not_the_best_entry():
    # Top-K: one strong candidate in Lerwick (Shetland), three weaker ones in Stirling, 400 km
    # away. The weighted mean lands in between (in the North Sea); mode stays in Stirling.
    lat = np.array([60.155, 56.117, 56.120, 56.115])
    lon = np.array([-1.145, -3.936, -3.940, -3.930])
    scores = np.array([[0.40, 0.37, 0.36, 0.35]])
    index = np.array([[0, 1, 2, 3]])
    pred = predict_locations(scores, index, lat, lon, method="mode", temperature=0.05)
    w = np.exp(scores[0] / 0.05)
    w /= w.sum()
    assert w[0] > w[1]  # the best single entry is Lerwick...
    assert w[1:].sum() > w[0]  # ...but Stirling holds more of the mass
    stirling = predict_locations(
        scores[:, 1:], index[:, 1:], lat, lon, method="weighted", temperature=0.05
    )
    assert haversine_m(pred.lat[0], pred.lon[0], stirling.lat[0], stirling.lon[0]) < 1e-3
    assert pred.confidence[0] == pytest.approx(w[1:].sum())
    weighted = predict_locations(scores, index, lat, lon, method="weighted", temperature=0.05)
    assert haversine_m(weighted.lat[0], weighted.lon[0], 56.117, -3.936) > 100_000


def test_mode_radius_must_be_positive():
    lat, lon = np.array([54.0, 55.0]), np.array([-4.0, -4.0])
    with pytest.raises(InputError, match="mode radius must be positive"):
        predict_locations(
            np.array([[0.5, 0.4]]), np.array([[0, 1]]), lat, lon, method="mode", mode_radius_m=0
        )


def test_mode_equals_weighted_when_every_candidate_is_within_the_radius():
    gen = np.random.default_rng(0)
    lat, lon = 54.15 + gen.uniform(0, 0.02, 8), -4.48 + gen.uniform(0, 0.02, 8)
    scores = np.sort(gen.uniform(0.2, 0.4, (3, 5)), axis=1)[:, ::-1]
    index = np.stack([gen.permutation(8)[:5] for _ in range(3)])
    mode = predict_locations(scores, index, lat, lon, method="mode", mode_radius_m=5_000.0)
    weighted = predict_locations(scores, index, lat, lon, method="weighted")
    np.testing.assert_allclose(mode.lat, weighted.lat, atol=1e-9)
    np.testing.assert_allclose(mode.lon, weighted.lon, atol=1e-9)
    np.testing.assert_allclose(mode.confidence, 1.0)


def test_unknown_method_is_refused():
    with pytest.raises(InputError, match="weighted"):
        predict_locations(
            np.ones((1, 1)), np.zeros((1, 1), int), np.zeros(1), np.zeros(1), method="median"
        )

"""Retrieval and predictions (SPEC section 6) against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swclip_core.errors import InputError
from swclip_core.geo import haversine_m
from swclip_core.retrieval import predict_locations, top_k


def test_top_k_matches_full_sort_in_chunks():
    gen = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(37, 16, generator=gen), dim=1)
    gallery = F.normalize(torch.randn(101, 16, generator=gen), dim=1)
    scores, index = top_k(queries, gallery, 7, chunk=5)
    full = queries @ gallery.T
    expected = torch.argsort(full, dim=1, descending=True)[:, :7]
    assert torch.equal(index, expected)
    assert torch.allclose(scores, torch.gather(full, 1, expected))


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
    pred = predict_locations(np.array([[0.5, 0.5]]), np.array([[0, 1]]), lat, lon)
    assert abs(abs(pred.lon[0]) - 180.0) < 1e-6  # not 0°, which a naive mean of degrees gives


def test_unknown_method_is_refused():
    with pytest.raises(InputError, match="weighted"):
        predict_locations(
            np.ones((1, 1)), np.zeros((1, 1), int), np.zeros(1), np.zeros(1), method="median"
        )

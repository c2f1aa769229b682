"""Neighbourhood batches: every sample once per epoch, neighbours kept together."""

from __future__ import annotations

import numpy as np
import pytest

from swclip_core.batches import (
    nearest_neighbours,
    neighbour_spacing_m,
    neighbourhood_batches,
    random_batches,
)
from swclip_core.geo import pairwise_haversine_m


def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(1)
    lat, lon = 54 + rng.random(60) * 0.2, -4.6 + rng.random(60) * 0.3
    found = nearest_neighbours(lat, lon, 4)
    dist = pairwise_haversine_m(lat, lon)
    np.fill_diagonal(dist, np.inf)
    expected = np.argsort(dist, axis=1, kind="stable")[:, :4]
    assert np.array_equal(np.sort(found, axis=1), np.sort(expected, axis=1))


def test_every_sample_once_per_epoch_and_neighbours_share_batches():
    rng = np.random.default_rng(2)
    lat, lon = 54 + rng.random(200) * 0.3, -4.6 + rng.random(200) * 0.4
    neighbours = nearest_neighbours(lat, lon, 3)
    batches = neighbourhood_batches(neighbours, 32, np.random.default_rng(0))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(200))
    batch_of = np.empty(200, int)
    for b, idx in enumerate(batches):
        batch_of[idx] = b
    together = np.mean([batch_of[i] == batch_of[neighbours[i, 0]] for i in range(200)])
    plain = random_batches(200, 32, np.random.default_rng(0))
    for b, idx in enumerate(plain):
        batch_of[idx] = b
    together_random = np.mean([batch_of[i] == batch_of[neighbours[i, 0]] for i in range(200)])
    assert together > 0.6 > together_random


def test_neighbour_spacing_is_the_median_distance_to_the_kth_distinct_neighbour():
    rng = np.random.default_rng(3)
    lat, lon = 54 + rng.random(80) * 0.05, -4.5 + rng.random(80) * 0.08
    dist = pairwise_haversine_m(lat, lon)
    np.fill_diagonal(dist, np.inf)
    expected = np.median(np.sort(dist, axis=1)[:, 2])
    assert neighbour_spacing_m(lat, lon, k=3) == pytest.approx(expected, abs=0.5)  # 1e-6° rounding
    # Repeated photos of one place do not count as neighbours at 0 m.
    twice = neighbour_spacing_m(np.repeat(lat, 2), np.repeat(lon, 2), k=3)
    assert twice == pytest.approx(expected, abs=0.5)  # 1e-6° rounding
    assert neighbour_spacing_m(np.full(5, 54.0), np.full(5, -4.5)) is None

"""Neighbourhood batches: every sample once per epoch, neighbours kept together."""

from __future__ import annotations

import numpy as np

from swclip_core.batches import nearest_neighbours, neighbourhood_batches, random_batches
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

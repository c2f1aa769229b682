"""Batches in which near places meet.

With uniformly random batches over a region, two samples within the kernel's range rarely share a
batch, so the spatial soft labels collapse to the identity and SW-CLIP degenerates to CLIP.
Each batch here is grown from random anchors plus their nearest unused neighbours; every sample
still appears exactly once per epoch.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import BallTree

from .geo import EARTH_RADIUS_M


def nearest_neighbours(lat: np.ndarray, lon: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(N, k)`` of each sample's k nearest other samples by great-circle distance."""
    n = len(lat)
    k = min(k, n - 1)
    if k <= 0:
        return np.empty((n, 0), dtype=np.int64)
    points = np.radians(np.column_stack([lat, lon]))
    _, index = BallTree(points, metric="haversine").query(points, k=k + 1)
    # Each point finds itself first (distance 0), unless exact duplicates tie with it: drop self.
    out = np.empty((n, k), dtype=np.int64)
    for i, row in enumerate(index):
        out[i] = [j for j in row if j != i][:k]
    return out


def neighbour_spacing_m(lat: np.ndarray, lon: np.ndarray, k: int = 3) -> float | None:
    """The typical spacing of a set of places: the median great-circle distance (metres) from each
    distinct location to its k-th nearest other distinct location. Repeated photos of one place
    count once, so they do not pull the spacing to zero. None with fewer than two locations."""
    points = np.unique(np.round(np.column_stack([lat, lon]), 6), axis=0)
    if len(points) < 2:
        return None
    k = min(k, len(points) - 1)
    radians = np.radians(points)
    distance, _ = BallTree(radians, metric="haversine").query(radians, k=k + 1)
    return float(np.median(distance[:, k]) * EARTH_RADIUS_M)  # column 0 is the point itself


def neighbourhood_batches(
    neighbours: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of batches: random anchors, each followed by its not yet used neighbours."""
    n = len(neighbours)
    used = np.zeros(n, dtype=bool)
    order: list[int] = []
    for anchor in rng.permutation(n):
        if used[anchor]:
            continue
        group = [anchor, *(j for j in neighbours[anchor] if not used[j])]
        used[group] = True
        order.extend(group)
    order_arr = np.asarray(order, dtype=np.int64)
    return [order_arr[i : i + batch_size] for i in range(0, n, batch_size)]


def random_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of uniformly random batches."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]

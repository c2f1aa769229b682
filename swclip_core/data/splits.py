"""Train/test splits: random, and spatial blocks that keep test neighbours out of training.

A random split lets a test image's near neighbours (same street, same corner) sit in the training
set, which flatters any method that memorises places. The spatial block split holds out whole grid
cells instead, so every training sample is at least in another cell than every test sample
(docs/method.md, "Protocols"). Both return sorted ``int64`` index arrays that are disjoint and
together cover all samples.
"""

from __future__ import annotations

import numpy as np

from swclip_core.errors import InputError
from swclip_core.geo import EARTH_RADIUS_M


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < float(test_fraction) < 1.0:
        raise InputError(
            f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}; "
            "use e.g. 0.2 to hold out a fifth of the samples."
        )


def random_split(
    n: int, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` samples at random into train and test indices.

    The test set has ``round(n * test_fraction)`` samples, kept between 1 and ``n - 1`` so neither
    side is empty. The same ``seed`` always gives the same split.

    Returns ``(train_idx, test_idx)``: sorted, disjoint ``int64`` arrays covering ``0 .. n-1``.
    """
    _check_fraction(test_fraction)
    n = int(n)
    if n < 2:
        raise InputError(f"A train/test split needs at least 2 samples, got {n}.")
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]).astype(np.int64), np.sort(order[:n_test]).astype(np.int64)


def _local_metres(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular east/north metres around the data's centroid.

    Distances are true along the central parallel and within ~0.5 % over a few tens of kilometres,
    which is all a block grid needs. Longitudes are unwrapped around their circular mean so data
    across the antimeridian stays contiguous.
    """
    lat_r = np.radians(lat)
    lon_r = np.radians(lon)
    lat0 = float(np.mean(lat_r))
    lon0 = float(np.arctan2(np.mean(np.sin(lon_r)), np.mean(np.cos(lon_r))))
    dlon = (lon_r - lon0 + np.pi) % (2.0 * np.pi) - np.pi
    x = EARTH_RADIUS_M * np.cos(lat0) * dlon
    y = EARTH_RADIUS_M * (lat_r - lat0)
    return x, y


def block_ids(
    lat: np.ndarray, lon: np.ndarray, *, block_m: float = 1000.0, seed: int = 0
) -> np.ndarray:
    """Grid-cell id of every point: square cells of ``block_m`` metres, origin offset by ``seed``.

    The seeded random offset of the grid origin means different seeds cut the map along different
    lines, so repeated experiments do not always share the same block boundaries.
    """
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lon = np.asarray(lon, dtype=np.float64).ravel()
    if lat.shape != lon.shape:
        raise InputError(f"lat and lon must have the same length, got {lat.size} and {lon.size}.")
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{int(bad.sum())} point(s) have no valid latitude/longitude (first: index {first}, "
            f"lat={lat[first]}, lon={lon[first]}); remove them or fix their coordinates first."
        )
    if not block_m > 0:
        raise InputError(f"block_m must be a positive number of metres, got {block_m}.")
    x, y = _local_metres(lat, lon)
    offset = np.random.default_rng(seed).uniform(0.0, block_m, size=2)
    col = np.floor((x + offset[0]) / block_m).astype(np.int64)
    row = np.floor((y + offset[1]) / block_m).astype(np.int64)
    _, ids = np.unique(np.stack([col, row], axis=1), axis=0, return_inverse=True)
    return ids.ravel().astype(np.int64)


def spatial_block_split(
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    block_m: float = 1000.0,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole ``block_m`` x ``block_m`` metre grid cells as the test set.

    Cells are laid on a local equirectangular projection around the data's centroid (see
    :func:`block_ids`), visited in a seeded random order, and each one is moved to the test set when
    that brings the test share closer to ``test_fraction``. No cell has points on both sides.

    Returns ``(train_idx, test_idx)``: sorted, disjoint ``int64`` arrays covering every point.
    Raises :class:`~swclip_core.errors.InputError` when all points fall into one cell (use a
    smaller ``block_m``).
    """
    _check_fraction(test_fraction)
    cell = block_ids(lat, lon, block_m=block_m, seed=seed)
    n = cell.size
    counts = np.bincount(cell)
    if counts.size < 2:
        raise InputError(
            f"All {n} points fall into a single {block_m:g} m block, so no block can be held out; "
            "use a smaller block size."
        )
    target = test_fraction * n
    rng = np.random.default_rng(seed)
    in_test = np.zeros(counts.size, dtype=bool)
    n_test = 0
    for c in rng.permutation(counts.size):
        # Greedy: take the cell only if the test count gets closer to the target (never all cells).
        if abs(n_test + counts[c] - target) < abs(n_test - target) and n_test + counts[c] < n:
            in_test[c] = True
            n_test += int(counts[c])
    if n_test == 0:
        # Every cell overshoots the target on its own: the smallest cell comes closest.
        in_test[int(np.argmin(counts))] = True
    test_mask = in_test[cell]
    return np.flatnonzero(~test_mask).astype(np.int64), np.flatnonzero(test_mask).astype(np.int64)

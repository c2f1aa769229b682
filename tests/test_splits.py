"""Tests of the random and spatial-block train/test splits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from swclip_core.data.splits import block_ids, random_split, spatial_block_split
from swclip_core.errors import InputError


def _east_north_m(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference local metres around the first point (plain loop, wrapped longitudes)."""
    lat0, lon0 = lat[0], lon[0]
    x, y = [], []
    for la, lo in zip(lat, lon, strict=True):
        dlon = (lo - lon0 + 180.0) % 360.0 - 180.0
        x.append(6_371_008.8 * math.cos(math.radians(lat0)) * math.radians(dlon))
        y.append(6_371_008.8 * math.radians(la - lat0))
    return np.array(x), np.array(y)


@pytest.fixture()
def scattered() -> tuple[np.ndarray, np.ndarray]:
    """2,000 points over about 20 x 20 km around Douglas, Isle of Man."""
    rng = np.random.default_rng(11)
    return rng.uniform(54.05, 54.23, 2000), rng.uniform(-4.65, -4.35, 2000)


def _check_partition(train: np.ndarray, test: np.ndarray, n: int) -> None:
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # sorted, no repeats
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(n))


# ------------------------------------------------------------------ random


def test_random_split_partitions_with_requested_share() -> None:
    train, test = random_split(101, test_fraction=0.3, seed=4)
    _check_partition(train, test, 101)
    assert len(test) == round(101 * 0.3)


def test_random_split_reproducible_and_seeded() -> None:
    a = random_split(500, seed=1)
    b = random_split(500, seed=1)
    c = random_split(500, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_random_split_keeps_both_sides_non_empty() -> None:
    train, test = random_split(2, test_fraction=0.01)
    assert len(train) == 1 and len(test) == 1
    with pytest.raises(InputError):
        random_split(1)
    with pytest.raises(InputError, match="test_fraction"):
        random_split(10, test_fraction=1.0)


# ------------------------------------------------------------------ spatial blocks


def test_spatial_block_split_partitions_close_to_share(scattered) -> None:
    lat, lon = scattered
    train, test = spatial_block_split(lat, lon, block_m=1000.0, test_fraction=0.2, seed=0)
    _check_partition(train, test, len(lat))
    assert abs(len(test) / len(lat) - 0.2) < 0.02


def test_spatial_block_split_holds_out_whole_blocks(scattered) -> None:
    lat, lon = scattered
    train, test = spatial_block_split(lat, lon, block_m=1000.0, seed=3)
    cells = block_ids(lat, lon, block_m=1000.0, seed=3)
    assert not set(cells[train].tolist()) & set(cells[test].tolist())
    # Several blocks were held out, not one big lump.
    assert len(set(cells[test].tolist())) > 20


def test_block_ids_are_square_cells_of_block_size(scattered) -> None:
    lat, lon = scattered
    cells = block_ids(lat, lon, block_m=1000.0, seed=5)
    x, y = _east_north_m(lat, lon)
    for c in np.unique(cells):
        members = cells == c
        # 1 % slack for the reference projection's different origin.
        assert np.ptp(x[members]) < 1010.0 and np.ptp(y[members]) < 1010.0
    # About (20 km / 1 km)^2 cells, so the cells really are 1 km wide.
    assert 300 < len(np.unique(cells)) < 520


def test_spatial_block_split_keeps_identical_coordinates_together(scattered) -> None:
    lat, lon = scattered
    lat = np.concatenate([lat, lat[:300]])
    lon = np.concatenate([lon, lon[:300]])
    _, test = spatial_block_split(lat, lon, block_m=500.0, seed=8)
    side = np.zeros(len(lat), dtype=bool)
    side[test] = True
    assert np.array_equal(side[:300], side[2000:])


def test_spatial_block_split_reproducible_and_seeded(scattered) -> None:
    lat, lon = scattered
    a = spatial_block_split(lat, lon, seed=1)
    b = spatial_block_split(lat, lon, seed=1)
    c = spatial_block_split(lat, lon, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_spatial_blocks_across_the_antimeridian() -> None:
    rng = np.random.default_rng(0)
    lat = rng.uniform(-0.05, 0.05, 400)
    lon = (180.0 + rng.uniform(-0.05, 0.05, 400) + 180.0) % 360.0 - 180.0  # about 11 x 11 km
    cells = block_ids(lat, lon, block_m=5000.0)
    # At most 4 x 4 cells of 5 km: the two sides of the date line are not torn 40,000 km apart.
    assert len(np.unique(cells)) <= 16
    train, test = spatial_block_split(lat, lon, block_m=5000.0, seed=0)
    _check_partition(train, test, 400)


def test_spatial_block_split_errors() -> None:
    with pytest.raises(InputError, match="single"):
        spatial_block_split(np.array([54.1, 54.1001]), np.array([-4.5, -4.5]), block_m=1000.0)
    with pytest.raises(InputError, match="latitude"):
        spatial_block_split(np.array([54.1, np.nan]), np.array([-4.5, -4.4]))
    with pytest.raises(InputError, match="same length"):
        spatial_block_split(np.array([54.1, 54.2]), np.array([-4.5]))
    with pytest.raises(InputError, match="block_m"):
        spatial_block_split(np.array([54.1, 54.2]), np.array([-4.5, -4.4]), block_m=0.0)

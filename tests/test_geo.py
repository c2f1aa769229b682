"""Geodesy: haversine against known distances and an independent chord formula, numpy/torch
agreement and gradients, CRS transforms against the Ordnance Survey worked example."""

import math

import numpy as np
import pytest
import torch

from swclip_core.errors import InputError
from swclip_core.geo import (
    EARTH_RADIUS_M,
    from_wgs84,
    haversine_m,
    latlon_to_unit,
    pairwise_haversine_m,
    to_wgs84,
    unit_to_latlon,
)

from .reference import R


def chord_distance_m(lat1, lon1, lat2, lon2):
    """Great-circle distance from the straight chord between the two unit vectors (a different
    formula from the haversine, exact on the sphere): d = 2R·asin(|u1 − u2| / 2)."""

    def unit(lat, lon):
        p, q = math.radians(lat), math.radians(lon)
        return (math.cos(p) * math.cos(q), math.cos(p) * math.sin(q), math.sin(p))

    u, v = unit(lat1, lon1), unit(lat2, lon2)
    chord = math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v, strict=True)))
    return 2 * R * math.asin(min(1.0, chord / 2))


@pytest.fixture
def points():
    rng = np.random.default_rng(0)
    lat = rng.uniform(-80, 80, 15)
    lon = rng.uniform(-180, 180, 15)
    return lat, lon


def test_radius_is_the_spec_value():
    assert EARTH_RADIUS_M == R


def test_one_degree_of_latitude_and_longitude_at_equator():
    expected = math.pi * R / 180  # 111 195.08 m
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(expected, rel=1e-12)
    assert haversine_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(expected, rel=1e-12)
    assert haversine_m(54.0, -4.6, 55.0, -4.6) == pytest.approx(111_200, abs=10)


def test_antipodes_are_half_the_circumference():
    # atan2(√a, √(1−a)) is ill-conditioned as a → 1: rounding costs up to ~0.1 m at antipodes.
    assert haversine_m(10.0, 20.0, -10.0, -160.0) == pytest.approx(math.pi * R, abs=0.5)
    assert haversine_m(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * R, abs=0.5)


def test_longitude_wraps_around_the_antimeridian():
    assert haversine_m(0.0, 179.5, 0.0, -179.5) == pytest.approx(math.pi * R / 180, rel=1e-9)


def test_matches_chord_formula_on_random_pairs(points):
    lat, lon = points
    rng = np.random.default_rng(1)
    lat2 = rng.uniform(-80, 80, lat.size)
    lon2 = rng.uniform(-180, 180, lat.size)
    got = haversine_m(lat, lon, lat2, lon2)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    for i in range(lat.size):
        assert got[i] == pytest.approx(chord_distance_m(lat[i], lon[i], lat2[i], lon2[i]), abs=1e-3)


def test_short_distances_are_accurate():
    # 1e-5 degree of latitude ~ 1.11 m: the haversine form must not lose it to rounding.
    assert haversine_m(54.0, -4.0, 54.00001, -4.0) == pytest.approx(math.pi * R / 180 * 1e-5, 1e-6)


def test_broadcasting_shapes(points):
    lat, lon = points
    got = haversine_m(lat[:3, None], lon[:3, None], lat[None, :4], lon[None, :4])
    assert got.shape == (3, 4)
    assert got[2, 1] == pytest.approx(chord_distance_m(lat[2], lon[2], lat[1], lon[1]), abs=1e-3)


def test_torch_agrees_with_numpy_and_keeps_dtype(points):
    lat, lon = points
    expected = haversine_m(lat, lon, lat[::-1], lon[::-1])
    t64 = haversine_m(*(torch.tensor(v) for v in (lat, lon, lat[::-1].copy(), lon[::-1].copy())))
    assert isinstance(t64, torch.Tensor) and t64.dtype == torch.float64
    np.testing.assert_allclose(t64.numpy(), expected, rtol=0, atol=1e-6)
    t32 = haversine_m(
        torch.tensor(lat, dtype=torch.float32), torch.tensor(lon, dtype=torch.float32), 0.0, 0.0
    )
    assert t32.dtype == torch.float32
    np.testing.assert_allclose(t32.numpy(), haversine_m(lat, lon, 0.0, 0.0), rtol=1e-5)


def test_pairwise_matrix(points):
    lat, lon = points
    for backend in (np.asarray, torch.tensor):
        d = pairwise_haversine_m(backend(lat), backend(lon))
        d = d.numpy() if isinstance(d, torch.Tensor) else d
        assert d.shape == (lat.size, lat.size)
        assert np.all(np.diag(d) == 0)
        np.testing.assert_allclose(d, d.T, atol=1e-6)
        for i in range(lat.size):
            for j in range(lat.size):
                if i != j:
                    ref = chord_distance_m(lat[i], lon[i], lat[j], lon[j])
                    assert d[i, j] == pytest.approx(ref, abs=1e-3)


def test_torch_gradients_are_correct_and_finite_at_singular_points(points):
    lat, lon = points
    lat_t = torch.tensor(lat[:5], requires_grad=True)
    lon_t = torch.tensor(lon[:5], requires_grad=True)
    # Off the singular points the gradient matches finite differences.
    assert torch.autograd.gradcheck(
        lambda a, b: haversine_m(a, b, torch.tensor(1.0, dtype=torch.float64), 2.0), (lat_t, lon_t)
    )
    # The diagonal (coincident points) and antipodes have no derivative of sqrt; they must not
    # poison the gradient with NaN/inf.
    pairwise_haversine_m(lat_t, lon_t).sum().backward()
    anti = torch.tensor([10.0], requires_grad=True)
    haversine_m(anti, torch.tensor([20.0]), -10.0, -160.0).sum().backward()
    for grad in (lat_t.grad, lon_t.grad, anti.grad):
        assert grad is not None and torch.isfinite(grad).all()


def test_to_wgs84_british_national_grid_known_point():
    # Ordnance Survey "A guide to coordinate systems in Great Britain", worked example (Caister
    # water tower): E 651409.903, N 313177.270 is WGS84/ETRS89 52°39′28.723″N, 1°42′57.787″E
    # (through the 7-parameter Helmert transform, itself good to a few metres).
    lat, lon = to_wgs84([651409.903], [313177.270], "EPSG:27700")
    expected_lat = 52 + 39 / 60 + 28.723 / 3600
    expected_lon = 1 + 42 / 60 + 57.787 / 3600
    assert haversine_m(lat[0], lon[0], expected_lat, expected_lon) < 10.0
    x, y = from_wgs84(lat, lon, 27700)
    assert x[0] == pytest.approx(651409.903, abs=1e-3)
    assert y[0] == pytest.approx(313177.270, abs=1e-3)


def test_to_wgs84_geographic_input_uses_x_lon_y_lat():
    lat, lon = to_wgs84(np.array([-4.62742]), np.array([54.09205]), "EPSG:4326")
    assert lat[0] == pytest.approx(54.09205) and lon[0] == pytest.approx(-4.62742)


def test_unknown_crs_is_an_actionable_input_error():
    with pytest.raises(InputError, match="EPSG:999999"):
        to_wgs84([0.0], [0.0], "EPSG:999999")
    with pytest.raises(InputError, match="EPSG code"):
        from_wgs84([0.0], [0.0], "not a crs")


def test_unit_vectors_round_trip_and_known_axes(points):
    lat, lon = points
    xyz = latlon_to_unit(lat, lon)
    assert xyz.shape == (lat.size, 3)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(latlon_to_unit(0.0, 0.0), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(latlon_to_unit(0.0, 90.0), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(latlon_to_unit(90.0, 0.0), [0, 0, 1], atol=1e-12)
    back_lat, back_lon = unit_to_latlon(3.5 * xyz)  # not unit length: normalised first
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)
    t_lat, _ = unit_to_latlon(torch.tensor(xyz))
    np.testing.assert_allclose(t_lat, lat, atol=1e-9)


def test_mean_of_unit_vectors_is_the_midpoint_on_a_meridian():
    lat, lon = unit_to_latlon(latlon_to_unit([10.0, 20.0], [5.0, 5.0]).mean(axis=0))
    assert float(lat) == pytest.approx(15.0) and float(lon) == pytest.approx(5.0)


def test_zero_vector_has_no_direction():
    lat, lon = unit_to_latlon(np.zeros(3))
    assert np.isnan(lat) and np.isnan(lon)

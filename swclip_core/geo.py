"""Geodesy: great-circle distances, CRS transforms and unit-sphere vectors (docs/method.md,
"Geometry").

Distances work on numpy arrays and on torch tensors alike, so the same function serves the metrics
(numpy) and the differentiable spatial weights of the losses (torch). Torch is never imported here:
a value can only be a tensor once the caller has imported torch, so it is looked up in
``sys.modules`` and numpy-only users (readers, outputs, the plugin's backend checks) stay light.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import pyproj
from pyproj.exceptions import CRSError

from swclip_core.errors import InputError

if TYPE_CHECKING:
    import torch

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), the R of the haversine formula."""

WGS84 = "EPSG:4326"


def _any_tensor(*values: Any) -> torch.Tensor | None:
    """The first torch tensor among ``values``, if any (without importing torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return next((value for value in values if isinstance(value, torch.Tensor)), None)


def _haversine_numpy(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    phi1, lam1, phi2, lam2 = (
        np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1, lon1, lat2, lon2)
    )
    a = (
        np.sin((phi2 - phi1) / 2) ** 2
        + np.cos(phi1) * np.cos(phi2) * np.sin((lam2 - lam1) / 2) ** 2
    )
    # Rounding can push a a hair outside [0, 1]; sqrt(1 - a) would then be NaN.
    a = np.clip(a, 0.0, 1.0)
    return 2 * EARTH_RADIUS_M * np.arctan2(np.sqrt(a), np.sqrt(1 - a))


def _haversine_torch(reference: torch.Tensor, values: tuple[Any, ...]) -> torch.Tensor:
    import torch

    tensors = [torch.as_tensor(v, device=reference.device) for v in values]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    phi1, lam1, phi2, lam2 = (torch.deg2rad(t.to(dtype)) for t in tensors)
    a = (
        torch.sin((phi2 - phi1) / 2) ** 2
        + torch.cos(phi1) * torch.cos(phi2) * torch.sin((lam2 - lam1) / 2) ** 2
    )
    a = a.clamp(0.0, 1.0)
    # sqrt has an infinite derivative at 0 (coincident points, e.g. the diagonal of a pairwise
    # matrix) and sqrt(1 - a) at 1 (antipodes): evaluate the formula on a safe stand-in there and
    # select the exact limit instead, so values stay exact and gradients stay finite.
    interior = (a > 0) & (a < 1)
    a_safe = torch.where(interior, a, torch.full_like(a, 0.5))
    d = 2 * EARTH_RADIUS_M * torch.atan2(torch.sqrt(a_safe), torch.sqrt(1 - a_safe))
    d = torch.where(a <= 0, torch.zeros_like(d), d)
    return torch.where(a >= 1, torch.full_like(d, math.pi * EARTH_RADIUS_M), d)


def haversine_m(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    """Great-circle distance in metres between points given in degrees (WGS84 lat/lon).

    ``a = sin²(Δφ/2) + cos φ1 cos φ2 sin²(Δλ/2)``, ``d = 2R·atan2(√a, √(1−a))`` with
    ``R = EARTH_RADIUS_M``. Arguments broadcast. If any argument is a torch tensor the result is
    a differentiable tensor on that tensor's device (floating dtype of the inputs); otherwise a
    float64 numpy array.
    """
    reference = _any_tensor(lat1, lon1, lat2, lon2)
    if reference is not None:
        return _haversine_torch(reference, (lat1, lon1, lat2, lon2))
    return _haversine_numpy(lat1, lon1, lat2, lon2)


def pairwise_haversine_m(lat: Any, lon: Any) -> Any:
    """(N, N) matrix of great-circle distances in metres between N points; zero diagonal.

    Same rules as :func:`haversine_m`: torch in, torch out (differentiable); numpy otherwise.
    """
    if _any_tensor(lat, lon) is not None:
        import torch

        lat_t = torch.as_tensor(lat).reshape(-1)
        lon_t = torch.as_tensor(lon, device=lat_t.device).reshape(-1)
        return haversine_m(lat_t[:, None], lon_t[:, None], lat_t[None, :], lon_t[None, :])
    lat_a = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon_a = np.asarray(lon, dtype=np.float64).reshape(-1)
    return haversine_m(lat_a[:, None], lon_a[:, None], lat_a[None, :], lon_a[None, :])


def _crs(crs: Any) -> pyproj.CRS:
    try:
        return pyproj.CRS.from_user_input(crs)
    except CRSError as error:
        raise InputError(
            f"Unknown coordinate reference system {crs!r} ({error}). Give an EPSG code such as "
            "'EPSG:27700', a WKT string or a PROJ string; in QGIS the layer's CRS is shown under "
            "Layer Properties > Information."
        ) from error


def _transform(x: Any, y: Any, source: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    transformer = pyproj.Transformer.from_crs(_crs(source), _crs(target), always_xy=True)
    x_a, y_a = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    # pyproj sends one-element arrays down its scalar path, which converts them to float in a way
    # numpy deprecates: hand it plain floats then, flat arrays otherwise, and reshape back.
    if x_a.size == 1:
        out_x, out_y = transformer.transform(float(x_a.item()), float(y_a.item()))
    else:
        out_x, out_y = transformer.transform(x_a.reshape(-1), y_a.reshape(-1))
    out_x = np.asarray(out_x, dtype=np.float64).reshape(x_a.shape)
    out_y = np.asarray(out_y, dtype=np.float64).reshape(x_a.shape)
    # pyproj reports points outside the projection's domain as inf; NaN lets callers skip and
    # report those records with the same check they use for missing coordinates.
    bad = ~(np.isfinite(out_x) & np.isfinite(out_y))
    out_x = np.where(bad, np.nan, out_x)
    out_y = np.where(bad, np.nan, out_y)
    return out_x, out_y


def to_wgs84(x: Any, y: Any, crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Transform coordinates from ``crs`` to WGS84 and return ``(lat, lon)`` in degrees.

    ``x``/``y`` are in the CRS's axis order easting/northing (or lon/lat for geographic CRSs):
    the transform uses ``always_xy=True`` as QGIS and GeoPandas geometries do. ``crs`` is anything
    ``pyproj.CRS.from_user_input`` accepts. Points that cannot be transformed come back as NaN.
    Raises :class:`InputError` for an unknown CRS.
    """
    lon, lat = _transform(x, y, crs, WGS84)
    return lat, lon


def from_wgs84(lat: Any, lon: Any, crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Transform WGS84 ``(lat, lon)`` degrees to ``(x, y)`` in ``crs`` (easting/northing order)."""
    return _transform(lon, lat, WGS84, crs)


def _as_numpy(value: Any) -> np.ndarray:
    if _any_tensor(value) is not None:
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def latlon_to_unit(lat: Any, lon: Any) -> np.ndarray:
    """Unit vectors on the sphere, shape ``(..., 3)``, for lat/lon in degrees.

    x points to 0°N 0°E, y to 0°N 90°E, z to the North Pole.
    """
    phi = np.radians(_as_numpy(lat))
    lam = np.radians(_as_numpy(lon))
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def unit_to_latlon(xyz: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`latlon_to_unit`; vectors are normalised first, so a weighted mean of unit
    vectors maps back to its direction. A zero vector has no direction and gives NaN."""
    v = _as_numpy(xyz)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    # atan2 with the horizontal norm stays accurate near the poles, where arcsin(z) does not.
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return lat, lon

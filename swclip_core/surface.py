"""An error surface: localization error interpolated over the study area as a GeoTIFF.

Inverse distance weighting (Shepard 1968) of ``error_m`` at the TRUE locations, in a metric CRS,
over the k nearest samples of every cell (the "nearest neighbours" variant of GDAL's
``gdal_grid invdistnn``): far samples carry almost no weight at power 2, and a KD-tree keeps the
cost at O(cells · log samples) instead of cells × samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from pyproj.exceptions import CRSError
from scipy.spatial import cKDTree

from swclip_core.errors import InputError
from swclip_core.io import atomic_path

NODATA = -9999.0
NEIGHBOURS = 12
# A default grid never exceeds this many cells (16 MB of float32); a grid asked for with cell_m
# may be up to MAX_CELLS before we refuse it.
DEFAULT_MAX_CELLS = 4_000_000
MAX_CELLS = 100_000_000
CHUNK_CELLS = 262_144
METHOD = "inverse distance weighting over the nearest samples"


def metric_crs(crs: str | None, lat: np.ndarray, lon: np.ndarray) -> pyproj.CRS:
    """``crs`` when it is projected in metres, else the WGS 84 UTM zone of the points' centre."""
    if crs is not None:
        try:
            chosen = pyproj.CRS.from_user_input(crs)
        except CRSError as error:
            raise InputError(f"Unknown CRS {crs!r} for the error surface ({error}).") from error
        units = {axis.unit_name.lower() for axis in chosen.axis_info}
        if chosen.is_projected and units <= {"metre", "meter"}:
            return chosen
    centre_lon = float((np.nanmin(lon) + np.nanmax(lon)) / 2)
    centre_lat = float((np.nanmin(lat) + np.nanmax(lat)) / 2)
    zones = query_utm_crs_info(
        datum_name="WGS 84",
        area_of_interest=AreaOfInterest(centre_lon, centre_lat, centre_lon, centre_lat),
    )
    if not zones:
        raise InputError(
            f"No UTM zone covers the centre of the samples ({centre_lat:.4f}, {centre_lon:.4f}); "
            "pass a projected CRS in metres with crs=... (--out-crs)."
        )
    return pyproj.CRS.from_epsg(int(zones[0].code))


def nice_cell_size(metres: float, *, up: bool = False) -> float:
    """Round to 1, 2, 2.5 or 5 × 10^k metres (down, or ``up``) so cell edges fall on round
    numbers."""
    exponent = math.floor(math.log10(metres))
    candidates = [step * 10.0**e for e in (exponent, exponent + 1) for step in (1, 2, 2.5, 5)]
    if up:
        return min(c for c in candidates if c >= metres)
    return max(c for c in candidates if c <= metres)


def _valid_samples(predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows with a finite true location and error."""
    missing = [c for c in ("true_lat", "true_lon", "error_m") if c not in predictions]
    if missing:
        raise InputError(
            f"The predictions lack the column(s) {', '.join(missing)}: an error surface needs the "
            "true coordinates and error_m of every sample."
        )
    table = predictions[["true_lat", "true_lon", "error_m"]].astype(float)
    table = table[np.isfinite(table.to_numpy()).all(axis=1)]
    if table.empty:
        raise InputError("No prediction has a finite true location and error_m to interpolate.")
    return table


def _project_unique(table: pd.DataFrame, crs: pyproj.CRS) -> tuple[np.ndarray, np.ndarray]:
    """Projected unique true locations and their mean error (duplicates would tie at distance 0)."""
    to_metric = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = to_metric.transform(table["true_lon"].to_numpy(), table["true_lat"].to_numpy())
    frame = pd.DataFrame(
        {"x": np.round(x, 3), "y": np.round(y, 3), "e": table["error_m"].to_numpy()}
    )
    # Points outside the CRS's domain come back as inf: they cannot be placed on the grid.
    frame = frame[np.isfinite(frame[["x", "y"]].to_numpy()).all(axis=1)]
    frame = frame.groupby(["x", "y"], as_index=False)["e"].mean()
    if len(frame) < 2:
        raise InputError(
            f"An error surface needs at least 2 distinct true locations with an error; got "
            f"{len(frame)}."
        )
    return frame[["x", "y"]].to_numpy(), frame["e"].to_numpy()


def _span(xy: np.ndarray, margin: float) -> float:
    """Area (m²) of the samples' bounding box grown by ``margin`` on every side."""
    width, height = np.ptp(xy, axis=0) + 2 * margin
    return float(width * height)


def _cell_size(xy: np.ndarray, spacing: float, cell_m: float | None, margin: float) -> float:
    """``cell_m``, or a quarter of the typical spacing (draws each sample's neighbourhood
    smoothly), made coarser when the grid would exceed DEFAULT_MAX_CELLS."""
    if cell_m is not None:
        if not (math.isfinite(cell_m) and cell_m > 0):
            raise InputError(
                f"The error surface cell size must be a positive number of metres, got {cell_m}."
            )
        return float(cell_m)
    cell = nice_cell_size(spacing / 4)
    coarsest_needed = math.sqrt(_span(xy, margin) / DEFAULT_MAX_CELLS)
    return cell if cell >= coarsest_needed else nice_cell_size(coarsest_needed, up=True)


def _aligned(xy: np.ndarray, cell: float, margin: float) -> tuple[float, float, int, int]:
    """Top-left corner and shape of a grid aligned on multiples of the cell size."""
    left = math.floor((xy[:, 0].min() - margin) / cell) * cell
    right = math.ceil((xy[:, 0].max() + margin) / cell) * cell
    bottom = math.floor((xy[:, 1].min() - margin) / cell) * cell
    top = math.ceil((xy[:, 1].max() + margin) / cell) * cell
    return left, top, round((right - left) / cell), round((top - bottom) / cell)


def _grid(xy: np.ndarray, cell: float, margin: float) -> tuple[float, float, int, int]:
    """:func:`_aligned`, refused beyond MAX_CELLS with the smallest round cell size that fits."""
    left, top, width, height = _aligned(xy, cell, margin)
    if width * height > MAX_CELLS:
        fits = nice_cell_size(math.sqrt(_span(xy, margin) / MAX_CELLS), up=True)
        while math.prod(_aligned(xy, fits, margin)[2:]) > MAX_CELLS:  # the alignment's extra
            fits = nice_cell_size(fits * 1.01, up=True)  # the next round size
        # positional: a cell under a millimetre reads 0.0005, not 5e-04 or 0
        at_least = np.format_float_positional(fits, trim="-")
        raise InputError(
            f"A {cell:g} m error surface over this study area would have {width:,} × {height:,} "
            f"cells; choose a larger cell size (at least {at_least} m)."
        )
    return left, top, width, height


def idw_grid(
    xy: np.ndarray,
    values: np.ndarray,
    cell: float,
    left: float,
    top: float,
    shape: tuple[int, int],
    *,
    power: float,
    max_distance: float,
) -> np.ndarray:
    """IDW of ``values`` at the cell centres of a north-up grid; NODATA beyond ``max_distance``."""
    height, width = shape
    tree = cKDTree(xy)
    k = min(NEIGHBOURS, len(values))
    out = np.empty(height * width, dtype=np.float32)
    cols = left + (np.arange(width) + 0.5) * cell
    rows_per_chunk = max(1, CHUNK_CELLS // width)
    for start in range(0, height, rows_per_chunk):
        stop = min(height, start + rows_per_chunk)
        ys = top - (np.arange(start, stop) + 0.5) * cell
        centres = np.column_stack([np.tile(cols, stop - start), np.repeat(ys, width)])
        dist, idx = tree.query(centres, k=k)
        dist, idx = dist.reshape(len(centres), k), idx.reshape(len(centres), k)
        nearest = dist[:, 0]
        with np.errstate(divide="ignore"):
            weights = 1.0 / dist**power
        # A centre on a sample takes its value exactly (IDW's limit at distance 0).
        on_sample = nearest == 0
        weights[on_sample] = 0.0
        weights[on_sample, 0] = 1.0
        chunk = (weights * values[idx]).sum(axis=1) / weights.sum(axis=1)
        chunk[nearest > max_distance] = NODATA
        out[start * width : stop * width] = chunk
    return out.reshape(height, width)


def write_error_surface(
    predictions: pd.DataFrame,
    path: str | Path,
    *,
    crs: str | None = None,
    cell_m: float | None = None,
    power: float = 2.0,
    max_distance_m: float | None = None,
) -> Path:
    """Interpolate ``error_m`` at the true locations into a single-band float32 GeoTIFF.

    The grid covers the samples' bounding box plus ``max_distance_m`` on every side, in ``crs``
    when that is projected in metres, else in the WGS 84 UTM zone of the samples' centre.
    ``cell_m`` defaults to a quarter of the median nearest-neighbour spacing (rounded to 1, 2,
    2.5 or 5 × 10^k m, coarser when the grid would exceed 4 million cells); ``max_distance_m``
    (cells farther from every sample are nodata, -9999) defaults to 3 × that spacing, and at least
    2 cells. Each cell is
    the inverse-distance-weighted mean (weights 1/d^power) of its 12 nearest samples; duplicate
    locations are averaged first. The band is described as ``error_m`` (unit m) and the dataset
    tags record the method and its parameters. Written atomically.
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"The error surface is a GeoTIFF: give a path ending in .tif, got {path}")
    if power <= 0:
        raise InputError(f"The IDW power must be positive, got {power}.")
    samples = _valid_samples(predictions)
    target = metric_crs(crs, samples["true_lat"].to_numpy(), samples["true_lon"].to_numpy())
    xy, values = _project_unique(samples, target)
    gaps = cKDTree(xy).query(xy, k=2)[0][:, 1]
    spacing = float(np.median(gaps))
    if max_distance_m is not None and not (math.isfinite(max_distance_m) and max_distance_m > 0):
        raise InputError(f"max_distance_m must be a positive distance, got {max_distance_m}.")
    margin = 3 * spacing if max_distance_m is None else float(max_distance_m)
    cell = _cell_size(xy, spacing, cell_m, margin)
    # By default at least two cells, so that clustered samples on a coarse grid still show.
    max_distance = max(3 * spacing, 2 * cell) if max_distance_m is None else margin
    left, top, width, height = _grid(xy, cell, max_distance)
    grid = idw_grid(
        xy, values, cell, left, top, (height, width), power=power, max_distance=max_distance
    )
    _write_geotiff(
        grid,
        path,
        crs=target,
        cell=cell,
        left=left,
        top=top,
        tags={
            "method": METHOD,
            "power": f"{power:g}",
            "neighbours": str(min(NEIGHBOURS, len(values))),
            "max_distance_m": f"{max_distance:.3f}",
            "cell_m": f"{cell:g}",
            "samples": str(len(values)),
            "median_spacing_m": f"{spacing:.3f}",
            "source": "error_m at the true locations",
        },
    )
    return path


def _write_geotiff(
    grid: np.ndarray,
    path: Path,
    *,
    crs: pyproj.CRS,
    cell: float,
    left: float,
    top: float,
    tags: dict[str, str],
) -> None:
    import rasterio
    from rasterio.transform import Affine

    height, width = grid.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "float32",
        "crs": rasterio.crs.CRS.from_wkt(crs.to_wkt()),
        "transform": Affine(cell, 0.0, left, 0.0, -cell, top),  # north-up, origin top-left
        "nodata": NODATA,
        "compress": "deflate",
        "predictor": 3,  # floating-point predictor: smaller files for smooth surfaces
    }
    if width >= 256 and height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(grid, 1)
        dst.set_band_description(1, "error_m")
        dst.set_band_unit(1, "m")
        dst.update_tags(**tags)

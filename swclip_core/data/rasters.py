"""Cut georeferenced image patches from a raster: a localization set from any imagery.

Each patch is a square window of the raster saved as an 8-bit RGB PNG and positioned at the window's
centre, so aerial or satellite imagery an analyst already has becomes samples of the same table as
photos (:data:`~swclip_core.columns.SAMPLE_COLUMNS`). The raster is only read; patches go to a
cache folder keyed by the raster's bytes and the options, so a re-run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from swclip_core.columns import SAMPLE_COLUMNS
from swclip_core.errors import InputError
from swclip_core.geo import WGS84, crs_text, to_wgs84
from swclip_core.io import atomic_path, default_cache_dir, file_digest

# Part of the cache key: bump it when the pixels a given set of options produces change.
_PATCH_FORMAT = 1
# Percentiles are exact up to this many pixels per band; larger rasters are decimated to about this
# many for the statistics only (percentiles of millions of pixels barely move under decimation).
_STATS_MAX_PIXELS = 4_000_000
_REASONS_IN_ERROR = 5


def is_georeferenced_raster(path: str | os.PathLike) -> bool:
    """True when rasterio opens ``path`` as a raster with a CRS and a non-identity transform.

    A photo TIFF (no CRS, pixel coordinates) is not one, so it stays an ordinary image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                return dataset.crs is not None and not dataset.transform.is_identity
    except RasterioError:
        return False


def _whole_number(value: Any, option: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"{option} must be a whole number of at least {minimum}, got {value!r}.")
    return int(value)


def _band_order(bands: Sequence[int] | None, band_count: int, path: Path) -> tuple[int, int, int]:
    """Three 1-based band indexes for the R, G, B channels of the patches."""
    if bands is None:
        # Landsat-like band orders put blue, green, red first: 3,2,1 is natural colour there.
        return (3, 2, 1) if band_count >= 3 else (1, 1, 1)
    chosen = [_whole_number(b, "--bands (1-based band numbers)", 1) for b in bands]
    if len(chosen) not in (1, 3):
        raise InputError(
            f"--bands takes one band (shown as grey) or three (red, green, blue), got {chosen}."
        )
    missing = [b for b in chosen if b > band_count]
    if missing:
        raise InputError(
            f"--bands {','.join(map(str, chosen))}: {path} has {band_count} band(s), numbered "
            f"1 to {band_count}; band {missing[0]} does not exist."
        )
    return (chosen[0],) * 3 if len(chosen) == 1 else (chosen[0], chosen[1], chosen[2])


def _check_stretch(stretch: tuple[float, float] | None) -> tuple[float, float] | None:
    if stretch is None:
        return None
    low, high = (float(v) for v in stretch)
    if not 0 <= low < high <= 100:
        raise InputError(
            f"Contrast stretch percentiles must satisfy 0 <= low < high <= 100, got {stretch}."
        )
    return low, high


def _valid(data: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Pixels valid in every band: inside the mask (nodata, alpha, mask band) and finite."""
    return (masks > 0).all(axis=0) & np.isfinite(data).all(axis=0)


def _band_limits(
    dataset: rasterio.io.DatasetReader, bands: Sequence[int], stretch: tuple[float, float]
) -> np.ndarray:
    """(len(bands), 2) low/high values of the stretch, over the valid pixels of the whole raster."""
    scale = min(1.0, (_STATS_MAX_PIXELS / (dataset.width * dataset.height)) ** 0.5)
    shape = (
        len(bands),
        max(1, round(dataset.height * scale)),
        max(1, round(dataset.width * scale)),
    )
    data = dataset.read(list(bands), out_shape=shape).astype(np.float64)
    valid = _valid(data, dataset.read_masks(list(bands), out_shape=shape))
    if not valid.any():
        raise InputError(
            f"{dataset.name} has no valid pixel in band(s) {','.join(map(str, bands))}: every "
            "pixel is nodata or masked."
        )
    return np.array([np.percentile(band[valid], stretch) for band in data])


def _to_bytes(pixels: np.ndarray, limits: np.ndarray | None) -> np.ndarray:
    """(3, h, w) values to (h, w, 3) uint8: linear stretch of low..high onto 0..255."""
    pixels = pixels.astype(np.float64)
    if limits is not None:
        low, high = limits[:, 0, None, None], limits[:, 1, None, None]
        # A constant band (high == low) has no contrast to stretch: it maps to 0.
        span = np.where(high > low, high - low, np.inf)
        pixels = (pixels - low) / span * 255.0
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _windows(
    height: int, width: int, size: int, stride: int | None, count: int | None, seed: int
) -> list[tuple[int, int]]:
    """Upper-left (row, col) offsets of the windows, sorted row by row."""
    rows, cols = height - size + 1, width - size + 1
    if count is None:
        step = size if stride is None else stride
        return [(r, c) for r in range(0, rows, step) for c in range(0, cols, step)]
    positions = rows * cols
    if count > positions:
        raise InputError(
            f"--patch-count {count} exceeds the {positions} distinct {size}x{size} windows of a "
            f"{width}x{height}-pixel raster: ask for fewer patches or a smaller --patch-size."
        )
    # Distinct positions, so no two patches share an id; the same seed gives the same windows.
    picks = np.random.default_rng(seed).choice(positions, size=count, replace=False)
    return sorted((int(p) // cols, int(p) % cols) for p in picks)


def _cache_folder(
    dataset: rasterio.io.DatasetReader, options: dict[str, Any], cache_dir: Path | None
) -> Path:
    """``<cache>/patches/<sha1 of the raster's files + options>``."""
    digest = hashlib.sha1(usedforsecurity=False)
    # ds.files covers sidecars (.msk, .aux.xml) and a VRT's sources, which change the pixels too.
    for name in sorted(dataset.files):
        digest.update(f"{os.path.basename(name)}:{file_digest(name)}\n".encode())
    digest.update(json.dumps(options, sort_keys=True).encode())
    return (cache_dir or default_cache_dir()) / "patches" / digest.hexdigest()


def _write_png(pixels: np.ndarray, path: Path) -> None:
    if path.is_file():
        return  # written by an earlier run with the same raster bytes and options
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, "RGB").save(tmp, format="PNG")


def _no_patch_error(path: Path, skipped: list[dict[str, str]]) -> InputError:
    shown = "; ".join(f"{s['record']}: {s['reason']}" for s in skipped[:_REASONS_IN_ERROR])
    more = "" if len(skipped) <= _REASONS_IN_ERROR else f"; ... ({len(skipped)} in all)"
    return InputError(
        f"No usable patch in {path} ({len(skipped)} window(s) tried): {shown}{more}. Use a smaller "
        "--patch-size or --patch-stride, or imagery with fewer nodata areas."
    )


def read_raster_patches(
    path: str | os.PathLike,
    *,
    patch_size: int = 64,
    stride: int | None = None,
    count: int | None = None,
    seed: int = 0,
    bands: Sequence[int] | None = None,
    stretch: tuple[float, float] | None = (2, 98),
    out_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> gpd.GeoDataFrame:
    """Cut square patches from a georeferenced raster and position each at its centre.

    Windows of ``patch_size`` x ``patch_size`` pixels come either from a regular grid starting at
    the upper-left pixel, every ``stride`` pixels (default ``patch_size``: side by side), or, when
    ``count`` is given, from ``count`` distinct positions drawn uniformly with ``seed``. ``bands``
    (1-based) gives the red, green and blue channels, or one band shown as grey; the default is
    3,2,1 (natural colour for Landsat-like band orders) when the raster has three bands or more,
    else band 1. Each band is stretched linearly so that its ``stretch`` percentiles (default 2 and
    98) map to 0 and 255, the percentiles taken once over the valid pixels of the whole raster so
    that all patches are comparable; ``stretch=None`` keeps the values, clipped to 0..255 (for
    imagery that is already 8-bit).

    A window with any pixel that is nodata, masked or not finite is skipped and listed in
    ``gdf.attrs["skipped"]`` as ``{"record": sample_id, "reason": ...}``; with ``count`` that means
    fewer patches than asked when windows fall on nodata. Patches are saved as
    ``<out_dir>/r{row}_c{col}.png``, row/col being the window's upper-left pixel; ``out_dir``
    defaults to ``<cache_dir>/patches/<SHA-1 of the raster's files and the options>`` (``cache_dir``
    defaulting to ``default_cache_dir()``), so nothing is written next to the input and a re-run
    reuses the files.

    Returns a GeoDataFrame in EPSG:4326 with the columns of :data:`SAMPLE_COLUMNS` (``sample_id``
    ``"r{row}_c{col}"``, absolute ``image_path``, ``lat``/``lon`` of the window centre transformed
    from the raster's CRS, street/city/country/region None); ``attrs["source_crs"]`` holds the
    raster's CRS (``"EPSG:n"``, or WKT when it has no exact EPSG code) and ``attrs["patch_dir"]``
    the folder of the PNGs. Raises :class:`InputError` for a file that is not a georeferenced
    raster, bad options, or no usable window.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Raster {path} does not exist.")
    patch_size = _whole_number(patch_size, "--patch-size (pixels)", 1)
    if stride is not None and count is not None:
        raise InputError(
            "--patch-stride (regular grid) and --patch-count (random windows) exclude each other: "
            "give one of them."
        )
    stride = None if stride is None else _whole_number(stride, "--patch-stride (pixels)", 1)
    count = None if count is None else _whole_number(count, "--patch-count", 1)
    seed = _whole_number(seed, "--patch-seed", 0)
    stretch = _check_stretch(stretch)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioError as error:
        raise InputError(f"Cannot open {path} as a raster ({error}).") from error
    with dataset:
        if dataset.crs is None or dataset.transform.is_identity:
            raise InputError(
                f"{path} has no georeferencing (CRS and geotransform), so patches cannot be "
                "positioned. Georeference or warp it first (QGIS: Raster > Georeferencer, or "
                "Raster > Projections > Warp)."
            )
        if patch_size > min(dataset.width, dataset.height):
            raise InputError(
                f"--patch-size {patch_size} is larger than the {dataset.width}x{dataset.height}-"
                f"pixel raster {path}: choose a smaller size."
            )
        order = _band_order(bands, dataset.count, path)
        options = {
            "format": _PATCH_FORMAT,
            "patch_size": patch_size,
            "stride": stride,
            "count": count,
            "seed": seed if count is not None else None,
            "bands": order,
            "stretch": stretch,
        }
        folder = Path(out_dir).expanduser() if out_dir is not None else None
        folder = folder or _cache_folder(
            dataset, options, Path(cache_dir).expanduser() if cache_dir is not None else None
        )
        limits = None if stretch is None else _band_limits(dataset, order, stretch)
        source_crs = crs_text(dataset.crs.to_wkt())
        transform = dataset.transform

        ids: list[str] = []
        centres: list[tuple[float, float]] = []
        skipped: list[dict[str, str]] = []
        for row, col in _windows(dataset.height, dataset.width, patch_size, stride, count, seed):
            window = Window(col, row, patch_size, patch_size)
            pixels = dataset.read(list(order), window=window)
            invalid = ~_valid(pixels, dataset.read_masks(list(order), window=window))
            sample_id = f"r{row}_c{col}"
            if invalid.any():
                skipped.append(
                    {
                        "record": sample_id,
                        "reason": f"window rows {row}-{row + patch_size - 1}, columns "
                        f"{col}-{col + patch_size - 1} touches nodata or the raster mask "
                        f"({int(invalid.sum())} of {patch_size * patch_size} pixels)",
                    }
                )
                continue
            _write_png(_to_bytes(pixels, limits), folder / f"{sample_id}.png")
            ids.append(sample_id)
            # The affine maps pixel-edge coordinates, so the window centre is offset + size/2.
            centres.append(transform @ (col + patch_size / 2, row + patch_size / 2))

    if not ids:
        raise _no_patch_error(path, skipped)
    xy = np.array(centres, dtype=np.float64)
    lat, lon = to_wgs84(xy[:, 0], xy[:, 1], source_crs)
    keep = np.isfinite(lat) & np.isfinite(lon)
    for i in np.flatnonzero(~keep):
        skipped.append(
            {"record": ids[i], "reason": f"centre cannot be transformed from {source_crs} to WGS84"}
        )
    if not keep.any():
        raise _no_patch_error(path, skipped)
    kept = np.flatnonzero(keep)
    data = {
        "sample_id": pd.Series([ids[i] for i in kept], dtype=object),
        "image_path": pd.Series([os.path.abspath(folder / f"{ids[i]}.png") for i in kept]),
        "lat": lat[kept],
        "lon": lon[kept],
    }
    for name in ("street", "city", "country", "region"):
        data[name] = pd.Series([None] * len(kept), dtype=object)
    gdf = gpd.GeoDataFrame(data, geometry=gpd.points_from_xy(lon[kept], lat[kept]), crs=WGS84)
    gdf = gdf[list(SAMPLE_COLUMNS)]
    gdf.attrs["skipped"] = skipped
    gdf.attrs["source_crs"] = source_crs
    gdf.attrs["patch_dir"] = str(folder.resolve())
    return gdf

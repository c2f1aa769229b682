"""Read geo-tagged street-view samples from a CSV, a vector layer, a folder of photos or a raster.

This module picks the reader for the source (:mod:`~swclip_core.data.tables`,
:mod:`~swclip_core.data.photo_folders`, :mod:`~swclip_core.data.rasters`). Every reader ends in the
same table (:data:`SAMPLE_COLUMNS`, EPSG:4326) and the same record checks
(:mod:`~swclip_core.data.records`), so the CLI, the worker and the QGIS plugin treat bad records
alike: they are skipped and listed in ``gdf.attrs["skipped"]`` with a reason, never silently
dropped, and the input is only ever read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd

from swclip_core.columns import SAMPLE_COLUMNS
from swclip_core.config import CHUNK_ROWS
from swclip_core.data.photo_folders import PHOTO_SUFFIXES, read_photo_folder
from swclip_core.data.records import no_usable_record, records_to_samples
from swclip_core.data.tables import OPTION_NAMES, choose_layer, read_csv, read_vector
from swclip_core.errors import InputError
from swclip_core.geo import parse_crs

# PHOTO_SUFFIXES and choose_layer live with their readers now; importing them from here still works.
__all__ = [
    "PHOTO_SUFFIXES",
    "RASTER_SUFFIXES",
    "SAMPLE_COLUMNS",
    "TABLE_SUFFIXES",
    "choose_layer",
    "read_sample_chunks",
    "read_samples",
]

TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
# Files with these suffixes are cut into patches when rasterio finds a CRS and a geotransform.
RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".img", ".jp2", ".vrt"})


def read_samples(source: str | os.PathLike, **options: Any) -> gpd.GeoDataFrame:
    """Read geo-tagged street-view samples into an EPSG:4326 GeoDataFrame: all of
    :func:`read_sample_chunks` (see there for the sources, ``options`` and the checks) at once."""
    (samples,) = read_sample_chunks(source, chunk_rows=None, **options)
    return samples


def read_sample_chunks(
    source: str | os.PathLike,
    *,
    chunk_rows: int | None = CHUNK_ROWS,
    image_column: str | None = None,
    lat_column: str | None = None,
    lon_column: str | None = None,
    x_column: str | None = None,
    y_column: str | None = None,
    crs: str | None = None,
    id_column: str | None = None,
    layer: str | None = None,
    street_column: str | None = None,
    city_column: str | None = None,
    country_column: str | None = None,
    region_column: str | None = None,
    check_images: bool = True,
    require_location: bool = True,
    patch_size: int | None = None,
    patch_stride: int | None = None,
    patch_count: int | None = None,
    patch_seed: int | None = None,
    bands: Sequence[int] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[gpd.GeoDataFrame]:
    """Read geo-tagged street-view samples as EPSG:4326 GeoDataFrames of ``chunk_rows`` records
    (the last one shorter), so that a layer larger than memory is read piece by piece; CSV and
    vector files are read in chunks, a photo folder or a raster is one chunk, and
    ``chunk_rows=None`` reads everything as one chunk (:func:`read_samples`). A chunk may be empty
    when all its records are skipped; each lists its own skipped records in ``attrs``.

    ``source`` is one of
    - a CSV with an image path column and lat/lon columns (WGS84 degrees), or x/y columns with
      ``crs``; ``;``-separated files with decimal commas are understood;
    - a vector file (GeoPackage, choose ``layer`` when it has several; GeoJSON; Shapefile) of point
      geometries in any CRS (the layer's CRS wins; ``crs`` fills in when the file has none); naming
      coordinate columns reads them instead of the geometry;
    - a folder of photos (JPEG/PNG/TIFF, searched recursively) positioned by their EXIF GPS;
    - a georeferenced raster (.tif/.tiff/.img/.jp2/.vrt that rasterio opens with a CRS and a
      geotransform; a photo TIFF without them is not one) cut into PNG patches by
      :func:`swclip_core.data.rasters.read_raster_patches` with ``patch_size`` (pixels, default 64),
      ``patch_stride`` (grid step in pixels, default the patch size) or ``patch_count`` random
      windows drawn with ``patch_seed`` (default 0), and ``bands`` (1-based, default 3,2,1 or 1);
      the patches go to ``cache_dir`` (default: the user's cache folder).

    Columns not named are auto-detected case-insensitively (image: image_path, image, path, file,
    filename, photo; lat: lat, latitude; lon: lon, lng, long, longitude; x/y: x, easting / y,
    northing, in WGS84 unless ``crs`` says otherwise; street: street, addr:street, road; city: city,
    town, addr:city, locality; country: country, addr:country; region: region). Relative image
    paths resolve against the folder of the CSV or vector file.

    Returns the columns :data:`SAMPLE_COLUMNS`: ``sample_id`` (from ``id_column``; else the file
    stem for photo folders; else the 1-based row number), absolute ``image_path``, ``lat``/``lon``
    floats, ``street``/``city``/``country``/``region`` (None when missing) and a Point geometry.
    Records that cannot be used (missing or unreadable image, when ``check_images`` also one that
    fails to decode; missing, non-numeric or out-of-range coordinate; photo without EXIF GPS) are
    skipped and listed in ``gdf.attrs["skipped"]`` as ``{"record": ..., "reason": ...}``.
    With ``require_location=False`` (photos to localize whose position is unknown) a record with
    no coordinate at all, or a photo without EXIF GPS, is kept instead, with NaN ``lat``/``lon``
    and no geometry; a coordinate that is present but invalid is still skipped.

    Raises :class:`InputError` for a missing source, an unknown CRS, a named column that does not
    exist, missing coordinate or image columns, non-point geometries, duplicate sample ids, and
    input with no usable record. The input is only read, never modified.

    ``gdf.attrs["source_crs"]`` is the CRS the input's coordinates were in, as ``"EPSG:n"`` or WKT
    (see :func:`crs_text`): the layer's, ``crs`` for x/y columns, the raster's, and EPSG:4326 for
    lat/lon columns and photos, so that outputs can be written back in it.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(
            f"Input {path} does not exist. Give a CSV, vector file, photo folder or georeferenced "
            "raster."
        )
    columns = {
        "image": image_column,
        "lat": lat_column,
        "lon": lon_column,
        "x": x_column,
        "y": y_column,
        "id": id_column,
        "street": street_column,
        "city": city_column,
        "country": country_column,
        "region": region_column,
    }
    if crs is not None:
        parse_crs(crs)  # fail on a typo before reading anything
    given = [OPTION_NAMES[k] for k, v in columns.items() if v is not None]
    given += [name for name, v in (("--crs", crs), ("--layer", layer)) if v is not None]
    raster_options = {
        "patch_size": ("--patch-size", patch_size),
        "stride": ("--patch-stride", patch_stride),
        "count": ("--patch-count", patch_count),
        "seed": ("--patch-seed", patch_seed),
        "bands": ("--bands", bands),
    }
    raster_given = {key: value for key, (_, value) in raster_options.items() if value is not None}
    if path.is_file() and path.suffix.lower() in RASTER_SUFFIXES:
        # Imported here: rasterio is only needed, and only loaded, for raster inputs.
        from swclip_core.data.rasters import is_georeferenced_raster, read_raster_patches

        if is_georeferenced_raster(path):
            if given:
                raise InputError(
                    f"{path} is a georeferenced raster, cut into patches positioned by its own "
                    f"CRS: {', '.join(given)} only apply to CSV or vector files."
                )
            yield read_raster_patches(path, **raster_given, cache_dir=cache_dir)
            return
    if raster_given:
        names = ", ".join(raster_options[key][0] for key in raster_given)
        raise InputError(
            f"{names} only apply to georeferenced rasters (e.g. a GeoTIFF with a CRS), and {path} "
            "is not one."
        )
    if path.is_dir():
        if given:
            raise InputError(
                f"{path} is a folder of photos, positioned by their EXIF GPS: "
                f"{', '.join(given)} only apply to CSV or vector files."
            )
        yield records_to_samples(
            read_photo_folder(path, require_location),
            path,
            path,
            check_images,
            require_location,
        )
        return
    if path.suffix.lower() in TABLE_SUFFIXES:
        if layer is not None:
            raise InputError(f"--layer applies to GeoPackages, not to the CSV file {path}.")
        chunks = read_csv(path, columns, crs, chunk_rows)
    else:
        chunks = read_vector(path, columns, crs, layer, chunk_rows)
    seen: set[str] = set()
    total, kept, skipped = 0, 0, []
    for records in chunks:
        samples = records_to_samples(
            records,
            path.parent,
            path,
            check_images,
            require_location,
            seen_ids=seen,
            allow_empty=chunk_rows is not None,
        )
        total += len(records.labels) + len(records.skipped)
        kept += len(samples)
        skipped += samples.attrs["skipped"]
        yield samples
    if (
        kept == 0
    ):  # in chunks: only known at the end (one chunk: records_to_samples said so already)
        raise no_usable_record(path, total, skipped)

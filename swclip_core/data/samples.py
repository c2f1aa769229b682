"""Read geo-tagged street-view samples from a CSV, a vector layer or a folder of photos.

Every reader ends in the same table (:data:`SAMPLE_COLUMNS`, EPSG:4326) and the same record checks,
so the CLI, the worker and the QGIS plugin treat bad records alike: they are skipped and listed in
``gdf.attrs["skipped"]`` with a reason, never silently dropped, and the input is only ever read.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from PIL import Image

from swclip_core.columns import CANDIDATES, SAMPLE_COLUMNS, clean_text, resolve_column
from swclip_core.config import CHUNK_ROWS
from swclip_core.data.exif import read_exif_gps
from swclip_core.data.images import DECODE_ERRORS, load_image
from swclip_core.errors import InputError, SwclipError
from swclip_core.geo import WGS84, crs_text, parse_crs, to_wgs84

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
# Files with these suffixes are cut into patches when rasterio finds a CRS and a geotransform.
RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".img", ".jp2", ".vrt"})

_TEXT_FIELDS = ("street", "city", "country", "region")
_OPTION_NAMES = {
    "image": "--image-column",
    "lat": "--lat-column",
    "lon": "--lon-column",
    "x": "--x-column",
    "y": "--y-column",
    "id": "--id-column",
    "street": "--street-column",
    "city": "--city-column",
    "country": "--country-column",
    "region": "--region-column",
}
_REASONS_IN_ERROR = 5
# A decode this small still reads the whole file (so truncation shows) and JPEG draft makes it
# cheap: a few milliseconds per photo, against seconds of training time lost to a bad file.
_VERIFY_SIDE = 64


@dataclass
class _Records:
    """Parallel per-record lists collected by a reader, before the shared checks."""

    labels: list[str] = field(default_factory=list)  # how a skipped record is named to the user
    ids: list[str | None] = field(default_factory=list)
    images: list[str | None] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    lon: list[float] = field(default_factory=list)
    text: dict[str, list[str | None]] = field(
        default_factory=lambda: {name: [] for name in _TEXT_FIELDS}
    )
    skipped: list[dict[str, str]] = field(default_factory=list)
    # Coordinates that were given in a CRS only by assumption (no CRS named anywhere).
    crs_assumed: bool = False
    # The CRS the input's coordinates were in (crs_text form), so outputs can be written back in it.
    source_crs: str = WGS84


def _number(value: Any, decimal_comma: bool) -> float:
    if isinstance(value, str):
        value = value.strip()
        if decimal_comma:
            value = value.replace(",", ".")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _find_column(
    columns: Sequence[str], key: str, explicit: str | None, source: Path
) -> str | None:
    """The column for ``key``: the one named by the user (must exist) or the first candidate."""
    return resolve_column(
        columns,
        explicit,
        CANDIDATES.get(key, ()),
        not_found=f"Column {explicit!r} ({_OPTION_NAMES[key]}) not found in {source}. "
        f"Available columns: {', '.join(map(str, columns))}.",
    )


def _resolve_columns(
    names: Sequence[str], columns: dict[str, str | None], source: Path
) -> dict[str, str | None]:
    found = {key: _find_column(names, key, columns.get(key), source) for key in _OPTION_NAMES}
    if found["image"] is None:
        raise InputError(
            f"No image path column in {source}. Columns found: {', '.join(names) or 'none'}. "
            f"Name it with --image-column (auto-detected: {', '.join(CANDIDATES['image'])})."
        )
    return found


def _records_from_table(
    table: pd.DataFrame,
    found: dict[str, str | None],
    xy: tuple[Sequence[float], Sequence[float]],
    source_crs: Any,
    crs_assumed: bool,
    first_row: int = 1,
) -> _Records:
    """Records from attribute columns plus x/y in ``source_crs`` (NaN where missing); the first
    record is row ``first_row`` of the input (a chunk of it may start further down)."""
    rows = range(first_row, first_row + len(table))
    if found["id"]:
        ids = [clean_text(v) for v in table[found["id"]]]
        labels = [i or f"row {row}" for i, row in zip(ids, rows, strict=True)]
    else:
        ids = [str(row) for row in rows]
        labels = [f"row {row}" for row in rows]
    lat, lon = to_wgs84(
        np.asarray(xy[0], dtype=np.float64), np.asarray(xy[1], dtype=np.float64), source_crs
    )
    records = _Records(crs_assumed=crs_assumed, source_crs=crs_text(source_crs))
    records.labels, records.ids = labels, ids
    records.images = [clean_text(v) for v in table[found["image"]]]
    records.lat, records.lon = [float(v) for v in lat], [float(v) for v in lon]
    for name in _TEXT_FIELDS:
        column = found[name]
        records.text[name] = (
            [clean_text(v) for v in table[column]] if column else [None] * len(table)
        )
    return records


def _records_from_columns(
    table: pd.DataFrame,
    source: Path,
    *,
    columns: dict[str, str | None],
    crs: str | None,
    decimal_comma: bool,
    first_row: int = 1,
) -> _Records:
    """Records from a table whose coordinates are in columns (CSV, or a layer without geometry)."""
    names = [str(c) for c in table.columns]
    found = _resolve_columns(names, columns, source)
    explicit_xy = columns["x"] is not None or columns["y"] is not None
    explicit_latlon = columns["lat"] is not None or columns["lon"] is not None
    use_latlon = explicit_latlon or (not explicit_xy and found["lat"] and found["lon"])
    x_col, y_col = (found["lon"], found["lat"]) if use_latlon else (found["x"], found["y"])
    if x_col is None or y_col is None:
        raise InputError(
            f"No coordinate columns in {source}. Columns found: {', '.join(names)}. Name them "
            "with --lat-column/--lon-column (WGS84 degrees) or with --x-column/--y-column and "
            "--crs (any CRS, e.g. --crs EPSG:27700)."
        )
    source_crs = crs or WGS84
    if use_latlon and parse_crs(source_crs).is_projected:
        raise InputError(
            f"Columns {y_col!r}/{x_col!r} hold latitude/longitude but --crs {crs} is a projected "
            "CRS. Use --x-column/--y-column for eastings/northings in that CRS."
        )
    xy = (
        [_number(v, decimal_comma) for v in table[x_col]],
        [_number(v, decimal_comma) for v in table[y_col]],
    )
    return _records_from_table(
        table, found, xy, source_crs, crs_assumed=crs is None, first_row=first_row
    )


def _read_csv(
    path: Path, columns: dict[str, str | None], crs: str | None, chunk_rows: int | None = None
) -> Iterator[_Records]:
    """Records of a CSV, ``chunk_rows`` rows at a time (all at once when None)."""
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            first_line = handle.readline()
        # Spreadsheets in many locales export ";"-separated files with decimal commas.
        if "\t" in first_line:
            separator = "\t"
        elif ";" in first_line and "," not in first_line:
            separator = ";"
        else:
            separator = ","
        tables = pd.read_csv(
            path,
            sep=separator,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            skipinitialspace=True,
            chunksize=chunk_rows,
        )
        first_row = 1
        for table in [tables] if chunk_rows is None else tables:
            table.columns = [str(c).strip() for c in table.columns]
            if table.empty and first_row == 1:
                raise InputError(f"{path} has a header but no rows: add one row per sample.")
            yield _records_from_columns(
                table,
                path,
                columns=columns,
                crs=crs,
                decimal_comma=separator == ";",
                first_row=first_row,
            )
            first_row += len(table)
    except pd.errors.EmptyDataError as error:
        raise InputError(
            f"{path} is empty: it needs a header row and one row per sample."
        ) from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(
            f"Cannot read {path} as CSV ({error}). Save it as UTF-8 CSV with one header row."
        ) from error


def choose_layer(
    path: Path, layer: str | None, *, hint: str = "choose one with --layer"
) -> str | None:
    """The layer to read from ``path``: ``layer`` if it exists, else the only one (None lets the
    driver pick it); ``hint`` says how to name one when there are several."""
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except pyogrio.errors.DataSourceError as error:
        raise InputError(
            f"Cannot open {path} as a CSV, GeoPackage, GeoJSON or Shapefile ({error})."
        ) from error
    if layer is not None:
        if layer not in layers:
            raise InputError(
                f"Layer {layer!r} not found in {path}. Layers: {', '.join(layers) or 'none'}."
            )
        return layer
    if len(layers) > 1:
        raise InputError(f"{path} has {len(layers)} layers ({', '.join(layers)}): {hint}.")
    return None


def _point_xy(geometries: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x/y of point geometries; NaN for missing or empty ones. Other geometry types are refused."""
    types = shapely.get_type_id(geometries)  # -1 for missing geometries
    single_multipoint = (types == shapely.GeometryType.MULTIPOINT) & (
        shapely.get_num_geometries(geometries) == 1
    )
    empty = (types < 0) | shapely.is_empty(geometries)
    refused = ~((types == shapely.GeometryType.POINT) | single_multipoint | empty)
    if refused.any():
        kinds = sorted({int(k) for k in types[refused]})
        kind_names = ", ".join(shapely.GeometryType(k).name.title() for k in kinds)
        first_row = int(np.flatnonzero(refused)[0]) + 1
        raise InputError(
            f"{path} holds {kind_names} geometries (first at row {first_row}), but each sample "
            "is one photo position: use point geometries, e.g. centroids (QGIS: Vector > "
            "Geometry Tools > Centroids)."
        )
    points = np.where(single_multipoint, shapely.get_geometry(geometries, 0), geometries)
    x = np.full(len(points), np.nan)
    y = np.full(len(points), np.nan)
    usable = ~empty
    x[usable] = shapely.get_x(points[usable])
    y[usable] = shapely.get_y(points[usable])
    return x, y


def _read_vector(
    path: Path,
    columns: dict[str, str | None],
    crs: str | None,
    layer: str | None,
    chunk_rows: int | None = None,
) -> Iterator[_Records]:
    """Records of a vector layer, ``chunk_rows`` features at a time (all at once when None)."""
    chosen = choose_layer(path, layer)
    first = 0
    while True:
        try:
            frame = pyogrio.read_dataframe(
                path, layer=chosen, skip_features=first, max_features=chunk_rows
            )
        except pyogrio.errors.DataSourceError as error:
            raise InputError(f"Cannot read {path} ({error}).") from error
        if frame.empty and first == 0:
            raise InputError(f"{path} has no features: add one point per sample.")
        if frame.empty:
            return
        yield _records_from_frame(frame, path, columns, crs, first + 1)
        first += len(frame)
        if chunk_rows is None or len(frame) < chunk_rows:
            return


def _records_from_frame(
    frame: pd.DataFrame,
    path: Path,
    columns: dict[str, str | None],
    crs: str | None,
    first_row: int,
) -> _Records:
    has_geometry = isinstance(frame, gpd.GeoDataFrame)
    table = pd.DataFrame(frame.drop(columns=frame.geometry.name)) if has_geometry else frame
    if not has_geometry or any(columns[k] is not None for k in ("lat", "lon", "x", "y")):
        # Attribute tables, or coordinates the user explicitly asked to take from columns.
        return _records_from_columns(
            table, path, columns=columns, crs=crs, decimal_comma=False, first_row=first_row
        )

    found = _resolve_columns([str(c) for c in table.columns], columns, path)
    x, y = _point_xy(np.asarray(frame.geometry.values, dtype=object), path)
    # The layer's own CRS wins; --crs only fills in for files that carry none (e.g. no .prj).
    source_crs = frame.crs or crs or WGS84
    return _records_from_table(
        table,
        found,
        (x, y),
        source_crs,
        crs_assumed=frame.crs is None and crs is None,
        first_row=first_row,
    )


def _photo_files(folder: Path) -> tuple[list[Path], list[dict[str, str]]]:
    """The photo files under ``folder`` (links to files and folders followed, each folder read
    once) and, as skipped records, everything photo-like or unreadable that cannot be used:
    broken links, photo names that are not files, unreadable folders, folder links that lead back
    to a folder already read (a loop)."""
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    seen: dict[tuple[int, int], str] = {}

    def label(path: str) -> str:
        return Path(path).relative_to(folder).as_posix()

    def unreadable(error: OSError) -> None:
        where = label(error.filename) if error.filename else "."
        reason = f"folder cannot be read: {error.strerror}"
        skipped.append({"record": where + "/", "reason": reason})

    for root, dirs, names in os.walk(folder, followlinks=True, onerror=unreadable):
        info = os.stat(root)
        key = (info.st_dev, info.st_ino)
        if key in seen:  # a link back to a folder already read: read it once
            skipped.append(
                {
                    "record": label(root) + "/",
                    "reason": f"a link to {seen[key]}/, already read (a loop or a second link): "
                    "its photos are read once",
                }
            )
            dirs.clear()
            continue
        seen[key] = label(root)
        # os.walk lists folders (and links to folders) in dirs and walks them; names holds the
        # rest, broken links included.
        for name in names:
            path = os.path.join(root, name)
            if os.path.islink(path) and not os.path.exists(path):
                target = os.readlink(path)
                skipped.append(
                    {"record": label(path), "reason": f"broken link: {target} does not exist"}
                )
            elif Path(name).suffix.lower() not in PHOTO_SUFFIXES:
                continue
            elif os.path.isfile(path):
                files.append(Path(path))
            else:
                skipped.append({"record": label(path), "reason": "a photo name, but not a file"})
    return sorted(files), skipped


def _read_photo_folder(folder: Path, require_location: bool = True) -> _Records:
    files, skipped = _photo_files(folder)
    if not files:
        found = "; ".join(f"{s['record']}: {s['reason']}" for s in skipped[:_REASONS_IN_ERROR])
        raise InputError(
            f"No photos (JPEG, PNG or TIFF) found in folder {folder} or its subfolders"
            + (f" ({found})." if found else ".")
        )
    records = _Records(skipped=skipped)
    for file in files:
        label = file.relative_to(folder).as_posix()
        try:
            position = read_exif_gps(file)
        except InputError as error:
            records.skipped.append({"record": label, "reason": f"unreadable image: {error}"})
            continue
        if position is None and not require_location:
            position = (math.nan, math.nan)  # to be localized: its position is the question
        if position is None:
            records.skipped.append(
                {"record": label, "reason": f"photo {file} has no GPS position in its EXIF"}
            )
            continue
        records.labels.append(label)
        records.ids.append(file.stem)
        records.images.append(os.path.abspath(file))
        records.lat.append(position[0])
        records.lon.append(position[1])
        for name in _TEXT_FIELDS:
            records.text[name].append(None)
    return records


def _check_unique(ids: Iterable[str | None], source: Path, seen: set[str] | None = None) -> None:
    """Refuse repeated ids, also against the ``seen`` ids of earlier chunks (which it extends)."""
    counts = Counter(i for i in ids if i is not None)
    duplicates = sorted(i for i, n in counts.items() if n > 1 or (seen and i in seen))
    if seen is not None:
        seen.update(counts)
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:10])
        more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
        raise InputError(
            f"Duplicate sample ids in {source}: {shown}{more}. Every sample needs its own id "
            "(choose another column with --id-column, or rename the files)."
        )


def _image_problem(path: str) -> str | None:
    """Why the image cannot be used, or None. Verify first (cheap), then decode a small copy."""
    try:
        with Image.open(path) as image:
            image.verify()
        load_image(path, max_side=_VERIFY_SIDE)
    except (SwclipError, *DECODE_ERRORS) as error:
        return f"unreadable image {path}: {error}"
    return None


def _coordinate_problem(
    lat: float, lon: float, crs_assumed: bool, require_location: bool = True
) -> str | None:
    if math.isnan(lat) and math.isnan(lon) and not require_location:
        return None
    if math.isnan(lat) or math.isnan(lon):
        return "missing, non-numeric or untransformable coordinate"
    hint = " (projected coordinates? give their CRS with --crs)" if crs_assumed else ""
    if not -90 <= lat <= 90:
        return f"latitude {lat:g} outside -90..90{hint}"
    if not -180 <= lon <= 180:
        return f"longitude {lon:g} outside -180..180{hint}"
    return None


def _finish(
    records: _Records,
    base_dir: Path,
    source: Path,
    check_images: bool,
    require_location: bool = True,
    seen_ids: set[str] | None = None,
    allow_empty: bool = False,
) -> gpd.GeoDataFrame:
    _check_unique(records.ids, source, seen_ids)
    skipped = list(records.skipped)
    kept: list[int] = []
    paths: list[str] = []
    image_problems: dict[str, str | None] = {}  # a file listed many times is decoded once
    for i, label in enumerate(records.labels):
        reason = None
        image = records.images[i]
        if records.ids[i] is None:
            reason = "empty sample id"
        elif image is None:
            reason = "no image path"
        else:
            candidate = Path(image).expanduser()
            image = os.path.abspath(candidate if candidate.is_absolute() else base_dir / candidate)
            if not os.path.isfile(image):
                reason = f"image file not found: {image}"
        reason = reason or _coordinate_problem(
            records.lat[i], records.lon[i], records.crs_assumed, require_location
        )
        if reason is None and check_images:
            if image not in image_problems:
                image_problems[image] = _image_problem(image)
            reason = image_problems[image]
        if reason is not None:
            skipped.append({"record": label, "reason": reason})
            continue
        kept.append(i)
        paths.append(image)

    if not kept and not allow_empty:
        raise _no_usable_record(source, len(records.labels) + len(records.skipped), skipped)

    lat = np.array([records.lat[i] for i in kept], dtype=np.float64)
    lon = np.array([records.lon[i] for i in kept], dtype=np.float64)
    data = {
        "sample_id": pd.Series([records.ids[i] for i in kept], dtype=object),
        "image_path": pd.Series(paths, dtype=object),
        "lat": lat,
        "lon": lon,
    }
    for name in _TEXT_FIELDS:
        data[name] = pd.Series([records.text[name][i] for i in kept], dtype=object)
    points = gpd.points_from_xy(lon, lat)
    points[np.isnan(lat)] = None  # an unknown position has no geometry
    gdf = gpd.GeoDataFrame(data, geometry=points, crs=WGS84)
    gdf = gdf[list(SAMPLE_COLUMNS)]
    gdf.attrs["skipped"] = skipped
    gdf.attrs["source_crs"] = records.source_crs
    return gdf


def _no_usable_record(source: Path, total: int, skipped: list[dict[str, str]]) -> InputError:
    shown = "; ".join(f"{s['record']}: {s['reason']}" for s in skipped[:_REASONS_IN_ERROR])
    more = "" if len(skipped) <= _REASONS_IN_ERROR else f"; ... ({len(skipped)} in all)"
    return InputError(f"No usable record in {source} ({total} read). {shown}{more}")


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
      windows drawn with ``patch_seed`` (default 0), and ``bands`` (1-based, default 3,2,1 or 1).

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
    given = [_OPTION_NAMES[k] for k, v in columns.items() if v is not None]
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
            yield read_raster_patches(path, **raster_given)
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
        yield _finish(
            _read_photo_folder(path, require_location),
            path,
            path,
            check_images,
            require_location,
        )
        return
    if path.suffix.lower() in TABLE_SUFFIXES:
        if layer is not None:
            raise InputError(f"--layer applies to GeoPackages, not to the CSV file {path}.")
        chunks = _read_csv(path, columns, crs, chunk_rows)
    else:
        chunks = _read_vector(path, columns, crs, layer, chunk_rows)
    seen: set[str] = set()
    total, kept, skipped = 0, 0, []
    for records in chunks:
        samples = _finish(
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
    if kept == 0:  # in chunks: only known at the end (one chunk: _finish said so already)
        raise _no_usable_record(path, total, skipped)

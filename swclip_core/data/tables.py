"""Sample readers for tables: CSV files and vector layers (GeoPackage, GeoJSON, Shapefile).

Both find their columns the same way (named by the user, else auto-detected) and turn each row into
a record of :class:`~swclip_core.data.records.Records`; the checks come after, in
:mod:`swclip_core.data.records`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from swclip_core.columns import CANDIDATES, clean_text, resolve_column
from swclip_core.data.records import TEXT_FIELDS, Records
from swclip_core.errors import InputError
from swclip_core.geo import WGS84, crs_text, parse_crs, to_wgs84

# The command-line option that names each column, for messages about a column that is missing.
OPTION_NAMES = {
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
        not_found=f"Column {explicit!r} ({OPTION_NAMES[key]}) not found in {source}. "
        f"Available columns: {', '.join(map(str, columns))}.",
    )


def _resolve_columns(
    names: Sequence[str], columns: dict[str, str | None], source: Path
) -> dict[str, str | None]:
    found = {key: _find_column(names, key, columns.get(key), source) for key in OPTION_NAMES}
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
) -> Records:
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
    records = Records(crs_assumed=crs_assumed, source_crs=crs_text(source_crs))
    records.labels, records.ids = labels, ids
    records.images = [clean_text(v) for v in table[found["image"]]]
    records.lat, records.lon = [float(v) for v in lat], [float(v) for v in lon]
    for name in TEXT_FIELDS:
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
) -> Records:
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


def read_csv(
    path: Path, columns: dict[str, str | None], crs: str | None, chunk_rows: int | None = None
) -> Iterator[Records]:
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


def read_vector(
    path: Path,
    columns: dict[str, str | None],
    crs: str | None,
    layer: str | None,
    chunk_rows: int | None = None,
) -> Iterator[Records]:
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
) -> Records:
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

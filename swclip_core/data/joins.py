"""Caption fields and fairness regions by spatial join, for layers that lack them.

- :func:`join_regions`: city or region from a polygon layer (point in polygon);
- :func:`join_streets`: street from the nearest named line or point within a distance in metres;
- :func:`grid_regions` / :func:`assign_grid_regions`: square cells in metres as fairness regions
  when no polygon layer is at hand.

Every join fills a field only where it is missing (a user's own values always win), returns a new
frame (the input is untouched), keeps ``attrs`` (e.g. the reader's ``skipped`` list) and appends
what it did to ``attrs["joins"]``. Distances and cells are computed in a local azimuthal
equidistant projection around the data, never in degrees.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely

from swclip_core.columns import CANDIDATES, NAME_FIELDS, clean_text, find_column, is_missing_text
from swclip_core.data.tables import choose_layer
from swclip_core.errors import InputError
from swclip_core.geo import WGS84

REGION_TARGETS = ("region", "city")

# ONS boundary layers name their areas in fields such as LAD13NM, CTY19NM, MSOA11NM.
_ONS_NAME = re.compile(r"^[a-z]+\d{2}nm$", re.IGNORECASE)
_POLYGONAL = frozenset({"Polygon", "MultiPolygon"})
_STREET_TYPES = frozenset({"Point", "MultiPoint", "LineString", "MultiLineString"})
# Side of the lon/lat tiles that each get their own metric projection: a point is then at most
# ~470 km from its projection centre, where azimuthal equidistant scale errors stay below 0.1 %.
_TILE_DEG = 6.0


def _source_label(source: object) -> str:
    return str(source) if isinstance(source, str | Path) else "the given layer"


def _read_csv_points(path: Path) -> gpd.GeoDataFrame:
    """A CSV place list with lat/lon columns (WGS84 degrees) as points."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"Cannot read {path} as CSV ({error}).") from error
    lat = find_column(table.columns, CANDIDATES["lat"])
    lon = find_column(table.columns, CANDIDATES["lon"])
    if lat is None or lon is None:
        raise InputError(
            f"{path} needs lat and lon columns (WGS84 degrees) to be used as a layer; "
            f"its columns are {', '.join(map(str, table.columns))}."
        )
    y = pd.to_numeric(table[lat], errors="coerce").to_numpy(dtype=float)
    x = pd.to_numeric(table[lon], errors="coerce").to_numpy(dtype=float)
    usable = np.isfinite(x) & np.isfinite(y) & (np.abs(y) <= 90) & (np.abs(x) <= 180)
    skipped = [
        {
            "record": f"{path.name} row {row + 1}",
            "reason": f"lat {table[lat].iloc[row]!r}, lon {table[lon].iloc[row]!r}: missing, "
            "non-numeric or outside -90..90 / -180..180",
        }
        for row in np.flatnonzero(~usable)
    ]
    table = table.drop(columns=[lat, lon])[usable].reset_index(drop=True)
    frame = gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(x[usable], y[usable]), crs=WGS84)
    frame.attrs["skipped"] = skipped
    return frame


def read_layer(path: str | Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """A vector layer (GeoPackage, GeoJSON, Shapefile...) or a CSV of lat/lon places.

    Features without geometry are dropped. Raises :class:`InputError` when the file does not
    exist, cannot be read, has several layers and ``layer`` is not given, has no CRS, or holds no
    feature with a geometry.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"Layer file {path} does not exist.")
    if path.suffix.lower() in {".csv", ".txt"}:
        frame = _read_csv_points(path)
    else:
        chosen = choose_layer(path, layer, hint="name the one to use")
        try:
            frame = pyogrio.read_dataframe(path, layer=chosen)
        except pyogrio.errors.DataSourceError as error:
            raise InputError(f"Cannot read {path} ({error}).") from error
        if not isinstance(frame, gpd.GeoDataFrame):
            raise InputError(f"{path} is a table without geometries; give a vector layer.")
    return check_layer(frame, path)


def check_layer(frame: gpd.GeoDataFrame, source: object) -> gpd.GeoDataFrame:
    """``frame`` without empty geometries, nor points outside the globe; :class:`InputError` when
    it has no CRS or no usable feature. The features left out are listed in
    ``attrs["skipped"]`` (after any the reader listed), by row number, with the reason."""
    label = _source_label(source)
    if frame.crs is None:
        raise InputError(
            f"{label} has no coordinate reference system: set it (QGIS: Layer Properties > "
            "Source > Assigned CRS, then save) and try again."
        )
    geometry = frame.geometry
    usable = (geometry.notna() & ~geometry.is_empty).to_numpy()
    reasons = np.where(usable, "", "no geometry").astype(object)
    points = usable & (geometry.geom_type == "Point").to_numpy()
    if points.any():
        wgs = geometry[points].to_crs(WGS84)
        lat, lon = wgs.y.to_numpy(), wgs.x.to_numpy()
        inside = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        reasons[np.flatnonzero(points)[~inside]] = "point outside -90..90 / -180..180 in WGS84"
        usable[np.flatnonzero(points)[~inside]] = False
    name = Path(source).name if isinstance(source, str | Path) else "layer"
    skipped = list(frame.attrs.get("skipped", []))
    for row in np.flatnonzero(~usable):
        skipped.append({"record": f"{name} row {row + 1}", "reason": reasons[row]})
    frame = frame[usable].reset_index(drop=True)
    if frame.empty:
        shown = "; ".join(f"{s['record']}: {s['reason']}" for s in skipped[:5])
        raise InputError(f"{label} holds no usable feature" + (f" ({shown})." if shown else "."))
    frame.attrs["skipped"] = skipped
    return frame


def _require_types(frame: gpd.GeoDataFrame, allowed: frozenset[str], source: object, what: str):
    kinds = set(frame.geom_type)
    if not kinds <= allowed:
        raise InputError(
            f"{_source_label(source)} holds {', '.join(sorted(kinds - allowed))} geometries, "
            f"but {what}."
        )


def read_polygons(path: str | Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """A polygon layer, validated (exists, has a CRS, holds only polygons) and repaired.

    Invalid polygons (self-intersections are common in published boundaries) are repaired with
    ``shapely.make_valid`` so that point-in-polygon tests are well defined.
    """
    return check_polygons(read_layer(path, layer), path)


def check_polygons(frame: gpd.GeoDataFrame, source: object) -> gpd.GeoDataFrame:
    """:func:`check_layer`, then only polygons allowed; invalid ones repaired."""
    frame = check_layer(frame, source)
    _require_types(frame, _POLYGONAL, source, "region joins and grids need polygons")
    invalid = ~frame.is_valid
    if invalid.any():
        frame = frame.copy()
        repaired = shapely.make_valid(
            frame.geometry[invalid].values, method="structure", keep_collapsed=False
        )
        frame.loc[invalid, frame.geometry.name] = repaired
    return frame


def read_streets(path: str | Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """A street layer: lines or points (any CRS), or a CSV of named places with lat/lon."""
    return _streets(read_layer(path, layer), path)


def _streets(frame: gpd.GeoDataFrame, source: object) -> gpd.GeoDataFrame:
    frame = check_layer(frame, source)
    _require_types(frame, _STREET_TYPES, source, "a street layer holds lines or points")
    return frame


def name_field_of(frame: pd.DataFrame, name_field: str | None, source: object, option: str) -> str:
    """The attribute holding feature names: ``name_field`` if given (must exist), else detected.

    Detection tries name, name_en, ... (case-insensitively), then ONS-style ``XXX99NM`` fields,
    then the first text column. ``option`` names the CLI option that sets it, for the error.
    """
    geometry = frame.geometry.name if isinstance(frame, gpd.GeoDataFrame) else None
    columns = [str(c) for c in frame.columns if c != geometry]
    if name_field is not None:
        if name_field not in columns:
            raise InputError(
                f"Field {name_field!r} ({option}) not found in {_source_label(source)}. "
                f"Fields: {', '.join(columns) or 'none'}."
            )
        return name_field
    name = detected_name_field(frame)
    if name is not None:
        return name
    raise InputError(
        f"{_source_label(source)} has no text field to take names from "
        f"(fields: {', '.join(columns) or 'none'}); name one with {option}."
    )


def detected_name_field(frame: pd.DataFrame) -> str | None:
    """The field :func:`name_field_of` takes names from when none is given (None if none fits):
    name, name_en, ... (case-insensitively), then an ONS-style ``XXX99NM``, then the first text
    field."""
    geometry = frame.geometry.name if isinstance(frame, gpd.GeoDataFrame) else None
    columns = [str(c) for c in frame.columns if c != geometry]
    name = find_column(columns, NAME_FIELDS)
    if name is not None:
        return name
    for column in columns:
        if _ONS_NAME.match(column):
            return column
    for column in columns:
        if frame[column].dtype == object and frame[column].map(_is_text).any():
            return column
    return None


def _is_text(value: object) -> bool:
    return isinstance(value, str) and not is_missing_text(value)


def _missing(values: pd.Series) -> np.ndarray:
    """True where a text field has no usable value (None, NaN, blank, "nan"...)."""
    return values.map(is_missing_text).to_numpy(dtype=bool)


def text_values(values: pd.Series) -> pd.Series:
    """Names as stripped text, None where missing (numbers, e.g. region codes, become text)."""
    return values.map(clean_text).astype(object)


def _check_samples(samples: gpd.GeoDataFrame) -> None:
    if not isinstance(samples, gpd.GeoDataFrame) or samples.crs is None:
        raise InputError(
            "samples must be a GeoDataFrame with a CRS (as read by swclip_core.data.read_samples)."
        )


def local_metric_crs(lat: np.ndarray, lon: np.ndarray) -> pyproj.CRS:
    """An azimuthal equidistant CRS (metres) centred on the points' mean direction.

    The centre is the mean of the unit vectors (correct across the antimeridian), rounded to a
    whole degree so that nearby point sets (a training and a test file) share one projection.
    """
    phi, lam = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
    v = np.array(
        [(np.cos(phi) * np.cos(lam)).sum(), (np.cos(phi) * np.sin(lam)).sum(), np.sin(phi).sum()]
    )
    lat0 = math.degrees(math.atan2(v[2], math.hypot(v[0], v[1]))) if v.any() else 0.0
    lon0 = math.degrees(math.atan2(v[1], v[0])) if v.any() else 0.0
    return pyproj.CRS.from_proj4(
        f"+proj=aeqd +lat_0={round(lat0):d} +lon_0={round(lon0):d} +datum=WGS84 +units=m +no_defs"
    )


def _local_groups(points: gpd.GeoSeries) -> Iterator[tuple[pyproj.CRS, np.ndarray]]:
    """Positions of ``points`` grouped by lon/lat tile, each group with its local metric CRS."""
    wgs = points.to_crs(WGS84)
    lat, lon = wgs.y.to_numpy(), wgs.x.to_numpy()
    keys = np.floor(lat / _TILE_DEG) * 1000 + np.floor(lon / _TILE_DEG)
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        yield local_metric_crs(lat[members], lon[members]), members


def _fill(out: gpd.GeoDataFrame, target: str, positions: np.ndarray, values: np.ndarray) -> None:
    """Write ``values`` into ``target`` at row ``positions`` (works with any index)."""
    column = out.columns.get_loc(target)
    out.iloc[positions, column] = values


def _prepare_target(samples: gpd.GeoDataFrame, target: str) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """A copy of ``samples`` (attrs included) with ``target`` present; mask of missing values."""
    out = samples.copy()
    out.attrs = copy.deepcopy(samples.attrs)
    if target not in out:
        out[target] = pd.Series([None] * len(out), index=out.index, dtype=object)
    else:
        out[target] = out[target].astype(object)
    return out, _missing(out[target])


def _record(out: gpd.GeoDataFrame, entry: dict[str, object]) -> gpd.GeoDataFrame:
    out.attrs["joins"] = [*out.attrs.get("joins", []), entry]
    return out


def join_regions(
    samples: gpd.GeoDataFrame,
    polygons: str | Path | gpd.GeoDataFrame,
    *,
    name_field: str | None = None,
    target: str = "region",
    layer: str | None = None,
) -> gpd.GeoDataFrame:
    """Fill ``target`` ("region" or "city") from the polygon each sample lies in.

    Points are transformed to the polygons' CRS (any CRS on either side). Only records whose
    ``target`` is missing are filled; a point on no polygon keeps None; a point in overlapping
    polygons (or on a shared border) takes the first polygon in layer order. ``name_field`` is
    detected when None (see :func:`name_field_of`). Returns a new frame with ``attrs`` kept and
    ``{"field", "layer", "name_field", "filled", "already_set", "unmatched"}`` appended to
    ``attrs["joins"]``.
    """
    if target not in REGION_TARGETS:
        raise InputError(f"A region join fills 'region' or 'city', not {target!r}.")
    _check_samples(samples)
    if isinstance(polygons, gpd.GeoDataFrame):
        regions = check_polygons(polygons, polygons)
    else:
        regions = read_polygons(polygons, layer)
    field = name_field_of(regions, name_field, polygons, "--region-field")
    out, missing = _prepare_target(samples, target)
    filled = 0
    if missing.any():
        positions = np.flatnonzero(missing)
        points = gpd.GeoDataFrame(
            geometry=out.geometry.iloc[positions].to_crs(regions.crs).to_numpy(),
            index=positions,
            crs=regions.crs,
        )
        names = regions[[field]].assign(_name=text_values(regions[field]))
        hits = gpd.sjoin(
            points, gpd.GeoDataFrame(names, geometry=regions.geometry), predicate="intersects"
        )
        hits = hits[hits["_name"].notna()]
        # Overlaps and shared borders: the first polygon in layer order wins, deterministically.
        hits = hits.sort_values("index_right", kind="stable")
        hits = hits[~hits.index.duplicated(keep="first")]
        _fill(out, target, hits.index.to_numpy(), hits["_name"].to_numpy(dtype=object))
        filled = len(hits)
    return _record(
        out,
        {
            "field": target,
            "layer": _source_label(polygons),
            "name_field": field,
            "filled": filled,
            "already_set": int((~missing).sum()),
            "unmatched": int(missing.sum()) - filled,
        },
    )


def join_streets(
    samples: gpd.GeoDataFrame,
    streets: str | Path | gpd.GeoDataFrame,
    *,
    name_field: str | None = None,
    max_distance_m: float = 50.0,
    layer: str | None = None,
) -> gpd.GeoDataFrame:
    """Fill ``street`` from the nearest named line or point within ``max_distance_m`` metres.

    ``streets`` is a line or point layer in any CRS, or a CSV place list with lat/lon and a name
    column. Distances are measured in a local azimuthal equidistant projection around each
    group of samples (6-degree tiles), so they are metres wherever the data are. Features without
    a name are ignored; ties go to the first feature in layer order. Only records whose street
    is missing are filled; points farther than ``max_distance_m`` from every named feature keep
    None. Returns a new frame, ``attrs`` kept, with the counts appended to ``attrs["joins"]``.
    """
    if not max_distance_m > 0:
        raise InputError(f"The street distance limit must be > 0 metres, got {max_distance_m}.")
    _check_samples(samples)
    if isinstance(streets, gpd.GeoDataFrame):
        layer_frame = _streets(streets, streets)
    else:
        layer_frame = read_streets(streets, layer)
    field = name_field_of(layer_frame, name_field, streets, "--street-field")
    names = text_values(layer_frame[field])
    named = gpd.GeoDataFrame({"_name": names}, geometry=layer_frame.geometry)[names.notna()]
    out, missing = _prepare_target(samples, "street")
    filled = 0
    if missing.any() and not named.empty:
        positions = np.flatnonzero(missing)
        points = out.geometry.iloc[positions]
        for crs, members in _local_groups(points):
            local_points = gpd.GeoDataFrame(
                geometry=points.iloc[members].to_crs(crs).to_numpy(),
                index=positions[members],
                crs=crs,
            )
            local_streets = named.to_crs(crs)
            # A feature near the projection's antipode has no finite coordinates; it is
            # thousands of kilometres away from these points anyway.
            bounds = local_streets.bounds.to_numpy()
            local_streets = local_streets[np.isfinite(bounds).all(axis=1)]
            hits = gpd.sjoin_nearest(
                local_points,
                local_streets,
                max_distance=max_distance_m,
                distance_col="distance_m",
            )
            hits = hits.sort_values(["distance_m", "index_right"], kind="stable")
            hits = hits[~hits.index.duplicated(keep="first")]
            _fill(out, "street", hits.index.to_numpy(), hits["_name"].to_numpy(dtype=object))
            filled += len(hits)
    return _record(
        out,
        {
            "field": "street",
            "layer": _source_label(streets),
            "name_field": field,
            "max_distance_m": float(max_distance_m),
            "filled": filled,
            "already_set": int((~missing).sum()),
            "unmatched": int(missing.sum()) - filled,
        },
    )


def _grid_cells(
    samples: gpd.GeoDataFrame, cell_m: float
) -> tuple[pyproj.CRS, np.ndarray, np.ndarray]:
    """The local CRS and each sample's (row, col) cell; rows count southwards from the centre."""
    if not (isinstance(cell_m, int | float) and math.isfinite(cell_m) and cell_m > 0):
        raise InputError(f"The grid cell size must be a positive number of metres, got {cell_m}.")
    _check_samples(samples)
    wgs = samples.geometry.to_crs(WGS84)
    crs = local_metric_crs(wgs.y.to_numpy(), wgs.x.to_numpy())
    local = wgs.to_crs(crs)
    row = np.floor(-local.y.to_numpy() / cell_m).astype(np.int64)
    col = np.floor(local.x.to_numpy() / cell_m).astype(np.int64)
    return crs, row, col


def _cell_id(row: int, col: int) -> str:
    return f"grid_r{row}_c{col}"


def grid_regions(samples: gpd.GeoDataFrame, *, cell_m: float) -> gpd.GeoDataFrame:
    """Square cells of ``cell_m`` metres holding at least one sample, as EPSG:4326 polygons.

    Cells are laid out in a local azimuthal equidistant projection whose centre is the samples'
    mean rounded to whole degrees, with the origin at that centre: ids (``grid_r<row>_c<col>``,
    rows counted southwards, columns eastwards, both may be negative) are therefore the same for
    any sample set of the same study area. Columns: region, row, col, n (samples in the cell).
    Meant for a study area (up to ~1,000 km across); beyond that cells stop being square.
    """
    crs, row, col = _grid_cells(samples, cell_m)
    cells = pd.DataFrame({"row": row, "col": col}).value_counts(sort=False).reset_index(name="n")
    cells = cells.sort_values(["row", "col"]).reset_index(drop=True)
    x0 = cells["col"].to_numpy() * cell_m
    y1 = -cells["row"].to_numpy() * cell_m
    squares = shapely.box(x0, y1 - cell_m, x0 + cell_m, y1)
    # Densify before reprojecting so the cell edges stay where they are in metres.
    squares = shapely.segmentize(squares, cell_m / 8)
    regions = [_cell_id(r, c) for r, c in zip(cells["row"], cells["col"], strict=True)]
    frame = gpd.GeoDataFrame(
        {"region": regions, "row": cells["row"], "col": cells["col"], "n": cells["n"]},
        geometry=squares,
        crs=crs,
    )
    return frame.to_crs(WGS84)


def assign_grid_regions(samples: gpd.GeoDataFrame, cell_m: float) -> gpd.GeoDataFrame:
    """Fill ``region`` with the :func:`grid_regions` cell id where it is missing."""
    _, row, col = _grid_cells(samples, cell_m)
    out, missing = _prepare_target(samples, "region")
    ids = [_cell_id(r, c) for r, c in zip(row[missing], col[missing], strict=True)]
    _fill(out, "region", np.flatnonzero(missing), np.array(ids, dtype=object))
    return _record(
        out,
        {
            "field": "region",
            "layer": f"grid of {cell_m:g} m cells",
            "name_field": None,
            "filled": int(missing.sum()),
            "already_set": int((~missing).sum()),
            "unmatched": 0,
        },
    )

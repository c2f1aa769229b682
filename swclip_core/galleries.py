"""Where a gallery's locations come from, and gallery files.

A gallery is a list of places (lat, lon, street, city, country and their caption); images are not
needed. Sources: the training run, a set of samples, points every N metres along a line layer
(carrying the street name), a regular grid inside polygons, or a user's point layer. A gallery is
saved as a GeoPackage point layer ``gallery`` (:func:`save_gallery`); its caption embeddings are
cached per model by :func:`swclip_core.retrieval.build_gallery`, so it is embedded once per model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from .captions import DEFAULT_TEMPLATE, CaptionTemplate, captions_for
from .columns import CANDIDATES, find_column
from .data.joins import (
    check_layer,
    check_polygons,
    detected_name_field,
    local_metric_crs,
    name_field_of,
    read_layer,
    read_polygons,
    text_values,
)
from .errors import InputError
from .geo import WGS84
from .io import GPKG_OPTIONS, atomic_path, refuse_foreign_layers

LABEL_COLUMNS = ("street", "city", "country")
GALLERY_COLUMNS = ("lat", "lon", *LABEL_COLUMNS, "caption")
GALLERY_LAYER = "gallery"
# Above this many locations a gallery held in memory is almost certainly a wrong spacing (metres
# vs degrees).
MAX_GALLERY_SIZE = 2_000_000
# A gallery streamed to disk (`swclip gallery --lines`): every 10 m of a country's roads.
MAX_STREAMED_GALLERY_SIZE = 50_000_000
LINE_CHUNK_POINTS = 500_000


def _finish(
    table: pd.DataFrame,
    template: CaptionTemplate,
    source: object,
    skipped: list[dict[str, str]] | None = None,
) -> pd.DataFrame:
    """lat, lon, the label columns (None when absent) and a fresh caption, in that order.

    ``attrs["skipped"]`` lists the source's records left out (``skipped``, from the reader) and
    the rows without coordinates left out here, each named ``gallery ...`` with its reason."""
    located = table[["lat", "lon"]].notna().all(axis=1).to_numpy()
    skipped = list(skipped or []) + [
        {"record": f"{source} row {row + 1}", "reason": "no coordinates"}
        for row in np.flatnonzero(~located)
    ]
    table = table[located].reset_index(drop=True)
    if table.empty:
        raise InputError(f"gallery {source} holds no location with coordinates")
    if len(table) > MAX_GALLERY_SIZE:
        raise InputError(
            f"gallery {source} would hold {len(table):,} locations (limit "
            f"{MAX_GALLERY_SIZE:,}); use a larger spacing (it is in metres)"
        )
    out = pd.DataFrame({"lat": table["lat"].astype(float), "lon": table["lon"].astype(float)})
    for column in LABEL_COLUMNS:
        values = table[column] if column in table else pd.Series([None] * len(table))
        out[column] = text_values(values).to_numpy()
    out = out.assign(caption=captions_for(out, template))
    out.attrs["skipped"] = [
        {"record": f"gallery {s['record']}", "reason": s["reason"]} for s in skipped
    ]
    return out


def _check_spacing(spacing_m: float) -> None:
    if not (isinstance(spacing_m, int | float) and math.isfinite(spacing_m) and spacing_m > 0):
        raise InputError(
            f"The gallery spacing must be a positive number of metres, not {spacing_m}"
        )


def _lat_lon(geometry: gpd.GeoSeries) -> tuple[np.ndarray, np.ndarray]:
    wgs = geometry.to_crs(WGS84)
    return wgs.y.to_numpy(), wgs.x.to_numpy()


def gallery_from_samples(
    samples: pd.DataFrame, template: CaptionTemplate = DEFAULT_TEMPLATE
) -> pd.DataFrame:
    """The distinct locations (coordinates and labels) of a sample table, captioned."""
    if not {"lat", "lon"} <= set(samples.columns):
        raise InputError("samples need lat and lon columns to make a gallery")
    table = pd.DataFrame({c: samples[c] for c in ("lat", "lon", *LABEL_COLUMNS) if c in samples})
    # Two photos of one place give one gallery entry: a repeated caption adds nothing.
    table = table.drop_duplicates().reset_index(drop=True)
    return _finish(table, template, "from samples", samples.attrs.get("skipped"))


def gallery_along_lines(
    lines: str | Path | gpd.GeoDataFrame,
    *,
    spacing_m: float,
    name_field: str | None = None,
    template: CaptionTemplate = DEFAULT_TEMPLATE,
    layer: str | None = None,
) -> pd.DataFrame:
    """Points every ``spacing_m`` metres along each line, carrying its name as ``street``.

    Each part of a (multi)line gets points at 0, s, 2s, ... metres from its start, measured in a
    local azimuthal equidistant projection around the layer (any input CRS); a part shorter than
    the spacing gets one point at its middle. ``name_field`` is detected when None; ``city`` and
    ``country`` attributes are carried when the layer has them. At most
    :data:`MAX_GALLERY_SIZE` points; :func:`gallery_chunks_along_lines` streams larger ones.
    """
    chunks = gallery_chunks_along_lines(
        lines,
        spacing_m=spacing_m,
        name_field=name_field,
        template=template,
        layer=layer,
        max_points=MAX_GALLERY_SIZE,
    )
    return pd.concat(list(chunks), ignore_index=True)


def gallery_chunks_along_lines(
    lines: str | Path | gpd.GeoDataFrame,
    *,
    spacing_m: float,
    name_field: str | None = None,
    template: CaptionTemplate = DEFAULT_TEMPLATE,
    layer: str | None = None,
    max_points: int = MAX_STREAMED_GALLERY_SIZE,
    chunk_points: int = LINE_CHUNK_POINTS,
) -> Iterator[pd.DataFrame]:
    """:func:`gallery_along_lines` in chunks of about ``chunk_points`` places (whole line parts
    each), so that a gallery every few metres of a national road network is written (with
    :func:`save_gallery`) without ever being held in memory."""
    _check_spacing(spacing_m)
    if isinstance(lines, gpd.GeoDataFrame):
        frame = check_layer(lines, lines)
    else:
        frame = read_layer(lines, layer)
    kinds = set(frame.geom_type) - {"LineString", "MultiLineString"}
    if kinds:
        raise InputError(
            f"gallery lines {_label(lines)} hold {', '.join(sorted(kinds))} geometries; "
            "give a line layer (e.g. streets)"
        )
    field = name_field_of(frame, name_field, _label(lines), "--name-field")
    labels = _labels(frame)
    labels["street"] = frame[field]
    parts = frame.geometry.explode(index_parts=False)
    lat, lon = _lat_lon(parts.representative_point())
    crs = local_metric_crs(lat, lon)  # one projection for the whole layer, whatever the chunk
    local = parts.to_crs(crs).to_numpy()
    lengths = shapely.length(local)
    counts = np.where(lengths < spacing_m, 1, np.floor(lengths / spacing_m).astype(np.int64) + 1)
    if counts.sum() > max_points:
        raise InputError(
            f"{counts.sum():,} points along {_label(lines)} (limit {max_points:,}): use a larger "
            "--spacing-m (metres)"
        )
    ends = np.cumsum(counts)
    first = 0
    while first < len(local):
        # whole parts up to about chunk_points places (a part longer than that is one chunk)
        last = max(
            first + 1,
            int(np.searchsorted(ends, ends[first] - counts[first] + chunk_points, "right")),
        )
        part = np.arange(first, last)
        part_of = np.repeat(part, counts[part])
        starts = np.repeat(ends[part] - counts[part], counts[part])
        distance = (np.arange(starts[0], ends[last - 1]) - starts) * float(spacing_m)
        distance = np.where(lengths[part_of] < spacing_m, lengths[part_of] / 2, distance)
        points = gpd.GeoSeries(shapely.line_interpolate_point(local[part_of], distance), crs=crs)
        table = labels.loc[parts.index[part_of]].reset_index(drop=True)
        table["lat"], table["lon"] = _lat_lon(points)
        # the features left out are listed once, with the first chunk
        skipped = frame.attrs.get("skipped") if first == 0 else None
        yield _finish(table, template, _label(lines), skipped)
        first = last


def gallery_grid(
    polygon_layer: str | Path | gpd.GeoDataFrame,
    *,
    spacing_m: float,
    template: CaptionTemplate = DEFAULT_TEMPLATE,
    name_field: str | None = None,
    layer: str | None = None,
) -> pd.DataFrame:
    """Points of a regular ``spacing_m`` grid that fall inside the polygons.

    The grid is square in a local azimuthal equidistant projection around the layer, aligned on
    multiples of the spacing from its centre; a point in several polygons is kept once. The
    polygon's name (``name_field``, detected when None as for :func:`gallery_along_lines`; none
    on a layer without a text field) becomes the ``city`` of its points.
    """
    _check_spacing(spacing_m)
    if isinstance(polygon_layer, gpd.GeoDataFrame):
        polygons = check_polygons(polygon_layer, polygon_layer)
    else:
        polygons = read_polygons(polygon_layer, layer)
    names = None
    # detected when not given, as for --lines; a layer without any text field names no city
    if name_field is not None or detected_name_field(polygons) is not None:
        names = polygons[name_field_of(polygons, name_field, polygon_layer, "--name-field")]
    lat, lon = _lat_lon(polygons.geometry.representative_point())
    local = polygons.geometry.to_crs(local_metric_crs(lat, lon))
    rows = []
    for position, (geometry, bounds) in enumerate(
        zip(local.to_numpy(), local.bounds.to_numpy(), strict=True)
    ):
        first = np.ceil(bounds[:2] / spacing_m)
        last = np.floor(bounds[2:] / spacing_m)
        size = np.prod(np.maximum(last - first + 1, 0))
        if size > MAX_GALLERY_SIZE:
            raise InputError(
                f"a {spacing_m:g} m grid over {_label(polygon_layer)} has over "
                f"{MAX_GALLERY_SIZE:,} points; use a larger --spacing-m (metres)"
            )
        gx, gy = np.meshgrid(
            np.arange(first[0], last[0] + 1) * spacing_m,
            np.arange(first[1], last[1] + 1) * spacing_m,
        )
        inside = shapely.covers(geometry, shapely.points(gx.ravel(), gy.ravel()))
        rows.append(
            pd.DataFrame({"x": gx.ravel()[inside], "y": gy.ravel()[inside], "polygon": position})
        )
    grid = pd.concat(rows, ignore_index=True).drop_duplicates(subset=["x", "y"])
    if grid.empty:
        raise InputError(
            f"no {spacing_m:g} m grid point falls inside {_label(polygon_layer)}; "
            "use a smaller --spacing-m"
        )
    points = gpd.GeoSeries(gpd.points_from_xy(grid["x"], grid["y"]), crs=local.crs)
    city = None if names is None else names.to_numpy()[grid["polygon"]]
    table = pd.DataFrame({"city": city}, index=range(len(grid)))
    table["lat"], table["lon"] = _lat_lon(points)
    return _finish(table, template, _label(polygon_layer), polygons.attrs.get("skipped"))


def gallery_from_points(
    layer: str | Path | gpd.GeoDataFrame,
    template: CaptionTemplate = DEFAULT_TEMPLATE,
    *,
    layer_name: str | None = None,
) -> pd.DataFrame:
    """A gallery from a user's point layer (any CRS) or a CSV with lat/lon columns.

    Labels come from the fields street/addr:street/road, city/town/addr:city/locality and
    country/addr:country (case-insensitively) when present. A GeoPackage saved by
    :func:`save_gallery` is read from its ``gallery`` layer.
    """
    if isinstance(layer, gpd.GeoDataFrame):
        frame = check_layer(layer, layer)
    else:
        path = Path(layer).expanduser()
        if layer_name is None and path.suffix.lower() == ".gpkg" and path.exists():
            names = [str(name) for name, _ in pyogrio.list_layers(path)]
            layer_name = GALLERY_LAYER if GALLERY_LAYER in names else None
        frame = read_layer(path, layer_name)
    kinds = set(frame.geom_type) - {"Point"}
    if kinds:
        lines = (
            "; use --lines for a line layer" if kinds & {"LineString", "MultiLineString"} else ""
        )
        raise InputError(
            f"gallery points: {_label(layer)} holds {', '.join(sorted(kinds))} geometries, not "
            f"points{lines}"
        )
    table = _labels(frame)
    table["lat"], table["lon"] = _lat_lon(frame.geometry)
    return _finish(table, template, _label(layer), frame.attrs.get("skipped"))


def gallery_from_file(path: str | Path, template: CaptionTemplate) -> pd.DataFrame:
    """A gallery from a CSV with lat/lon columns, a point layer or a saved gallery GeoPackage.

    Captions are always rewritten with ``template`` (the model's own), so a gallery saved with
    another template still matches the model it is used with.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"gallery file {path} does not exist")
    return gallery_from_points(path, template)


def save_gallery(table: pd.DataFrame | Iterable[pd.DataFrame], path: str | Path) -> Path:
    """Write a gallery (or its chunks, one after the other) as the EPSG:4326 point layer
    ``gallery`` of a GeoPackage, atomically."""
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise InputError(f"a gallery is saved as a GeoPackage ending in .gpkg, not {path.name}")
    refuse_foreign_layers(path, (GALLERY_LAYER,))
    chunks = [table] if isinstance(table, pd.DataFrame) else table
    append = False
    with atomic_path(path) as tmp:
        for chunk in chunks:
            missing = {"lat", "lon", "caption"} - set(chunk.columns)
            if missing:
                raise InputError(
                    f"a gallery needs columns lat, lon and caption; missing {sorted(missing)}"
                )
            data = pd.DataFrame({c: chunk.get(c) for c in GALLERY_COLUMNS}).reset_index(drop=True)
            for column in (*LABEL_COLUMNS, "caption"):
                data[column] = text_values(data[column])
            geometry = gpd.points_from_xy(data["lon"], data["lat"])
            pyogrio.write_dataframe(
                gpd.GeoDataFrame(data, geometry=geometry, crs=WGS84),
                tmp,
                layer=GALLERY_LAYER,
                driver="GPKG",
                dataset_options=GPKG_OPTIONS,
                append=append,
            )
            append = True
    return path


def load_gallery(path: str | Path) -> pd.DataFrame:
    """A gallery written by :func:`save_gallery`, as saved (captions included)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"gallery file {path} does not exist")
    frame = read_layer(path, GALLERY_LAYER if _has_layer(path, GALLERY_LAYER) else None)
    missing = set(GALLERY_COLUMNS) - set(frame.columns)
    if missing:
        raise InputError(
            f"{path} is not a saved gallery (missing fields {sorted(missing)}); "
            "make one with `swclip gallery`"
        )
    return pd.DataFrame(frame[list(GALLERY_COLUMNS)])


def _has_layer(path: Path, name: str) -> bool:
    try:
        return name in {str(n) for n, _ in pyogrio.list_layers(path)}
    except pyogrio.errors.DataSourceError:
        return False


def _label(source: object) -> str:
    return str(source) if isinstance(source, str | Path) else "the given layer"


def _labels(frame: gpd.GeoDataFrame) -> pd.DataFrame:
    """street/city/country from the layer's own fields (None where it has none)."""
    fields = [column for column in frame.columns if column != frame.geometry.name]
    table = pd.DataFrame(index=frame.index)
    for target in LABEL_COLUMNS:
        column = find_column(fields, CANDIDATES[target])
        table[target] = frame[column].astype(object) if column is not None else None
    return table
